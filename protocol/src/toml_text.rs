//! Guarding what is written back as TOML.
//!
//! The `toml` writer (toml_write 0.1) counts a run of quote characters in a string in a `u8`:
//! a run longer than 255 overflows, which panics in builds with overflow checks and picks a
//! wrong quoting otherwise. Values that came from a client are checked with
//! [`check_quote_runs`] before they are written as TOML, and refused with a clear error.

/// The longest run of `"` or `'` characters a string written as TOML may hold.
pub const MAX_QUOTE_RUN: usize = 128;

/// The longest run of one quote character (`"` or `'`) in `s`.
pub fn longest_quote_run(s: &str) -> usize {
    let (mut longest, mut run, mut last) = (0, 0, 0u8);
    for &b in s.as_bytes() {
        if (b == b'"' || b == b'\'') && b == last {
            run += 1;
        } else if b == b'"' || b == b'\'' {
            run = 1;
        } else {
            run = 0;
        }
        last = b;
        longest = longest.max(run);
    }
    longest
}

/// Refuses `value` if any of its strings (keys included) has a run of more than
/// [`MAX_QUOTE_RUN`] quote characters; the error names where.
pub fn check_quote_runs(value: &serde_json::Value) -> Result<(), String> {
    fn walk(v: &serde_json::Value, at: &str) -> Result<(), String> {
        let check = |s: &str, at: &str| {
            if longest_quote_run(s) > MAX_QUOTE_RUN {
                Err(format!(
                    "{at}: a string with more than {MAX_QUOTE_RUN} quote characters in a row"
                ))
            } else {
                Ok(())
            }
        };
        match v {
            serde_json::Value::String(s) => check(s, at),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| walk(item, &format!("{at}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().try_for_each(|(k, item)| {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                check(k, &here)?;
                walk(item, &here)
            }),
            _ => Ok(()),
        }
    }
    walk(value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quote_runs_are_refused_with_their_place() {
        assert_eq!(longest_quote_run(r#"a""b'''c"'"#), 3);
        let ok = serde_json::json!({"name": "x".repeat(1000), "q": "\"".repeat(MAX_QUOTE_RUN)});
        assert!(check_quote_runs(&ok).is_ok());
        let bad = serde_json::json!({"model": {"tags": ["fine", "\"".repeat(300)]}});
        let e = check_quote_runs(&bad).unwrap_err();
        assert!(e.starts_with("model.tags[1]:"), "{e}");
        let bad_key = serde_json::json!({"'".repeat(300): 1});
        assert!(check_quote_runs(&bad_key).is_err());
    }

    /// What the guard is for: toml writes every string the guard lets through.
    #[test]
    fn toml_writes_what_the_guard_accepts() {
        let v =
            serde_json::json!({"el": "\"".repeat(MAX_QUOTE_RUN), "s": "'".repeat(MAX_QUOTE_RUN)});
        assert!(check_quote_runs(&v).is_ok());
        let text = toml::to_string(&v).unwrap();
        let back: serde_json::Value = toml::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
