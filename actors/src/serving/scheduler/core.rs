//! The continuous batching core: which sequences run in the next decoding step.
//!
//! Sequences wait in arrival order and join the running set between steps, as long as fewer
//! than `max_running` run and their KV reservation fits the `token_budget`. A sequence reserves
//! `prompt + max_tokens` slots when it joins — the most its KV cache can hold — so a running
//! batch can never outgrow the budget and nothing ever has to be preempted or swapped out. A
//! sequence that ends early (stop token, cancel) returns its whole reservation at once.
//!
//! Admission is first come, first served: when the oldest waiting sequence does not fit, later
//! (smaller) ones wait behind it, so a long prompt is not starved by a stream of short ones.

use std::collections::{BTreeMap, VecDeque};

use flotilla_protocol::openai::FinishReason;
use serde::{Deserialize, Serialize};

use super::SeqId;
use crate::{Error, Result};

/// Continuous batching settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most sequences in one decoding step.
    pub max_running: usize,
    /// KV slots shared by the running sequences: the sum of their `prompt + max_tokens`.
    pub token_budget: u32,
    /// Most sequences waiting to join; an arrival beyond it is refused.
    pub max_waiting: usize,
    /// Events buffered per sequence for its consumer; a sequence whose consumer falls this far
    /// behind sits out decoding steps until it catches up (at least 2: a token and the end).
    pub stream_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_running: 32,
            token_budget: 16_384,
            max_waiting: 256,
            stream_capacity: 64,
        }
    }
}

impl Config {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.max_running == 0 {
            return bad("max_running must be at least 1");
        }
        if self.token_budget == 0 {
            return bad("token_budget must be at least 1");
        }
        if self.max_waiting == 0 {
            return bad("max_waiting must be at least 1");
        }
        if self.stream_capacity < 2 {
            return bad("stream_capacity must be at least 2");
        }
        Ok(())
    }
}

/// A generation to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRequest {
    /// The prompt's token ids (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (at least one).
    pub max_tokens: u32,
    /// Tokens that end the sequence (end of sequence); they are not part of the output.
    pub stop_tokens: Vec<u32>,
}

impl SeqRequest {
    /// KV slots the sequence reserves while it runs.
    pub fn reservation(&self) -> u32 {
        (self.prompt.len() as u32).saturating_add(self.max_tokens)
    }
}

/// Why a sequence was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `max_waiting` sequences already wait.
    #[error("the waiting queue is full")]
    QueueFull,
    /// The sequence needs more KV slots than the whole budget.
    #[error("needs {need} KV slots; the budget is {budget}")]
    TooLarge { need: u32, budget: u32 },
    /// Empty prompt or `max_tokens` of 0.
    #[error("a sequence needs a prompt and max_tokens of at least 1")]
    Empty,
    /// The id is already scheduled.
    #[error("sequence {0} is already scheduled")]
    Duplicate(SeqId),
    /// The sampling settings are out of range (validated requests never are).
    #[error("sampling settings: {0}")]
    Sampling(String),
}

/// How a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: u32,
    /// Tokens generated, a final stop token included.
    pub completion_tokens: u32,
}

/// What one generated token means for its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emitted {
    /// The token to deliver (`None` for a stop token).
    pub token: Option<u32>,
    /// Set when the sequence ended with this token; it has left the running set.
    pub finished: Option<Finish>,
}

/// Where a cancelled sequence was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It had not started: nothing to release.
    Waiting,
    /// It was running: the generator must release its KV cache.
    Running,
    /// Not scheduled (already finished, or never known).
    Unknown,
}

#[derive(Debug)]
struct Running {
    req: SeqRequest,
    generated: u32,
    /// The last token, to feed to the next decoding step; `None` until prefill sampled one.
    last: Option<u32>,
}

/// Occupancy, for metrics and load reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Occupancy {
    pub running: usize,
    pub waiting: usize,
    /// KV slots reserved by running sequences.
    pub reserved: u32,
    /// KV slots they hold now (prompt plus tokens generated so far).
    pub used: u32,
}

/// The scheduling state machine.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    waiting: VecDeque<(SeqId, SeqRequest)>,
    running: BTreeMap<SeqId, Running>,
    reserved: u32,
}

