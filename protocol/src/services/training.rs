//! The training service: workers pull parameter ranges from and push gradients to parameter
//! server shards, report per-step metrics to the job's coordinator, and the coordinator asks
//! shards to join or drop workers, save checkpoints and restore from them.
//!
//! One frame carries at most [`MAX_RANGE_VALUES`] parameters or gradient values (64 MiB of f32):
//! pulls ask for a range of a shard; a push carries one shard's whole range, so a job needs at
//! least `parameters / MAX_RANGE_VALUES` shards.
//!
//! These messages are tunnelled: each is the payload of a `/flotilla/actors/1` call to the actor
//! that hosts the shard, so they are authenticated and capped as actor calls are.

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;
use crate::jobs::JobId;
use crate::services::control::RemoteError;
use crate::training::{GradPayload, WorkerId, WorkerReport};

/// Name used in errors and metrics. The training service has no libp2p protocol of its own:
/// its messages travel as the payloads of `/flotilla/actors/1` calls to the hosted shard or
/// coordinator actor ([`crate::services::actors`]), whose frame cap is this service's.
pub const SERVICE: &str = "training";
/// Most parameter or gradient values in one message.
pub const MAX_RANGE_VALUES: usize = 16 * 1024 * 1024;
/// Largest request or response: a full range of f32 values and a little framing.
pub const MAX_FRAME_BYTES: usize = MAX_RANGE_VALUES * 4 + 64 * 1024;

/// What a shard did with a pushed gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Sync mode: held for the step's barrier; applied once every active worker has pushed.
    Pending,
    /// Applied; the shard is now at `version`, and the gradient was `staleness` versions old.
    Applied { version: u64, staleness: u64 },
    /// Not applied because it (or, in sync mode, another gradient of the step) was not finite;
    /// `consecutive` non-finite steps in a row so far.
    Skipped { consecutive: u32 },
    /// Sync mode: the step it was computed for is already over; the gradient is discarded
    /// and its samples should be served again.
    Stale { current: u64 },
}

/// Sync mode with clipping by global norm: what a pull says about the norm. The shards clip
/// the step's mean gradient, and its norm spans every shard, so a trainer gathers each shard's
/// partial squared norm and sends back the global norm (`RequestBody::Finish`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StepNorm {
    /// The shard does not clip (async, ssp, or no `clip_norm`).
    NotClipped,
    /// The global norm of the step that produced the pulled version.
    Applied(f32),
    /// The step at the pulled version waits for the global norm; this is this shard's part of
    /// the squared norm. No values come with it: send the norm and pull again.
    Needed(f64),
}

/// A shard's checkpoint blob, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedShard {
    pub shard: u32,
    /// The shard's version (steps) in the blob.
    pub version: u64,
    /// blake3 of the blob, 64 lowercase hex characters.
    pub blake3: String,
    pub bytes: u64,
}

/// Checkpoint commands from a job's coordinator to a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointCommand {
    /// Snapshot the shard (parameters, optimizer state, worker clocks) as checkpoint `step`.
    Save { step: u64 },
    /// Replace the shard's state with the blob of checkpoint `step`, which must hash to
    /// `blake3`.
    Restore { step: u64, blake3: String },
}

/// A training request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub job: JobId,
    pub body: RequestBody,
}

/// What a training request asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Count `worker` among the shard's active workers from the current step on.
    Join { shard: u32, worker: WorkerId },
    /// Stop waiting for `worker`; with `drop_pending` its gradient for the unfinished step is
    /// discarded (its samples were not acknowledged and will be served again).
    Leave {
        shard: u32,
        worker: WorkerId,
        drop_pending: bool,
    },
    /// Values `offset..offset + len` of the shard's range, once the shard is past version
    /// `after` (sync) or the worker is within the staleness bound (ssp).
    Pull {
        shard: u32,
        worker: WorkerId,
        after: Option<u64>,
        offset: u64,
        len: u64,
    },
    /// A gradient for the shard's whole range, computed at parameter version `step` from
    /// `samples` samples.
    Push {
        shard: u32,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
    },
    /// A worker's metrics for one step, to the coordinator.
    Report(WorkerReport),
    /// Sync with clipping: the global gradient norm of step `step`, so the shard applies the
    /// step's clipped mean gradient (a no-op when another trainer sent it first).
    Finish { shard: u32, step: u64, norm: f32 },
    /// A checkpoint command for one shard.
    Checkpoint {
        shard: u32,
        command: CheckpointCommand,
    },
    /// The shard's whole range as it stands, with its version, for a reader that is not one
    /// of the workers (evaluation during the run): answered at once, counted nowhere.
    Peek { shard: u32 },
}

