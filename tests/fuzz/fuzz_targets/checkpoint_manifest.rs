//! A checkpoint's `manifest.json` as the loader reads it: never a panic; an accepted manifest
//! lists only file names inside the checkpoint, and writes back to JSON that parses to itself.
#![no_main]
use flotilla_fuzz::checkpoint::{parse_manifest, MANIFEST_FILE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = parse_manifest(data) else {
        return;
    };
    for name in m.files.keys() {
        assert!(
            !name.is_empty()
                && !name.contains('/')
                && !name.contains('\\')
                && !name.starts_with('.')
                && name != MANIFEST_FILE,
            "accepted file name {name:?}"
        );
    }
    let json = serde_json::to_vec_pretty(&m).expect("a parsed manifest serialises");
    let back = parse_manifest(&json).expect("a written manifest parses");
    assert_eq!(
        serde_json::to_value(&back).expect("serialises"),
        serde_json::to_value(&m).expect("serialises")
    );
});
