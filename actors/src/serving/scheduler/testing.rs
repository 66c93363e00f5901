//! A tiny deterministic generator for tests: a bigram model (the next token's logits depend
//! only on the last token) with a KV "cache" that counts slots per sequence and checks the
//! engine's calls (no decode before prefill, no double prefill, release of live sequences).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::core::{Finish, Scheduler, SeqRequest};
use super::sampler::{Sampler, SamplingParams};
use super::{Generator, SeqId};

/// What the generator saw, shared with the test.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// KV slots per live sequence.
    pub live: BTreeMap<SeqId, u32>,
    pub max_live_tokens: u32,
    pub max_live_seqs: usize,
    /// The sequences of every decoding step.
    pub decode_log: Vec<Vec<SeqId>>,
    pub released: Vec<SeqId>,
    /// Calls that broke the contract.
    pub violations: Vec<String>,
}

pub(crate) struct Bigram {
    pub vocab: u32,
    pub probe: Arc<Mutex<Probe>>,
    /// Prefill fails for prompts that start with this token.
    pub poison: Option<u32>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Bigram {
    pub fn new(vocab: u32) -> (Self, Arc<Mutex<Probe>>) {
        let probe = Arc::new(Mutex::new(Probe::default()));
        (
            Self {
                vocab,
                probe: probe.clone(),
                poison: None,
            },
            probe,
        )
    }

    /// The logits after `prev`: fixed pseudo-random values in [-2, 2).
    pub fn logits(&self, prev: u32) -> Vec<f32> {
        (0..self.vocab)
            .map(|j| {
                let h = splitmix(u64::from(prev) * 1_000_003 + u64::from(j));
                (h >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
            })
            .collect()
    }
}

fn note(p: &mut Probe) {
    p.max_live_tokens = p.max_live_tokens.max(p.live.values().sum());
    p.max_live_seqs = p.max_live_seqs.max(p.live.len());
}

impl Generator for Bigram {
    fn prefill(&mut self, seq: SeqId, prompt: &[u32]) -> Result<Vec<f32>, String> {
        if prompt.first() == self.poison.as_ref() {
            return Err("poisoned prompt".into());
        }
        let mut p = self.probe.lock().unwrap();
        if p.live.insert(seq, prompt.len() as u32).is_some() {
            p.violations.push(format!("prefill of live {seq}"));
        }
        note(&mut p);
        Ok(self.logits(*prompt.last().ok_or("empty prompt")?))
    }

    fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, String> {
        let mut p = self.probe.lock().unwrap();
        p.decode_log.push(batch.iter().map(|(s, _)| *s).collect());
        let mut out = Vec::new();
        for (seq, tok) in batch {
            match p.live.get_mut(seq) {
                Some(n) => *n += 1,
                None => p.violations.push(format!("decode of {seq} before prefill")),
            }
            out.push(self.logits(*tok));
        }
        note(&mut p);
        Ok(out)
    }

    fn release(&mut self, seq: SeqId) {
        let mut p = self.probe.lock().unwrap();
        if p.live.remove(&seq).is_none() {
            p.violations.push(format!("release of unknown {seq}"));
        }
        p.released.push(seq);
    }
}

/// A sequence arriving before step `at`.
pub(crate) struct Arrival {
    pub at: usize,
    pub id: SeqId,
    pub req: SeqRequest,
    pub sampling: SamplingParams,
}

/// Runs `core` and `gen` as the engine does, step by step, until every arrival has finished;
/// `each_step` sees the scheduler after every step. Returns every sequence's tokens and end.
pub(crate) fn drive(
    core: &mut Scheduler,
    gen: &mut Bigram,
    mut arrivals: Vec<Arrival>,
    mut each_step: impl FnMut(usize, &mut Scheduler),
) -> BTreeMap<SeqId, (Vec<u32>, Finish)> {
    arrivals.sort_by_key(|a| a.at);
    let mut arrivals = std::collections::VecDeque::from(arrivals);
    let mut samplers: BTreeMap<SeqId, Sampler> = BTreeMap::new();
    let mut tokens: BTreeMap<SeqId, Vec<u32>> = BTreeMap::new();
    let mut done = BTreeMap::new();
    let mut step = 0;
    while !(arrivals.is_empty() && core.is_idle()) {
        while arrivals.front().is_some_and(|a| a.at <= step) {
            let a = arrivals.pop_front().unwrap();
            core.submit(a.id, a.req).unwrap();
            samplers.insert(a.id, a.sampling.sampler().unwrap());
        }
        let admitted = core.admit();
        let decodes = core.decode_batch(|_| true);
        let mut sampled = Vec::new();
        for id in admitted {
            let prompt = core.prompt(id).unwrap().to_vec();
            let logits = gen.prefill(id, &prompt).unwrap();
            sampled.push((id, samplers.get_mut(&id).unwrap().sample(&logits).unwrap()));
        }
        if !decodes.is_empty() {
            let logits = gen.decode(&decodes).unwrap();
            for ((id, _), l) in decodes.iter().zip(logits) {
                sampled.push((*id, samplers.get_mut(id).unwrap().sample(&l).unwrap()));
            }
        }
        for (id, tok) in sampled {
            let e = core.on_token(id, tok).unwrap();
            if let Some(t) = e.token {
                tokens.entry(id).or_default().push(t);
            }
            if let Some(f) = e.finished {
                gen.release(id);
                done.insert(id, (tokens.remove(&id).unwrap_or_default(), f));
            }
        }
        each_step(step, core);
        // Sequences the step callback cancelled leave the model too, as the engine does it.
        let scheduled: std::collections::BTreeSet<SeqId> = core.ids().into_iter().collect();
        let live: Vec<SeqId> = gen.probe.lock().unwrap().live.keys().copied().collect();
        for id in live.into_iter().filter(|id| !scheduled.contains(id)) {
            gen.release(id);
        }
        step += 1;
        assert!(step < 100_000, "the schedule does not finish");
    }
    done
}
