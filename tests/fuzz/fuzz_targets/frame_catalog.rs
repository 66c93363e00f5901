//! Catalog anti-entropy frames (digests, pushes, sync replies), requests and responses.
#![no_main]
use flotilla_protocol::services::catalog::{Request, Response, MAX_MESSAGE_BYTES, SERVICE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_fuzz::service::<Request, Response, MAX_MESSAGE_BYTES>(SERVICE, data);
});
