//! Incremental parsing of JSONL, CSV and plain text into [`Record`]s, and CSV export.
//!
//! [`Ingest`] is an iterator over a byte stream that holds one line or row at a time, so an
//! upload of any size parses in constant memory per record. The text (and optional label)
//! field of the source becomes the record's `text` (and `label`) field; the record id is the
//! 0-based line (JSONL, text) or data row (CSV) it came from, so skipped lines do not shift the
//! ids of the lines after them.
//!
//! Malformed JSON lines and CSV rows are counted with their line numbers (the first
//! [`MAX_REPORTED`]) under [`OnError::Skip`], or stop the parse under [`OnError::Fail`].
//! Bytes that are not UTF-8 always stop it, naming the byte offset and line: guessing an
//! encoding would silently change the data.

use std::io::{BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::record::{Record, LABEL, TEXT};

/// Most malformed lines reported by line number; the rest are only counted.
pub const MAX_REPORTED: usize = 100;

/// The format of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object a line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One record per non-empty line.
    Text,
}

/// What to do with a malformed line or row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it, report its line and go on.
    #[default]
    Skip,
    /// Stop with an error naming the line.
    Fail,
}

/// How to read an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub format: Format,
    /// The source field (JSON key or CSV column) holding the text; ignored for plain text.
    pub text_field: String,
    /// The source field holding the label, if any.
    pub label_field: Option<String>,
    pub on_error: OnError,
    /// Longest line or CSV row accepted; a longer one is malformed. Lines are read at most
    /// this far into memory (the rest is skipped unread); the CSV reader holds the row.
    pub max_record_bytes: usize,
}

/// Default [`Options::max_record_bytes`]: 16 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

impl Options {
    /// Options for `format` with text field `text` and no label.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            text_field: TEXT.to_string(),
            label_field: None,
            on_error: OnError::Skip,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// One malformed line or row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// 1-based line number where the line or row starts.
    pub line: u64,
    pub reason: String,
}

/// What a parse saw besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    pub records: u64,
    pub malformed: u64,
    /// The first [`MAX_REPORTED`] malformed lines.
    pub errors: Vec<LineError>,
}

enum Source<R: Read> {
    Lines {
        input: BufReader<R>,
        buf: Vec<u8>,
        line: u64,
        offset: u64,
        json: bool,
    },
    Csv {
        input: csv::Reader<R>,
        row: csv::ByteRecord,
        index: u64,
        text_col: usize,
        label_col: Option<usize>,
        width: usize,
    },
}

/// An iterator of records parsed incrementally from a byte stream.
pub struct Ingest<R: Read> {
    source: Source<R>,
    opts: Options,
    report: IngestReport,
    done: bool,
}

impl<R: Read> std::fmt::Debug for Ingest<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("opts", &self.opts)
            .field("report", &self.report)
            .finish()
    }
}

