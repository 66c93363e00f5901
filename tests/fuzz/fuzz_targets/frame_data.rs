//! The data service's frames, requests and responses, as the node's codec reads them.
#![no_main]
use flotilla_protocol::services::data::{Request, Response, MAX_FRAME_BYTES, SERVICE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_fuzz::service::<Request, Response, MAX_FRAME_BYTES>(SERVICE, data);
});
