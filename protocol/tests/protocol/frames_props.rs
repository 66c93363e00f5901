//! Property tests of every service's frames as the node reads them (length prefix, cap, body),
//! and of the training service's messages, which had no generated round trip:
//!
//! - any value the generators make round-trips through its service's codec;
//! - whatever a decoder accepts (from random or mutated bytes) encodes back to a body that
//!   decodes and encodes to the same bytes (compared as bytes: training values may be NaN);
//! - a body framed with its exact length reads as the body alone, and a frame announcing more
//!   than the cap is refused as too large whatever follows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_protocol::codec::{self, LEN_PREFIX_BYTES};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::training::{
    self, CheckpointCommand, PushOutcome, RequestBody, ResponseBody, SavedShard, StepNorm,
};
use flotilla_protocol::services::{actors, catalog, control, data, jobs, membership, serving};
use flotilla_protocol::training::{GradPayload, Precision, WorkerId, WorkerReport};
use flotilla_protocol::{Error, RequestId};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

/// The body checks: accepted bytes re-encode idempotently and no larger than they came.
fn body_holds<T: Serialize + DeserializeOwned, const CAP: usize>(
    service: &'static str,
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    if let Ok(v) = codec::decode::<T, CAP>(service, bytes) {
        let once = codec::encode::<T, CAP>(service, &v).unwrap();
        prop_assert!(once.len() <= bytes.len());
        let again: T = codec::decode::<T, CAP>(service, &once).unwrap();
        prop_assert_eq!(codec::encode::<T, CAP>(service, &again).unwrap(), once);
    }
    Ok(())
}

/// The frame checks: exact framing agrees with the body; over the cap is refused.
fn frame_holds<T: Serialize + DeserializeOwned, const CAP: usize>(
    service: &'static str,
    bytes: &[u8],
    over_by: u64,
) -> Result<(), TestCaseError> {
    let mut framed = (bytes.len() as u64).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    prop_assert_eq!(
        codec::decode_frame::<T, CAP>(service, &framed).is_ok(),
        codec::decode::<T, CAP>(service, bytes).is_ok()
    );
    let announced = (CAP as u64 + 1).saturating_add(over_by);
    let mut huge = announced.to_be_bytes().to_vec();
    huge.extend_from_slice(bytes);
    let refused = matches!(
        codec::decode_frame::<T, CAP>(service, &huge),
        Err(Error::FrameTooLarge { len, .. }) if len == announced
    );
    prop_assert!(
        refused,
        "{} bytes announced over the cap {}",
        announced,
        CAP
    );
    // A prefix that lies about the length (one byte more than follows) is refused.
    if let Some(n) = (bytes.len() as u64).checked_add(1) {
        let mut short = n.to_be_bytes().to_vec();
        short.extend_from_slice(bytes);
        prop_assert!(codec::decode_frame::<T, CAP>(service, &short).is_err());
    }
    Ok(())
}

macro_rules! service_holds {
    ($svc:ident, $cap:expr, $bytes:expr, $over:expr) => {{
        body_holds::<$svc::Request, { $cap }>($svc::SERVICE, $bytes)?;
        body_holds::<$svc::Response, { $cap }>($svc::SERVICE, $bytes)?;
        frame_holds::<$svc::Request, { $cap }>($svc::SERVICE, $bytes, $over)?;
        frame_holds::<$svc::Response, { $cap }>($svc::SERVICE, $bytes, $over)?;
    }};
}

