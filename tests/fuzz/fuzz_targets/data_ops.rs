//! A data job's operation chain (JSON), as a worker parses it and runs it on records: never a
//! panic; a chain that parses writes back to JSON that parses to the same chain.
#![no_main]
use flotilla_actors::data::job::worker::parse_ops;
use flotilla_actors::data::ops::apply_chain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ops) = parse_ops(text) else {
        return;
    };
    let json = serde_json::to_string(&ops).expect("a parsed chain serialises");
    let back = parse_ops(&json).expect("a written chain parses");
    assert_eq!(serde_json::to_string(&back).expect("serialises"), json);
    for op in &ops {
        let _ = op.name();
        let _ = op.parameters();
    }
    let _ = apply_chain(flotilla_fuzz::sample_records(), &ops);
});
