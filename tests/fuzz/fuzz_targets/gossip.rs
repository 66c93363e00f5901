//! Gossip payloads: membership heartbeats and leave notices, catalog deltas; and the catalog's
//! stored entries and delta batches, which travel inside them.
#![no_main]
use flotilla_protocol::services::{catalog, membership};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use flotilla_fuzz::body;
    if body::<membership::Message, { membership::MAX_MESSAGE_BYTES }>(membership::SERVICE, data) {
        // What the node does with an accepted heartbeat before anything else.
        let m = membership::decode(data).expect("accepted above");
        let _ = m.sender();
    }
    body::<catalog::Message, { catalog::MAX_MESSAGE_BYTES }>(catalog::SERVICE, data);
    body::<catalog::Delta, { catalog::MAX_MESSAGE_BYTES }>(catalog::SERVICE, data);
    if body::<flotilla_protocol::catalog::Entry, { catalog::MAX_ENTRY_BYTES }>(
        catalog::SERVICE,
        data,
    ) {
        let _ = catalog::decode_entry(data).expect("accepted above");
    }
});