fn all_services_hold(bytes: &[u8], over: u64) -> Result<(), TestCaseError> {
    service_holds!(control, control::MAX_FRAME_BYTES, bytes, over);
    service_holds!(catalog, catalog::MAX_MESSAGE_BYTES, bytes, over);
    service_holds!(jobs, jobs::MAX_FRAME_BYTES, bytes, over);
    service_holds!(actors, actors::MAX_FRAME_BYTES, bytes, over);
    service_holds!(data, data::MAX_FRAME_BYTES, bytes, over);
    service_holds!(serving, serving::MAX_FRAME_BYTES, bytes, over);
    service_holds!(training, training::MAX_FRAME_BYTES, bytes, over);
    body_holds::<membership::Message, { membership::MAX_MESSAGE_BYTES }>(
        membership::SERVICE,
        bytes,
    )?;
    body_holds::<catalog::Message, { catalog::MAX_MESSAGE_BYTES }>(catalog::SERVICE, bytes)?;
    // Training bodies travel inside actor calls, under the actors cap.
    body_holds::<RequestBody, { actors::MAX_FRAME_BYTES }>(actors::SERVICE, bytes)?;
    body_holds::<ResponseBody, { actors::MAX_FRAME_BYTES }>(actors::SERVICE, bytes)?;
    Ok(())
}

fn worker() -> impl Strategy<Value = WorkerId> {
    any::<u32>().prop_map(WorkerId)
}

/// Any f32, NaN and infinities included: the codec carries what it is given.
fn floats(max: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(any::<f32>(), 0..max)
}

fn grad() -> impl Strategy<Value = GradPayload> {
    (
        prop::collection::vec(-1.0e4f32..1.0e4, 0..64),
        prop_oneof![
            Just(Precision::F32),
            Just(Precision::F16),
            Just(Precision::Bf16)
        ],
    )
        .prop_map(|(v, p)| GradPayload::encode(&v, p))
}

fn request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        any::<u32>().prop_map(|shard| RequestBody::Peek { shard }),
        (any::<u32>(), worker()).prop_map(|(shard, worker)| RequestBody::Join { shard, worker }),
        (any::<u32>(), worker(), any::<bool>()).prop_map(|(shard, worker, drop_pending)| {
            RequestBody::Leave {
                shard,
                worker,
                drop_pending,
            }
        }),
        (
            any::<u32>(),
            worker(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(shard, worker, after, offset, len)| RequestBody::Pull {
                shard,
                worker,
                after,
                offset,
                len,
            }),
        (any::<u32>(), worker(), any::<u64>(), any::<u32>(), grad()).prop_map(
            |(shard, worker, step, samples, grad)| RequestBody::Push {
                shard,
                worker,
                step,
                samples,
                grad,
            }
        ),
        (
            worker(),
            any::<u64>(),
            -1.0e3f32..1.0e3,
            0.0f32..1.0e3,
            0.0f32..1.0,
            any::<u32>(),
            0.0f64..1.0e6
        )
            .prop_map(|(worker, step, loss, grad_norm, lr, samples, compute_ms)| {
                RequestBody::Report(WorkerReport {
                    worker,
                    step,
                    loss,
                    grad_norm,
                    lr,
                    samples,
                    compute_ms,
                })
            }),
        (any::<u32>(), any::<u64>(), -1.0e6f32..1.0e6)
            .prop_map(|(shard, step, norm)| RequestBody::Finish { shard, step, norm }),
        (any::<u32>(), any::<u64>(), "[0-9a-f]{64}", any::<bool>()).prop_map(
            |(shard, step, blake3, save)| RequestBody::Checkpoint {
                shard,
                command: if save {
                    CheckpointCommand::Save { step }
                } else {
                    CheckpointCommand::Restore { step, blake3 }
                },
            }
        ),
    ]
}

fn response_body() -> impl Strategy<Value = ResponseBody> {
    let norm = prop_oneof![
        Just(StepNorm::NotClipped),
        (0.0f32..1.0e6).prop_map(StepNorm::Applied),
        (0.0f64..1.0e12).prop_map(StepNorm::Needed),
    ];
    let outcome = prop_oneof![
        Just(PushOutcome::Pending),
        (any::<u64>(), any::<u64>())
            .prop_map(|(version, staleness)| PushOutcome::Applied { version, staleness }),
        any::<u32>().prop_map(|consecutive| PushOutcome::Skipped { consecutive }),
    ];
    prop_oneof![
        Just(ResponseBody::Ack),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(-1.0e6f32..1.0e6, 0..64),
            norm
        )
            .prop_map(|(version, offset, values, norm)| ResponseBody::Params {
                version,
                offset,
                values,
                norm,
            }),
        outcome.prop_map(ResponseBody::Pushed),
        (any::<u32>(), any::<u64>(), "[0-9a-f]{64}", any::<u64>()).prop_map(
            |(shard, version, blake3, bytes)| ResponseBody::Saved(SavedShard {
                shard,
                version,
                blake3,
                bytes,
            })
        ),
        any::<u64>().prop_map(|version| ResponseBody::Restored { version }),
    ]
}

