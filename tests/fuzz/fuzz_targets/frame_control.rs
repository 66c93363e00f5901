//! Control service frames (ping, echo, node info, leave), requests and responses.
#![no_main]
use flotilla_protocol::services::control::{Request, Response, MAX_FRAME_BYTES, SERVICE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_fuzz::service::<Request, Response, MAX_FRAME_BYTES>(SERVICE, data);
});
