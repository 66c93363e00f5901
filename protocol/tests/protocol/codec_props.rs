//! Property tests: every protocol message round-trips through the codec, and decoding arbitrary
//! bytes never panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_protocol::services::{control, membership};
use flotilla_protocol::{GpuState, GpuSummary, NodeId, NodeInfo, RequestId};
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    "[1-9A-HJ-NP-Za-km-z]{10,52}".prop_map(NodeId)
}

fn gpus() -> impl Strategy<Value = GpuState> {
    prop_oneof![
        Just(GpuState::NoCudaDriver),
        ".{0,40}".prop_map(GpuState::DriverError),
        prop::collection::vec(
            (".{0,30}", any::<u64>(), any::<(u32, u32)>()).prop_map(
                |(name, memory_bytes, compute_capability)| GpuSummary {
                    name,
                    memory_bytes,
                    compute_capability
                }
            ),
            0..4
        )
        .prop_map(GpuState::Gpus),
    ]
}

prop_compose! {
    fn node_info()(
        id in node_id(), incarnation in any::<u64>(), seq in any::<u64>(),
        listen_addrs in prop::collection::vec("/ip4/[0-9.]{7,15}/tcp/[0-9]{1,5}", 0..5),
        api_addr in proptest::option::of("[0-9.:]{9,21}"),
        version in "[0-9.]{1,10}", cores in any::<u32>(), ram_bytes in any::<u64>(), gpus in gpus(),
        compute_score in any::<f64>().prop_filter("finite", |x| x.is_finite()),
        load in any::<f64>().prop_filter("finite", |x| x.is_finite()),
        ready_replicas in prop::collection::vec("[a-z]{1,8}/[0-9a-f]{64}", 0..3),
        unhealthy in prop::option::of("[a-z ]{0,40}"),
    ) -> NodeInfo {
        NodeInfo { id, incarnation, seq, listen_addrs, api_addr, version, cores, ram_bytes, gpus, compute_score, load, ready_replicas, unhealthy }
    }
}

fn membership_msg() -> impl Strategy<Value = membership::Message> {
    prop_oneof![
        node_info().prop_map(membership::Message::Heartbeat),
        (node_id(), any::<u64>())
            .prop_map(|(id, incarnation)| membership::Message::Leaving { id, incarnation }),
    ]
}

fn control_request() -> impl Strategy<Value = control::Request> {
    let body = prop_oneof![
        Just(control::RequestBody::Ping),
        Just(control::RequestBody::GetNodeInfo),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(control::RequestBody::Echo),
        (node_id(), any::<u64>())
            .prop_map(|(id, incarnation)| control::RequestBody::Leaving { id, incarnation }),
    ];
    (any::<u64>(), body).prop_map(|(id, body)| control::Request {
        id: RequestId(id),
        body,
    })
}

fn control_response() -> impl Strategy<Value = control::Response> {
    let ok = prop_oneof![
        Just(control::ResponseBody::Pong),
        Just(control::ResponseBody::LeaveAck),
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(control::ResponseBody::Echo),
        node_info().prop_map(|i| control::ResponseBody::NodeInfo(Box::new(i))),
    ];
    let err = (
        prop_oneof![
            Just(control::RemoteErrorKind::BadRequest),
            Just(control::RemoteErrorKind::NotFound),
            Just(control::RemoteErrorKind::Unavailable),
            Just(control::RemoteErrorKind::Internal)
        ],
        ".{0,60}",
    )
        .prop_map(|(kind, message)| control::RemoteError { kind, message });
    let body = prop_oneof![ok.prop_map(Ok), err.prop_map(Err)];
    (any::<u64>(), body).prop_map(|(id, body)| control::Response {
        id: RequestId(id),
        body,
    })
}

proptest! {
    #[test]
    fn membership_messages_round_trip(m in membership_msg()) {
        let bytes = membership::encode(&m).unwrap();
        prop_assert_eq!(membership::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn control_requests_round_trip(r in control_request()) {
        let bytes = control::encode_request(&r).unwrap();
        prop_assert_eq!(control::decode_request(&bytes).unwrap(), r);
    }

    #[test]
    fn control_responses_round_trip(r in control_response()) {
        let bytes = control::encode_response(&r).unwrap();
        prop_assert_eq!(control::decode_response(&bytes).unwrap(), r);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = membership::decode(&bytes);
        let _ = control::decode_request(&bytes);
        let _ = control::decode_response(&bytes);
        let _ = flotilla_protocol::codec::decode_frame::<control::Request, { control::MAX_FRAME_BYTES }>("control", &bytes);
    }

    #[test]
    fn truncated_frames_are_errors(r in control_request(), cut in 0usize..64) {
        let bytes = control::encode_request(&r).unwrap();
        if cut < bytes.len() {
            prop_assert!(control::decode_request(&bytes[..bytes.len() - cut - 1]).is_err());
        }
    }
}
