use super::*;
use crate::serving::scheduler::core::Scheduler;
use crate::serving::scheduler::testing::{drive, Arrival, Bigram};

const VOCAB: u32 = 32;
const LIMIT: Duration = Duration::from_secs(10);

fn config(max_running: usize, token_budget: u32, max_waiting: usize) -> Config {
    Config {
        max_running,
        token_budget,
        max_waiting,
        stream_capacity: 4,
    }
}

fn req(first: u32, prompt_len: u32, max_tokens: u32) -> SeqRequest {
    SeqRequest {
        prompt: (0..prompt_len).map(|i| (first + i) % VOCAB).collect(),
        max_tokens,
        stop_tokens: vec![0],
    }
}

fn sampling(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_p: 0.9,
        top_k: 8,
        seed,
    }
}

async fn wait_until(mut pred: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition not reached within the deadline");
}

#[tokio::test]
async fn concurrent_streams_match_one_at_a_time_generation() {
    let reqs: Vec<(SeqRequest, SamplingParams)> = (0..8u32)
        .map(|i| {
            (
                req(1 + i * 3, 2 + i % 4, 6 + i * 2),
                sampling(u64::from(i) + 40),
            )
        })
        .collect();
    // Reference: the core alone, one sequence at a time.
    let (mut gen, _) = Bigram::new(VOCAB);
    let mut core = Scheduler::new(config(1, 1000, 64));
    let arrivals = reqs
        .iter()
        .enumerate()
        .map(|(i, (r, s))| Arrival {
            at: 0,
            id: i as u64,
            req: r.clone(),
            sampling: *s,
        })
        .collect();
    let reference = drive(&mut core, &mut gen, arrivals, |_, _| {});

    let (gen, probe) = Bigram::new(VOCAB);
    let (h, _join) = Handle::spawn(gen, config(8, 1000, 64), LIMIT).unwrap();
    let mut tasks = Vec::new();
    for (r, s) in reqs {
        let stream = h.generate(r, s).await.unwrap();
        tasks.push(tokio::spawn(stream.collect(LIMIT)));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(LIMIT, t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, reference[&(i as u64)], "sequence {i}");
    }
    assert!(
        h.stats().widest_step.load(Ordering::Relaxed) >= 2,
        "steps were shared"
    );
    wait_until(|| probe.lock().unwrap().live.is_empty()).await;
    assert!(probe.lock().unwrap().violations.is_empty());
}

#[tokio::test]
async fn dropping_a_stream_frees_its_slot_for_the_next_sequence() {
    let (gen, probe) = Bigram::new(VOCAB);
    // Room for one sequence of 5 + 20 at a time.
    let (h, _join) = Handle::spawn(gen, config(4, 30, 8), LIMIT).unwrap();
    let mut a = req(1, 5, 20);
    a.stop_tokens.clear();
    let a = h.generate(a, SamplingParams::greedy()).await.unwrap();
    let mut b_req = req(2, 5, 20);
    b_req.stop_tokens.clear();
    let b = h.generate(b_req, SamplingParams::greedy()).await.unwrap();
    // A's consumer reads nothing: A fills its channel and pauses, still holding the budget.
    let s = h.stats();
    wait_until(|| {
        s.running.load(Ordering::Relaxed) == 1
            && s.waiting.load(Ordering::Relaxed) == 1
            && s.tokens.load(Ordering::Relaxed) >= 3
    })
    .await;
    let a_id = a.id;
    drop(a);
    let (tokens, finish) = b.collect(LIMIT).await.unwrap();
    assert_eq!(
        (tokens.len(), finish.reason),
        (20, flotilla_protocol::openai::FinishReason::Length)
    );
    let p = probe.lock().unwrap();
    assert_eq!(
        p.released.first(),
        Some(&a_id),
        "A was released before B finished"
    );
    assert_eq!(s.cancelled.load(Ordering::Relaxed), 1);
    assert!(p.max_live_tokens <= 30);
    assert!(p.violations.is_empty(), "{:?}", p.violations);
}

#[tokio::test]
async fn a_slow_consumer_does_not_stall_the_others() {
    let (gen, _) = Bigram::new(VOCAB);
    let (h, _join) = Handle::spawn(gen, config(4, 1000, 8), LIMIT).unwrap();
    let mut slow = req(1, 3, 200);
    slow.stop_tokens.clear();
    let _slow = h.generate(slow, SamplingParams::greedy()).await.unwrap();
    let mut fast = req(5, 3, 50);
    fast.stop_tokens.clear();
    let fast = h.generate(fast, SamplingParams::greedy()).await.unwrap();
    let (tokens, _) = fast.collect(LIMIT).await.unwrap();
    assert_eq!(tokens.len(), 50);
    // The slow sequence is still held, paused after filling its small channel.
    assert_eq!(h.stats().running.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn explicit_cancel_refusals_and_failures() {
    let (mut gen, _) = Bigram::new(VOCAB);
    gen.poison = Some(31);
    let (h, _join) = Handle::spawn(gen, config(1, 30, 1), LIMIT).unwrap();
    let mut long = req(1, 5, 20);
    long.stop_tokens.clear();
    let mut a = h
        .generate(long.clone(), SamplingParams::greedy())
        .await
        .unwrap();
    assert!(matches!(a.next().await, Some(StreamEvent::Token(_))));
    let _b = h
        .generate(long.clone(), SamplingParams::greedy())
        .await
        .unwrap();
    // One waits already: the queue of one is full.
    let c = h.generate(long.clone(), SamplingParams::greedy()).await;
    assert!(matches!(c, Err(ServeError::Overloaded { .. })), "{c:?}");
    let too_big = h.generate(req(1, 20, 20), SamplingParams::greedy()).await;
    assert_eq!(
        too_big.unwrap_err(),
        ServeError::TooLarge {
            need: 40,
            budget: 30
        }
    );

    h.cancel(a.id).await.unwrap();
    // A's stream ends without `Done`: the engine dropped it.
    let rest = tokio::time::timeout(LIMIT, async {
        let mut n = 0;
        while let Some(e) = a.next().await {
            assert!(matches!(e, StreamEvent::Token(_)), "{e:?}");
            n += 1;
        }
        n
    })
    .await
    .unwrap();
    assert!(rest < 20);
    drop(_b);
    // A poisoned prompt fails its own sequence only.
    let bad = h
        .generate(req(31, 2, 5), SamplingParams::greedy())
        .await
        .unwrap();
    assert!(
        matches!(bad.collect(LIMIT).await, Err(ServeError::Model(m)) if m.contains("poisoned"))
    );
    let ok = h
        .generate(req(3, 2, 5), SamplingParams::greedy())
        .await
        .unwrap();
    ok.collect(LIMIT).await.unwrap();
}