impl Scheduler {
    /// An empty scheduler; `config` should have been validated.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            waiting: VecDeque::new(),
            running: BTreeMap::new(),
            reserved: 0,
        }
    }

    /// Queues a sequence, or says why not.
    pub fn submit(&mut self, id: SeqId, req: SeqRequest) -> std::result::Result<(), Refusal> {
        if req.prompt.is_empty() || req.max_tokens == 0 {
            return Err(Refusal::Empty);
        }
        let need = req.reservation();
        if need > self.config.token_budget {
            return Err(Refusal::TooLarge {
                need,
                budget: self.config.token_budget,
            });
        }
        if self.running.contains_key(&id) || self.waiting.iter().any(|(w, _)| *w == id) {
            return Err(Refusal::Duplicate(id));
        }
        if self.waiting.len() >= self.config.max_waiting {
            return Err(Refusal::QueueFull);
        }
        self.waiting.push_back((id, req));
        Ok(())
    }

    /// Moves waiting sequences into the running set while they fit, oldest first; the caller
    /// prefills each returned sequence (its prompt is [`Self::prompt`]) and reports the sampled
    /// token with [`Self::on_token`].
    pub fn admit(&mut self) -> Vec<SeqId> {
        let mut admitted = Vec::new();
        while let Some((_, front)) = self.waiting.front() {
            let need = front.reservation();
            let fits = self.running.len() < self.config.max_running
                && self.reserved.saturating_add(need) <= self.config.token_budget;
            if !fits {
                break;
            }
            let Some((id, req)) = self.waiting.pop_front() else {
                break;
            };
            self.reserved += need;
            self.running.insert(
                id,
                Running {
                    req,
                    generated: 0,
                    last: None,
                },
            );
            admitted.push(id);
        }
        admitted
    }

    /// The prompt of a running sequence.
    pub fn prompt(&self, id: SeqId) -> Option<&[u32]> {
        self.running.get(&id).map(|r| r.req.prompt.as_slice())
    }

    /// The next decoding step: `(sequence, last token)` for every running sequence that has
    /// been prefilled and for which `ready` holds (its consumer has room), in id order.
    pub fn decode_batch(&self, mut ready: impl FnMut(SeqId) -> bool) -> Vec<(SeqId, u32)> {
        self.running
            .iter()
            .filter_map(|(id, r)| r.last.map(|t| (*id, t)))
            .filter(|(id, _)| ready(*id))
            .collect()
    }

    /// Records the token sampled for `id` (after its prefill or a decoding step). `None` if the
    /// sequence is not running (it was cancelled meanwhile).
    pub fn on_token(&mut self, id: SeqId, token: u32) -> Option<Emitted> {
        let r = self.running.get_mut(&id)?;
        r.generated += 1;
        r.last = Some(token);
        let stop = r.req.stop_tokens.contains(&token);
        let reason = if stop {
            Some(FinishReason::Stop)
        } else if r.generated >= r.req.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        let finished = reason.map(|reason| Finish {
            reason,
            prompt_tokens: r.req.prompt.len() as u32,
            completion_tokens: r.generated,
        });
        if finished.is_some() {
            self.remove_running(id);
        }
        Some(Emitted {
            token: (!stop).then_some(token),
            finished,
        })
    }

    /// Removes a sequence at once, returning its reservation: the next [`Self::admit`] can use
    /// the room.
    pub fn cancel(&mut self, id: SeqId) -> Cancelled {
        if self.remove_running(id) {
            return Cancelled::Running;
        }
        if let Some(pos) = self.waiting.iter().position(|(w, _)| *w == id) {
            self.waiting.remove(pos);
            return Cancelled::Waiting;
        }
        Cancelled::Unknown
    }

    fn remove_running(&mut self, id: SeqId) -> bool {
        match self.running.remove(&id) {
            Some(r) => {
                self.reserved -= r.req.reservation();
                true
            }
            None => false,
        }
    }

    /// Whether nothing runs or waits.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Every scheduled sequence, running then waiting.
    pub fn ids(&self) -> Vec<SeqId> {
        let mut ids: Vec<SeqId> = self.running.keys().copied().collect();
        ids.extend(self.waiting.iter().map(|(id, _)| *id));
        ids
    }

    /// Current occupancy.
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            running: self.running.len(),
            waiting: self.waiting.len(),
            reserved: self.reserved,
            used: self
                .running
                .values()
                .map(|r| r.req.prompt.len() as u32 + r.generated)
                .sum(),
        }
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
