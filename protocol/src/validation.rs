//! Field-level validation errors shared by every record and spec.
//!
//! A record from a peer or a spec from a user is checked field by field; every problem is
//! reported with the path of the field it concerns (`resources.cores`, `lineage.parent_version`),
//! so the HTTP layer can answer with a 400 body that lists them and the catalog can count what it
//! drops and why.

use serde::{Deserialize, Serialize};

/// Longest name accepted for datasets, models, aliases, deployments and jobs.
pub const MAX_NAME_LEN: usize = 128;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path of the field, dotted for nested fields and with `[i]` for list items.
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one value; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{} invalid field(s): {}", .0.len(), join(.0))]
pub struct FieldErrors(pub Vec<FieldError>);

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl FieldErrors {
    /// Whether `field` is among the fields named.
    pub fn mentions(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

/// Collects field errors while a value is checked.
#[derive(Debug, Default)]
pub struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem with `field` when `ok` is false.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.push(field, message);
        }
    }

    /// Checks a name: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9._-]`, starting with a
    /// letter or digit. Names become parts of catalog keys and store keys, so `/` and control
    /// characters are kept out.
    pub fn name(&mut self, field: &str, value: &str) {
        if let Err(m) = name_problem(value) {
            self.push(field, m);
        }
    }

    /// Checks a blake3 digest written as 64 lowercase hex characters.
    pub fn blake3_hex(&mut self, field: &str, value: &str) {
        let ok = value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        self.check(
            ok,
            field,
            "must be a blake3 digest: 64 lowercase hex characters",
        );
    }

    /// Checks a free-text value: at most `max` bytes and no control characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.push(
                field,
                format!("must be at most {max} bytes, is {}", value.len()),
            );
        } else if value.chars().any(char::is_control) {
            self.push(field, "must not contain control characters");
        }
    }

    /// Moves the errors of a nested value in, prefixing their fields with `prefix.`.
    pub fn nested(&mut self, prefix: &str, inner: Checker) {
        for e in inner.errors {
            self.errors.push(FieldError {
                field: format!("{prefix}.{}", e.field),
                message: e.message,
            });
        }
    }

    /// `Ok(())` when nothing was recorded.
    pub fn finish(self) -> Result<(), FieldErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(FieldErrors(self.errors))
        }
    }
}

/// Why `value` is not a valid name, if it is not.
pub fn name_problem(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(format!(
            "must be 1 to {MAX_NAME_LEN} characters, is {}",
            value.len()
        ));
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !value.bytes().all(valid) {
        return Err("may contain only letters, digits, '.', '_' and '-'".to_string());
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_problem("gpt-2.small_v1").is_ok());
        assert!(name_problem("").is_err());
        assert!(name_problem("-x").is_err());
        assert!(name_problem("a/b").is_err());
        assert!(name_problem(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn nested_errors_carry_their_path() {
        let mut inner = Checker::new();
        inner.blake3_hex("hash", "xyz");
        let mut outer = Checker::new();
        outer.name("name", "ok");
        outer.nested("shards[3]", inner);
        let e = outer.finish().unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.mentions("shards[3].hash"), "{e}");
        assert!(Checker::new().finish().is_ok());
    }

    #[test]
    fn blake3_hex_is_exact() {
        let mut c = Checker::new();
        c.blake3_hex("a", &"0f".repeat(32));
        assert!(c.finish().is_ok());
        let mut c = Checker::new();
        c.blake3_hex("a", &"0F".repeat(32));
        c.blake3_hex("b", &"0f".repeat(31));
        assert_eq!(c.finish().unwrap_err().0.len(), 2);
    }
}
