//! Rule labelling (regex and dictionary entity rules, relation rules between entity labels)
//! and the interface for model-assisted labelling.
//!
//! Spans use character offsets (not bytes) into the text, as annotation tools do, with `end`
//! exclusive. When entity matches overlap, the longer one wins, then the earlier, then the rule
//! listed first, so the result does not depend on the order matches are found in.
//!
//! A rules file (TOML or JSON) looks like:
//!
//! ```toml
//! [[entity]]
//! label = "AMOUNT"
//! regex = '(?i)(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\d[\d,]*(?:\.\d+)?\s?(?:eur|usd|gbp|pounds|euros|dollars))'
//!
//! [[entity]]
//! label = "TRANSFER_VERB"
//! terms = ["transfer", "send", "sent", "wire"]
//!
//! [[relation]]
//! name = "transfer_amount"
//! head = "TRANSFER_VERB"
//! tail = "AMOUNT"
//! max_tokens = 4
//! ```

use std::collections::BTreeSet;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::super::error::{Error, Result};

/// One entity rule: a regex or a dictionary of terms (matched case-insensitively, whole words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRule {
    pub label: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub terms: Vec<String>,
}

/// A relation: `tail` starts within `max_tokens` tokens after `head` ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationRule {
    pub name: String,
    pub head: String,
    pub tail: String,
    pub max_tokens: usize,
}

/// A rules file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    pub entity: Vec<EntityRule>,
    pub relation: Vec<RelationRule>,
}

impl Rules {
    /// Parses a TOML rules file.
    pub fn from_toml(s: &str) -> Result<Self> {
        toml::from_str(s).map_err(|e| Error::Config {
            what: "label rules (TOML)".into(),
            reason: e.to_string(),
        })
    }
    /// Parses a JSON rules file.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::Config {
            what: "label rules (JSON)".into(),
            reason: e.to_string(),
        })
    }
}

/// An entity span; `start..end` are character offsets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub label: String,
    pub text: String,
}

/// A relation between two spans, by their index in the span list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Relation {
    pub name: String,
    pub head: usize,
    pub tail: usize,
}

/// What a labeller says about one text: an optional class label with its confidence, entity
/// spans and relations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub class: Option<String>,
    pub confidence: Option<f32>,
    pub spans: Vec<Span>,
    pub relations: Vec<Relation>,
}

/// A labeller backed by a deployed model; serving implements it. Calls are batched: one
/// label per text, in order.
pub trait ModelLabeler {
    fn label(&self, texts: &[String]) -> Result<Vec<Label>>;
}

/// Labels `texts` in batches of `batch` through `model`, checking that every batch answers
/// with one label per text.
pub fn label_with_model(
    model: &dyn ModelLabeler,
    texts: &[String],
    batch: usize,
) -> Result<Vec<Label>> {
    if batch == 0 {
        return Err(Error::invalid("label-model", "batch", "must be at least 1"));
    }
    let mut out = Vec::with_capacity(texts.len());
    for (i, chunk) in texts.chunks(batch).enumerate() {
        let labels = model.label(chunk)?;
        if labels.len() != chunk.len() {
            return Err(Error::Model(format!(
                "batch {i} of {} texts answered with {} labels",
                chunk.len(),
                labels.len()
            )));
        }
        out.extend(labels);
    }
    Ok(out)
}

/// Compiled rules.
#[derive(Debug, Clone)]
pub struct RuleLabeler {
    entities: Vec<(String, Regex)>,
    relations: Vec<RelationRule>,
}

fn token_re() -> &'static Regex {
    static T: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    // A literal pattern; it compiles in every test.
    #[allow(clippy::expect_used)]
    T.get_or_init(|| Regex::new(r"\w+").expect("token pattern compiles"))
}

impl RuleLabeler {
    /// Compiles the rules; errors name the rule and pattern.
    pub fn new(rules: &Rules) -> Result<Self> {
        let mut entities = Vec::new();
        let mut labels = BTreeSet::new();
        for (i, r) in rules.entity.iter().enumerate() {
            labels.insert(r.label.as_str());
            let pattern = match (&r.regex, r.terms.is_empty()) {
                (Some(p), true) => p.clone(),
                (None, false) => {
                    // Longest terms first, so "wire transfer" wins over "wire".
                    let mut terms: Vec<&String> = r.terms.iter().collect();
                    terms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
                    let alts: Vec<String> = terms.iter().map(|t| regex::escape(t.trim())).collect();
                    format!(r"(?i)\b(?:{})\b", alts.join("|"))
                }
                _ => {
                    return Err(Error::invalid(
                        "label",
                        &format!("entity[{i}] ({})", r.label),
                        "needs exactly one of `regex` or `terms`",
                    ))
                }
            };
            let re = Regex::new(&pattern).map_err(|e| Error::regex("label", &pattern, e))?;
            entities.push((r.label.clone(), re));
        }
        for (i, rel) in rules.relation.iter().enumerate() {
            for l in [&rel.head, &rel.tail] {
                if !labels.contains(l.as_str()) {
                    return Err(Error::invalid(
                        "label",
                        &format!("relation[{i}] ({})", rel.name),
                        format!("no entity rule has label `{l}`"),
                    ));
                }
            }
        }
        Ok(Self {
            entities,
            relations: rules.relation.clone(),
        })
    }

