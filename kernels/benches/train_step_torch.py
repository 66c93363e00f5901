"""PyTorch baseline for benches/train_step.rs: the same encoder classifier and batch shape.

Model: token + learned position embeddings, embedding LayerNorm, post-LN encoder layers
(nn.TransformerEncoderLayer, GELU, no dropout), mean pooling over the sequence, linear head.
Step: forward, cross-entropy, backward, AdamW update, zero_grad. Prints one JSON line.

    python train_step_torch.py --threads 2 --steps 30
"""

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=8)
    a = ap.parse_args()
    try:
        import torch
        from torch import nn
    except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
        print(json.dumps({"error": f"torch not installed or not importable: {e}"}))
        return 3

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(a.vocab, a.width)
            self.pos = nn.Embedding(a.seq, a.width)
            self.ln = nn.LayerNorm(a.width)
            layer = nn.TransformerEncoderLayer(
                a.width, a.heads, a.ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=False
            )
            self.enc = nn.TransformerEncoder(layer, a.layers, enable_nested_tensor=False)
            self.head = nn.Linear(a.width, a.classes)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1])
            x = self.ln(self.tok(ids) + self.pos(pos))
            x = self.enc(x)
            return self.head(x.mean(dim=1))

    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    labels = torch.randint(0, a.classes, (a.batch,))
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(ids), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt * 1000.0)
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "steps": a.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": float(loss.detach()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