fn training_request() -> impl Strategy<Value = training::Request> {
    (any::<u64>(), "[a-z0-9-]{1,24}", request_body()).prop_map(|(id, job, body)| {
        training::Request {
            id: RequestId(id),
            job: JobId(job),
            body,
        }
    })
}

fn training_response() -> impl Strategy<Value = training::Response> {
    let err = (
        prop_oneof![
            Just(control::RemoteErrorKind::BadRequest),
            Just(control::RemoteErrorKind::NotFound),
            Just(control::RemoteErrorKind::Forbidden),
        ],
        ".{0,40}",
    )
        .prop_map(|(kind, message)| control::RemoteError { kind, message });
    (
        any::<u64>(),
        prop_oneof![response_body().prop_map(Ok), err.prop_map(Err)],
    )
        .prop_map(|(id, body)| training::Response {
            id: RequestId(id),
            body,
        })
}

/// A valid encoding changed by one of: a flipped byte, a cut tail, an inserted byte.
fn mutate(mut b: Vec<u8>, at: usize, byte: u8, how: u8) -> Vec<u8> {
    if b.is_empty() {
        return vec![byte];
    }
    let i = at % b.len();
    match how % 3 {
        0 => b[i] ^= byte | 1,
        1 => b.truncate(i),
        _ => b.insert(i, byte),
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn training_requests_round_trip(r in training_request()) {
        let bytes = training::encode_request(&r).unwrap();
        prop_assert_eq!(training::decode_request(&bytes).unwrap(), r.clone());
        let frame = codec::encode_frame::<_, { training::MAX_FRAME_BYTES }>(training::SERVICE, &r).unwrap();
        prop_assert_eq!(frame.len(), LEN_PREFIX_BYTES + bytes.len());
        prop_assert_eq!(
            codec::decode_frame::<training::Request, { training::MAX_FRAME_BYTES }>(training::SERVICE, &frame).unwrap(),
            r.clone()
        );
        // The body alone, as an actor call carries it.
        let payload = codec::encode::<_, { actors::MAX_FRAME_BYTES }>(actors::SERVICE, &r.body).unwrap();
        prop_assert_eq!(
            codec::decode::<RequestBody, { actors::MAX_FRAME_BYTES }>(actors::SERVICE, &payload).unwrap(),
            r.body
        );
    }

    #[test]
    fn training_responses_round_trip(r in training_response()) {
        let bytes = training::encode_response(&r).unwrap();
        prop_assert_eq!(training::decode_response(&bytes).unwrap(), r);
    }

    #[test]
    fn non_finite_training_values_travel_bit_for_bit(values in floats(32), version in any::<u64>()) {
        let r = training::Response {
            id: RequestId(1),
            body: Ok(ResponseBody::Params { version, offset: 0, values: values.clone(), norm: StepNorm::NotClipped }),
        };
        let back = training::decode_response(&training::encode_response(&r).unwrap()).unwrap();
        let Ok(ResponseBody::Params { values: got, .. }) = back.body else {
            return Err(TestCaseError::fail("not params"));
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&got), bits(&values));
    }

    #[test]
    fn every_service_survives_random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        over in any::<u64>(),
    ) {
        all_services_hold(&bytes, over)?;
    }

    #[test]
    fn every_service_survives_mutated_training_frames(
        req in training_request(), resp in training_response(),
        at in any::<usize>(), byte in any::<u8>(), how in any::<u8>(), over in any::<u64>(),
    ) {
        for valid in [training::encode_request(&req).unwrap(), training::encode_response(&resp).unwrap()] {
            all_services_hold(&mutate(valid, at, byte, how), over)?;
        }
    }
}