/// A training response; `id` echoes the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub body: std::result::Result<ResponseBody, RemoteError>,
}

/// The answer to a [`RequestBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Join, leave and report were applied.
    Ack,
    /// The values asked for, at shard version `version`.
    Params {
        version: u64,
        offset: u64,
        #[serde(with = "crate::floats")]
        values: Vec<f32>,
        norm: StepNorm,
    },
    Pushed(PushOutcome),
    Saved(SavedShard),
    /// The shard now holds checkpoint state at `version`.
    Restored {
        version: u64,
    },
}

request_response_codec!();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::Precision;
    use crate::Error;

    fn req(body: RequestBody) -> Request {
        Request {
            id: RequestId(9),
            job: JobId("job-1".into()),
            body,
        }
    }

    #[test]
    fn every_request_round_trips() {
        let w = WorkerId(2);
        let grad: Vec<f32> = (0..100).map(|i| i as f32 * 0.25 - 3.0).collect();
        let bodies = vec![
            RequestBody::Peek { shard: 2 },
            RequestBody::Join {
                shard: 1,
                worker: w,
            },
            RequestBody::Leave {
                shard: 1,
                worker: w,
                drop_pending: true,
            },
            RequestBody::Pull {
                shard: 0,
                worker: w,
                after: Some(41),
                offset: 10,
                len: 1000,
            },
            RequestBody::Push {
                shard: 0,
                worker: w,
                step: 41,
                samples: 12,
                grad: GradPayload::encode(&grad, Precision::F32),
            },
            RequestBody::Push {
                shard: 0,
                worker: w,
                step: 41,
                samples: 12,
                grad: GradPayload::encode(&grad, Precision::Bf16),
            },
            RequestBody::Report(WorkerReport {
                worker: w,
                step: 3,
                loss: 0.5,
                grad_norm: 1.5,
                lr: 1e-3,
                samples: 12,
                compute_ms: 8.5,
            }),
            RequestBody::Checkpoint {
                shard: 1,
                command: CheckpointCommand::Restore {
                    step: 200,
                    blake3: "ab".repeat(32),
                },
            },
        ];
        for b in bodies {
            let r = req(b);
            assert_eq!(decode_request(&encode_request(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let bodies = vec![
            Ok(ResponseBody::Ack),
            Ok(ResponseBody::Params {
                version: 7,
                offset: 0,
                values: vec![1.0, -2.5, 3.25],
                norm: StepNorm::Applied(0.5),
            }),
            Ok(ResponseBody::Pushed(PushOutcome::Applied {
                version: 8,
                staleness: 1,
            })),
            Ok(ResponseBody::Pushed(PushOutcome::Stale { current: 9 })),
            Ok(ResponseBody::Saved(SavedShard {
                shard: 1,
                version: 200,
                blake3: "0f".repeat(32),
                bytes: 4096,
            })),
            Ok(ResponseBody::Restored { version: 200 }),
            Err(RemoteError {
                kind: crate::services::control::RemoteErrorKind::Unavailable,
                message: "job failed".into(),
            }),
        ];
        for body in bodies {
            let r = Response {
                id: RequestId(4),
                body,
            };
            assert_eq!(decode_response(&encode_response(&r).unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn half_pushes_are_half_the_bytes() {
        let grad = vec![0.123f32; 10_000];
        let size = |p: Precision| {
            encode_request(&req(RequestBody::Push {
                shard: 0,
                worker: WorkerId(0),
                step: 0,
                samples: 1,
                grad: GradPayload::encode(&grad, p),
            }))
            .unwrap()
            .len()
        };
        let (f32_len, f16_len) = (size(Precision::F32), size(Precision::F16));
        assert!(f16_len * 2 <= f32_len + 64, "{f16_len} vs {f32_len}");
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let big = req(RequestBody::Push {
            shard: 0,
            worker: WorkerId(0),
            step: 0,
            samples: 1,
            grad: GradPayload::F32(vec![0.0; MAX_RANGE_VALUES + 20_000]),
        });
        assert!(encode_request(&big).is_err());
        let mut frame = ((MAX_FRAME_BYTES + 1) as u64).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 8]);
        assert!(matches!(
            crate::codec::decode_frame::<Request, MAX_FRAME_BYTES>(SERVICE, &frame),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(decode_request(&[0xff; 32]).is_err());
        let mut ok = encode_request(&req(RequestBody::Join {
            shard: 0,
            worker: WorkerId(1),
        }))
        .unwrap();
        ok.push(0);
        assert!(matches!(
            decode_request(&ok),
            Err(Error::TrailingBytes { extra: 1, .. })
        ));
    }
}
