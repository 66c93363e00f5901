//! Training messages: the training service's frames, and its request and response bodies as
//! they travel inside actor calls (decoded with the actors service's codec and cap).
#![no_main]
use flotilla_protocol::services::{actors, training};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_fuzz::service::<training::Request, training::Response, { training::MAX_FRAME_BYTES }>(
        training::SERVICE,
        data,
    );
    // `flotilla_actors::remote::decode` is the codec's decode under the actors cap.
    let via_actor = flotilla_actors::remote::decode::<training::RequestBody>(data).is_ok();
    assert_eq!(
        via_actor,
        flotilla_fuzz::body::<training::RequestBody, { actors::MAX_FRAME_BYTES }>(
            actors::SERVICE,
            data
        )
    );
    let via_actor = flotilla_actors::remote::decode::<training::ResponseBody>(data).is_ok();
    assert_eq!(
        via_actor,
        flotilla_fuzz::body::<training::ResponseBody, { actors::MAX_FRAME_BYTES }>(
            actors::SERVICE,
            data
        )
    );
});