impl<R: Read> Ingest<R> {
    /// Starts parsing `input`. For CSV this reads the header and checks that the named fields
    /// are columns of it.
    pub fn new(input: R, opts: Options) -> Result<Self> {
        let source = match opts.format {
            Format::Jsonl | Format::Text => Source::Lines {
                input: BufReader::with_capacity(64 * 1024, input),
                buf: Vec::new(),
                line: 0,
                offset: 0,
                json: opts.format == Format::Jsonl,
            },
            Format::Csv => {
                let mut input = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(true)
                    .from_reader(input);
                let header = input.byte_headers().map_err(csv_error)?.clone();
                let names = header
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        std::str::from_utf8(h)
                            .map(str::to_string)
                            .map_err(|e| Error::NotUtf8 {
                                line: 1,
                                byte_offset: header.position().map_or(0, |p| p.byte())
                                    + header.range(i).map_or(0, |r| r.start as u64)
                                    + e.valid_up_to() as u64,
                            })
                    })
                    .collect::<Result<Vec<String>>>()?;
                let col = |field: &str| {
                    names
                        .iter()
                        .position(|n| n == field)
                        .ok_or_else(|| Error::MissingField {
                            field: field.to_string(),
                            at: Some("the CSV header".to_string()),
                            available: names.clone(),
                        })
                };
                let text_col = col(&opts.text_field)?;
                let label_col = opts.label_field.as_deref().map(col).transpose()?;
                Source::Csv {
                    input,
                    row: csv::ByteRecord::new(),
                    index: 0,
                    text_col,
                    label_col,
                    width: names.len(),
                }
            }
        };
        Ok(Self {
            source,
            opts,
            report: IngestReport::default(),
            done: false,
        })
    }

    /// What the parse has seen so far (complete once the iterator is exhausted).
    pub fn report(&self) -> &IngestReport {
        &self.report
    }

    /// Counts a malformed line; under [`OnError::Fail`] turns it into the error to return.
    fn malformed(&mut self, line: u64, reason: String) -> Option<Error> {
        if self.opts.on_error == OnError::Fail {
            return Some(Error::Malformed {
                format: match self.opts.format {
                    Format::Jsonl => "JSON line",
                    Format::Csv => "CSV row",
                    Format::Text => "text line",
                },
                line,
                reason,
            });
        }
        self.report.malformed += 1;
        if self.report.errors.len() < MAX_REPORTED {
            self.report.errors.push(LineError { line, reason });
        }
        None
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            // Each arm yields the record, a malformed line to count, or the end.
            let step = match &mut self.source {
                Source::Lines {
                    input,
                    buf,
                    line,
                    offset,
                    json,
                } => {
                    buf.clear();
                    let max = self.opts.max_record_bytes;
                    let io = |e: std::io::Error| Error::Io(e.to_string());
                    let n = (&mut *input)
                        .take(max as u64 + 1)
                        .read_until(b'\n', buf)
                        .map_err(io)?;
                    if n == 0 {
                        return Ok(None);
                    }
                    let start = *offset;
                    *offset += n as u64;
                    *line += 1;
                    let id = *line - 1;
                    if n > max && buf.last() != Some(&b'\n') {
                        // Skip the rest of the line without holding it.
                        loop {
                            let avail = input.fill_buf().map_err(io)?;
                            if avail.is_empty() {
                                break;
                            }
                            let (used, done) = match avail.iter().position(|&b| b == b'\n') {
                                Some(p) => (p + 1, true),
                                None => (avail.len(), false),
                            };
                            input.consume(used);
                            *offset += used as u64;
                            if done {
                                break;
                            }
                        }
                        Err((*line, format!("longer than max_record_bytes ({max})")))
                    } else {
                        let text = std::str::from_utf8(buf).map_err(|e| Error::NotUtf8 {
                            line: *line,
                            byte_offset: start + e.valid_up_to() as u64,
                        })?;
                        let text = text.trim_end_matches(['\n', '\r']);
                        if text.trim().is_empty() {
                            continue;
                        }
                        if *json {
                            let parsed = parse_json_line(
                                text,
                                &self.opts.text_field,
                                self.opts.label_field.as_deref(),
                            );
                            match parsed {
                                Ok(fields) => Ok(Record { id, fields }),
                                Err(JsonProblem::Missing(field, available))
                                    if self.report.records == 0 && self.report.malformed == 0 =>
                                {
                                    // The first non-empty line decides whether the field exists
                                    // at all: a misnamed field is a usage error, not a thousand
                                    // bad lines.
                                    return Err(Error::MissingField {
                                        field,
                                        at: Some(format!("line {line}")),
                                        available,
                                    });
                                }
                                Err(p) => Err((*line, p.to_string())),
                            }
                        } else {
                            Ok(Record::text(id, text))
                        }
                    }
                }
                Source::Csv {
                    input,
                    row,
                    index,
                    text_col,
                    label_col,
                    width,
                } => {
                    if !input.read_byte_record(row).map_err(csv_error)? {
                        return Ok(None);
                    }
                    let id = *index;
                    *index += 1;
                    let pos = row.position().cloned().unwrap_or_else(csv::Position::new);
                    if row.as_slice().len() > self.opts.max_record_bytes {
                        Err((
                            pos.line(),
                            format!(
                                "longer than max_record_bytes ({})",
                                self.opts.max_record_bytes
                            ),
                        ))
                    } else if row.len() != *width {
                        Err((
                            pos.line(),
                            format!("{} fields, the header has {}", row.len(), width),
                        ))
                    } else {
                        let cell = |col: usize| -> Result<String> {
                            let bytes = row.get(col).unwrap_or_default();
                            std::str::from_utf8(bytes).map(str::to_string).map_err(|e| {
                                Error::NotUtf8 {
                                    line: pos.line(),
                                    byte_offset: pos.byte()
                                        + row.range(col).map_or(0, |r| r.start as u64)
                                        + e.valid_up_to() as u64,
                                }
                            })
                        };
                        let mut r = Record::text(id, cell(*text_col)?);
                        if let Some(l) = label_col {
                            r.fields.insert(LABEL.to_string(), cell(*l)?);
                        }
                        Ok(r)
                    }
                }
            };
            match step {
                Ok(r) => {
                    self.report.records += 1;
                    return Ok(Some(r));
                }
                Err((line, reason)) => {
                    if let Some(e) = self.malformed(line, reason) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl<R: Read> Iterator for Ingest<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn csv_error(e: csv::Error) -> Error {
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, err } => Error::NotUtf8 {
            line: pos.as_ref().map_or(0, |p| p.line()),
            byte_offset: pos.as_ref().map_or(0, |p| p.byte()) + err.valid_up_to() as u64,
        },
        _ => Error::Io(e.to_string()),
    }
}

enum JsonProblem {
    Syntax(String),
    NotObject,
    Missing(String, Vec<String>),
    NotText(String),
}

impl std::fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonProblem::Syntax(e) => write!(f, "invalid JSON: {e}"),
            JsonProblem::NotObject => write!(f, "not a JSON object"),
            JsonProblem::Missing(field, available) => {
                write!(f, "no field `{field}`; fields: {}", available.join(", "))
            }
            JsonProblem::NotText(field) => {
                write!(f, "field `{field}` is an object, array or null, not text")
            }
        }
    }
}

