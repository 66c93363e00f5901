//! The training spec (TOML) as a job carries it: parsing and validation never panic; a spec
//! that parses writes back to TOML that parses to the same spec. Also the `[train]` section of
//! a job spec as the node turns it into that TOML (any TOML table, re-serialised), and the
//! `name@version` references inside specs.
#![no_main]
use flotilla_protocol::training::{spec::Versioned, TrainSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = Versioned::parse(text) {
        assert_eq!(Versioned::parse(&v.to_string()), Ok(v));
    }
    if let Ok(spec) = toml::from_str::<TrainSpec>(text) {
        check(&spec);
    }
    // node/src/jobs/spec.rs: the `[train]` section is held as JSON, written back as TOML, and
    // that text is what a train job carries.
    if let Ok(section) = toml::from_str::<serde_json::Value>(text) {
        // The node refuses what the TOML writer cannot write before it writes it.
        if flotilla_protocol::toml_text::check_quote_runs(&section).is_err() {
            return;
        }
        if let Ok(spec_toml) = toml::to_string(&section) {
            if let Ok(spec) = toml::from_str::<TrainSpec>(&spec_toml) {
                check(&spec);
            }
        }
    }
});

fn check(spec: &TrainSpec) {
    let valid = spec.validate().is_ok();
    let _ = spec.cluster.consistency();
    if valid {
        let _ = spec.output_model();
    }
    // Written back only when the node would write it (see `protocol::toml_text`).
    let writable = serde_json::to_value(spec)
        .is_ok_and(|v| flotilla_protocol::toml_text::check_quote_runs(&v).is_ok());
    if !writable {
        return;
    }
    if let Ok(written) = toml::to_string(spec) {
        let back: TrainSpec = toml::from_str(&written)
            .unwrap_or_else(|e| panic!("a written spec does not parse: {e}\n{written}"));
        // Compared as written: NaN floats make `==` false.
        assert_eq!(toml::to_string(&back).ok(), Some(written));
        assert_eq!(back.validate().is_ok(), valid);
    }
}
