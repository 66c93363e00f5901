"""Drives a Flotilla cluster with the official `openai` client.

Usage: openai_client.py BASE_URL [BASE_URL ...]   (each like http://127.0.0.1:PORT/v1)
Environment: CHAT_MODEL, EMBED_MODEL name the deployments. Exits non-zero on any mismatch and
prints one JSON line of results on success.
"""

import json
import os
import sys

import openai

chat_model = os.environ["CHAT_MODEL"]
embed_model = os.environ["EMBED_MODEL"]
results = {}

for i, base in enumerate(sys.argv[1:]):
    client = openai.OpenAI(base_url=base, api_key="unused-without-a-token", max_retries=0, timeout=120)

    ids = sorted(m.id for m in client.models.list())
    assert chat_model in ids and embed_model in ids, ids

    messages = [{"role": "user", "content": "the quick brown fox"}]
    plain = client.chat.completions.create(model=chat_model, messages=messages, seed=7, max_tokens=24)
    text = plain.choices[0].message.content
    assert plain.object == "chat.completion"
    assert plain.usage.completion_tokens >= 1, plain.usage

    stream = client.chat.completions.create(
        model=chat_model, messages=messages, seed=7, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                deltas.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    streamed = "".join(deltas)
    assert streamed == text, (streamed, text)
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens, usage
    assert finish in ("stop", "length"), finish

    comp = client.completions.create(model=chat_model, prompt="hello", max_tokens=16, temperature=0)
    ctext = comp.choices[0].text
    cstream = client.completions.create(model=chat_model, prompt="hello", max_tokens=16, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in cstream if c.choices) == ctext

    emb = client.embeddings.create(model=embed_model, input=["a cat sat on the mat", "flotilla serves models"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384, len(emb.data)
    one = client.embeddings.create(model=embed_model, input="a cat sat on the mat")
    a, b = emb.data[0].embedding, one.data[0].embedding
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("unknown model was answered")
    except openai.NotFoundError:
        pass
    try:
        client.chat.completions.create(model=chat_model, messages=messages, max_tokens=100000)
        raise AssertionError("max_tokens beyond the context was answered")
    except openai.BadRequestError:
        pass

    results[base] = {"chat": text, "completion": ctext}

texts = {r["chat"] for r in results.values()}
assert len(texts) == 1, f"nodes disagree for a fixed seed: {texts}"
print(json.dumps(results))