/// The text and label of one JSON line; numbers and booleans are taken as their JSON text.
fn parse_json_line(
    line: &str,
    text_field: &str,
    label_field: Option<&str>,
) -> std::result::Result<std::collections::BTreeMap<String, String>, JsonProblem> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| JsonProblem::Syntax(e.to_string()))?;
    let obj = v.as_object().ok_or(JsonProblem::NotObject)?;
    let get = |field: &str| -> std::result::Result<String, JsonProblem> {
        match obj.get(field) {
            None => Err(JsonProblem::Missing(
                field.to_string(),
                obj.keys().cloned().collect(),
            )),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                Ok(v.to_string())
            }
            Some(_) => Err(JsonProblem::NotText(field.to_string())),
        }
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(TEXT.to_string(), get(text_field)?);
    if let Some(l) = label_field {
        fields.insert(LABEL.to_string(), get(l)?);
    }
    Ok(fields)
}

/// Parses all of `input`; for data that fits in memory (tests, small uploads).
pub fn parse_all<R: Read>(input: R, opts: Options) -> Result<(Vec<Record>, IngestReport)> {
    let mut it = Ingest::new(input, opts)?;
    let mut out = Vec::new();
    for r in it.by_ref() {
        out.push(r?);
    }
    Ok((out, it.report.clone()))
}

