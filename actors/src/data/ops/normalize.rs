//! Text normalisation: HTML tags stripped and entities decoded, Unicode NFKC, control and
//! invisible format characters removed, whitespace collapsed.
//!
//! The steps run in that order because each depends on the one before: entities are decoded
//! after tags are stripped (so `&lt;b&gt;` stays visible text instead of becoming a tag that is
//! then removed), NFKC runs on the decoded text (entities can produce compatibility forms such
//! as `&nbsp;`), and whitespace is collapsed last, after removals have left gaps.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Which normalisation steps to run; all on by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// The field to normalise.
    pub field: String,
    pub html: bool,
    pub nfkc: bool,
    pub control: bool,
    pub whitespace: bool,
    /// Lowercase too (off by default: case carries meaning for NER and labels).
    pub lowercase: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            field: super::super::record::TEXT.to_string(),
            html: true,
            nfkc: true,
            control: true,
            whitespace: true,
            lowercase: false,
        }
    }
}

/// Tags whose content is not text and is dropped with them.
const DROP_CONTENT: [&str; 2] = ["script", "style"];
/// Tags that separate words: replaced by a space rather than nothing.
const BLOCK: [&str; 22] = [
    "br",
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
];

/// Normalises one text with the steps `p` turns on.
pub fn normalize(text: &str, p: &Params) -> String {
    let mut s = if p.html {
        html_escape::decode_html_entities(&strip_tags(text)).into_owned()
    } else {
        text.to_string()
    };
    if p.nfkc {
        s = s.nfkc().collect();
    }
    if p.control {
        s.retain(|c| !is_removable(c));
    }
    if p.lowercase {
        s = s.to_lowercase();
    }
    if p.whitespace {
        s = collapse_whitespace(&s);
    }
    s
}

/// Control characters (but not whitespace, which collapsing handles) and invisible format
/// characters: zero-width spaces and joiners, soft hyphens, byte-order marks, bidi controls.
fn is_removable(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Runs of Unicode whitespace become one space; leading and trailing whitespace go.
pub fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Removes HTML tags and comments. A `<` that does not start a tag (`a < b`, `<3`) is text;
/// an unterminated tag is kept as text rather than swallowing the rest of the input.
pub fn strip_tags(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let Some((end, name, closing)) = tag_at(s, i) else {
            i += 1;
            continue;
        };
        out.push_str(&s[copied..i]);
        let mut next = end;
        if !closing && DROP_CONTENT.contains(&name.as_str()) {
            // Skip to the matching close tag; without one, drop the rest as the browser would.
            let lower = s[end..].to_ascii_lowercase();
            next = lower
                .find(&format!("</{name}"))
                .and_then(|k| s[end + k..].find('>').map(|g| end + k + g + 1))
                .unwrap_or(s.len());
        }
        if BLOCK.contains(&name.as_str()) {
            out.push(' ');
        }
        i = next;
        copied = next;
    }
    out.push_str(&s[copied..]);
    out
}

/// If a tag or comment starts at byte `i` (a `<`), its end (after `>`), lowercase name and
/// whether it is a closing tag.
fn tag_at(s: &str, i: usize) -> Option<(usize, String, bool)> {
    let rest = &s[i + 1..];
    if let Some(body) = rest.strip_prefix("!--") {
        return body
            .find("-->")
            .map(|k| (i + 4 + k + 3, String::new(), false));
    }
    let (closing, after) = match rest.strip_prefix('/') {
        Some(a) => (true, a),
        None => (false, rest),
    };
    let first = after.chars().next()?;
    if !(first.is_ascii_alphabetic() || (!closing && (first == '!' || first == '?'))) {
        return None;
    }
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    // Find the closing '>' outside quoted attribute values.
    let mut quote: Option<char> = None;
    let start = i + 1 + (rest.len() - after.len());
    for (k, c) in s[start..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some((start + k + 1, name, closing)),
            // A new '<' before '>' means this was not a tag.
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s, &Params::default())
    }

    #[test]
    fn html_tags_comments_and_scripts_go_entities_decode() {
        assert_eq!(
            n("<p>Hello&nbsp;<b>world</b></p><p>again</p>"),
            "Hello world again"
        );
        assert_eq!(n("a <!-- hidden --> b"), "a b");
        assert_eq!(n("x<script>alert('<b>')</script>y"), "xy");
        assert_eq!(n("<a href=\"x>y\">link</a>"), "link");
        assert_eq!(
            n("Tom &amp; Jerry &lt;b&gt; &#233;t&#xE9; &euro;5"),
            "Tom & Jerry <b> été €5"
        );
        // Not tags: comparisons, hearts, unterminated.
        assert_eq!(n("a < b and c > d"), "a < b and c > d");
        assert_eq!(n("i <3 you"), "i <3 you");
        assert_eq!(n("broken <b tag"), "broken <b tag");
    }

    #[test]
    fn nfkc_control_and_whitespace() {
        // Full-width letters, ligature, superscript fold under NFKC.
        assert_eq!(n("ＡＢＣ ﬁnance x²"), "ABC finance x2");
        // Composed and decomposed é become the same string.
        assert_eq!(n("e\u{301}"), n("\u{e9}"));
        assert_eq!(n("a\u{0}b\u{7}c\u{200B}d\u{FEFF}"), "abcd");
        assert_eq!(n("  many \t\n spaces\u{3000}here  "), "many spaces here");
        let p = Params {
            lowercase: true,
            ..Params::default()
        };
        assert_eq!(normalize("Card ÄRGER", &p), "card ärger");
    }

    #[test]
    fn steps_can_be_turned_off() {
        let p = Params {
            html: false,
            whitespace: false,
            ..Params::default()
        };
        assert_eq!(normalize("<b>x</b>  y", &p), "<b>x</b>  y");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for s in ["<i>A&amp;B</i>  \u{FB01}", "plain text", "x &lt;y&gt;"] {
            let once = n(s);
            // Decoded entities can form new tags on a second pass, so idempotence holds only
            // with HTML off the second time.
            let p = Params {
                html: false,
                ..Params::default()
            };
            assert_eq!(normalize(&once, &p), once);
        }
    }
}