    /// Entity spans and relations of one text.
    pub fn label_text(&self, text: &str) -> Label {
        // (byte start, byte end, rule index)
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for (k, (_, re)) in self.entities.iter().enumerate() {
            found.extend(
                re.find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| (m.start(), m.end(), k)),
            );
        }
        found.sort_by(|a, b| {
            (b.1 - b.0)
                .cmp(&(a.1 - a.0))
                .then(a.0.cmp(&b.0))
                .then(a.2.cmp(&b.2))
        });
        let mut chosen: Vec<(usize, usize, usize)> = Vec::new();
        for f in found {
            if chosen.iter().all(|c| f.1 <= c.0 || f.0 >= c.1) {
                chosen.push(f);
            }
        }
        chosen.sort();
        let char_at = |byte: usize| text[..byte].chars().count();
        let spans: Vec<Span> = chosen
            .iter()
            .map(|&(s, e, k)| Span {
                start: char_at(s),
                end: char_at(e),
                label: self.entities[k].0.clone(),
                text: text[s..e].to_string(),
            })
            .collect();
        // Token index of each byte offset: the number of tokens ending at or before it.
        let token_ends: Vec<usize> = token_re().find_iter(text).map(|m| m.end()).collect();
        let tokens_before = |byte: usize| token_ends.partition_point(|&e| e <= byte);
        let mut relations = Vec::new();
        for rel in &self.relations {
            for (h, hs) in chosen.iter().enumerate() {
                if self.entities[hs.2].0 != rel.head {
                    continue;
                }
                for (t, ts) in chosen.iter().enumerate() {
                    if self.entities[ts.2].0 != rel.tail || ts.0 < hs.1 {
                        continue;
                    }
                    let between = tokens_before(ts.0) - tokens_before(hs.1);
                    if between <= rel.max_tokens {
                        relations.push(Relation {
                            name: rel.name.clone(),
                            head: h,
                            tail: t,
                        });
                    }
                }
            }
        }
        relations.sort();
        Label {
            class: None,
            confidence: None,
            spans,
            relations,
        }
    }
}

/// Rules are a labeller too, so the model-assisted path can be exercised and compared against
/// them with the same interface.
impl ModelLabeler for RuleLabeler {
    fn label(&self, texts: &[String]) -> Result<Vec<Label>> {
        Ok(texts.iter().map(|t| self.label_text(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[entity]]
label = "AMOUNT"
regex = '(?i)(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:eur|usd|gbp|pounds|euros|dollars)\b)'

[[entity]]
label = "TRANSFER_VERB"
terms = ["transfer", "transferred", "send", "sent", "wire"]

[[entity]]
label = "CURRENCY"
terms = ["euro", "pounds", "dollars", "wire transfer"]

[[relation]]
name = "transfer_amount"
head = "TRANSFER_VERB"
tail = "AMOUNT"
max_tokens = 3
"#;

    fn labeler() -> RuleLabeler {
        RuleLabeler::new(&Rules::from_toml(RULES).unwrap()).unwrap()
    }

    #[test]
    fn regex_and_dictionary_spans_with_char_offsets() {
        let l = labeler().label_text("Café: I sent €50 and then 20 pounds");
        let got: Vec<(usize, usize, &str, &str)> = l
            .spans
            .iter()
            .map(|s| (s.start, s.end, s.label.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (8, 12, "TRANSFER_VERB", "sent"),
                (13, 16, "AMOUNT", "€50"),
                (26, 35, "AMOUNT", "20 pounds"),
            ]
        );
        // The longer AMOUNT wins over the CURRENCY inside it.
        assert!(l.spans.iter().all(|s| s.label != "CURRENCY"));
    }

    #[test]
    fn relations_within_n_tokens_after_the_head() {
        let l = labeler().label_text("I want to transfer $1,200.50 to my mum but not send the other 300 EUR at all until next month");
        let rels: Vec<(&str, &str)> = l
            .relations
            .iter()
            .map(|r| (l.spans[r.head].text.as_str(), l.spans[r.tail].text.as_str()))
            .collect();
        // transfer → $1,200.50 (0 tokens between); send → 300 EUR (2 between); transfer → 300
        // EUR is 9 tokens away, too far.
        assert_eq!(rels, vec![("transfer", "$1,200.50"), ("send", "300 EUR")]);
    }

    #[test]
    fn bad_rules_are_named() {
        let e = RuleLabeler::new(&Rules::from_toml("[[entity]]\nlabel = \"X\"\n").unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("entity[0] (X)"), "{e}");
        let mut r = Rules::from_toml(RULES).unwrap();
        r.relation[0].tail = "NOPE".into();
        let e = RuleLabeler::new(&r).unwrap_err();
        assert!(e.to_string().contains("`NOPE`"), "{e}");
        assert!(Rules::from_json("{\"entity\": 3}").is_err());
        let json =
            Rules::from_json(&serde_json::to_string(&Rules::from_toml(RULES).unwrap()).unwrap())
                .unwrap();
        assert_eq!(json, Rules::from_toml(RULES).unwrap());
    }

    #[test]
    fn model_path_checks_shapes() {
        let texts: Vec<String> = (0..5).map(|i| format!("send {i} pounds")).collect();
        let labels = label_with_model(&labeler(), &texts, 2).unwrap();
        assert_eq!(labels.len(), 5);
        assert_eq!(labels[3].relations.len(), 1);
        assert!(label_with_model(&labeler(), &texts, 0).is_err());
    }
}