/// Writes records as CSV with a header of `text` (and `label` when `with_label`), quoting as
/// RFC 4180 requires. Record ids are not written: they come back from row positions.
pub fn write_csv<W: Write>(records: &[Record], out: W, with_label: bool) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let io = |e: csv::Error| Error::Io(e.to_string());
    if with_label {
        w.write_record([TEXT, LABEL]).map_err(io)?;
    } else {
        w.write_record([TEXT]).map_err(io)?;
    }
    for r in records {
        let text = r.field(TEXT)?;
        if with_label {
            w.write_record([text, r.field(LABEL)?]).map_err(io)?;
        } else {
            w.write_record([text]).map_err(io)?;
        }
    }
    w.flush().map_err(|e| Error::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(s: &str, on_error: OnError) -> Result<(Vec<Record>, IngestReport)> {
        let mut o = Options::new(Format::Jsonl);
        o.label_field = Some("intent".into());
        o.on_error = on_error;
        parse_all(s.as_bytes(), o)
    }

    #[test]
    fn jsonl_skips_and_reports_malformed_lines_with_numbers() {
        let s = "{\"text\":\"a\",\"intent\":\"x\"}\n{bad json\n\n[1,2]\n{\"text\":\"b\",\"intent\":3}\n{\"text\":\"c\"}\n";
        let (rs, rep) = jsonl(s, OnError::Skip).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!((rs[0].id, rs[1].id), (0, 4));
        assert_eq!(rs[1].fields["label"], "3");
        assert_eq!(rep.malformed, 3);
        let lines: Vec<u64> = rep.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4, 6]);
        assert!(rep.errors[2].reason.contains("`intent`"));
        let e = jsonl(s, OnError::Fail).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn jsonl_missing_field_on_first_line_lists_fields() {
        let e = jsonl("\n{\"body\":\"a\",\"intent\":\"x\"}\n", OnError::Skip).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("`text`") && s.contains("line 2") && s.contains("body, intent"),
            "{s}"
        );
    }

    #[test]
    fn reports_are_capped() {
        let s = "nope\n".repeat(250);
        let (_, rep) = jsonl(&s, OnError::Skip).unwrap();
        assert_eq!(rep.malformed, 250);
        assert_eq!(rep.errors.len(), MAX_REPORTED);
    }

    #[test]
    fn non_utf8_names_offset_and_line() {
        let mut bytes = b"hello\nwor".to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(b"ld\n");
        let e = parse_all(&bytes[..], Options::new(Format::Text)).unwrap_err();
        match e {
            Error::NotUtf8 { line, byte_offset } => assert_eq!((line, byte_offset), (2, 9)),
            e => panic!("{e}"),
        }
        let mut csv = b"text\nok\n\"b".to_vec();
        csv.push(0xfe);
        csv.extend_from_slice(b"\"\n");
        let e = parse_all(&csv[..], Options::new(Format::Csv)).unwrap_err();
        match e {
            Error::NotUtf8 { line, byte_offset } => assert_eq!((line, byte_offset), (3, 9)),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn csv_quoting_ragged_rows_and_missing_columns() {
        let s = "text,category\n\"a, \"\"quoted\"\"\nline\",x\nb,y,extra\nc,z\n";
        let mut o = Options::new(Format::Csv);
        o.label_field = Some("category".into());
        let (rs, rep) = parse_all(s.as_bytes(), o.clone()).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].fields["text"], "a, \"quoted\"\nline");
        assert_eq!((rs[0].id, rs[1].id), (0, 2));
        assert_eq!(rep.errors[0].line, 4);
        o.label_field = Some("intent".into());
        let e = parse_all(s.as_bytes(), o).unwrap_err().to_string();
        assert!(
            e.contains("`intent`") && e.contains("text, category"),
            "{e}"
        );
    }

    #[test]
    fn overlong_lines_are_malformed_and_skipped_unread() {
        let long = "x".repeat(5000);
        let s = format!("short\n{long}\nafter\n{long}");
        let mut o = Options::new(Format::Text);
        o.max_record_bytes = 100;
        let (rs, rep) = parse_all(s.as_bytes(), o.clone()).unwrap();
        assert_eq!(rs, vec![Record::text(0, "short"), Record::text(2, "after")]);
        assert_eq!(
            rep.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 4]
        );
        o.on_error = OnError::Fail;
        assert!(parse_all(s.as_bytes(), o)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        let mut o = Options::new(Format::Csv);
        o.max_record_bytes = 100;
        let csv = format!("text\nok\n\"{long}\"\nfine\n");
        let (rs, rep) = parse_all(csv.as_bytes(), o).unwrap();
        assert_eq!((rs.len(), rep.errors[0].line), (2, 3));
    }

    #[test]
    fn plain_text_one_record_per_non_empty_line() {
        let (rs, _) = parse_all("a\r\n\n  \nb\n".as_bytes(), Options::new(Format::Text)).unwrap();
        assert_eq!(rs, vec![Record::text(0, "a"), Record::text(3, "b")]);
    }
}
