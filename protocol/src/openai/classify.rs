//! `POST /api/v1/classify`: Flotilla's endpoint for classifier models (OpenAI has none).

use serde::{Deserialize, Serialize};

use super::embeddings::Input;

/// A classification request: one or several texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyRequest {
    pub model: String,
    pub input: Input,
    /// How many of the highest-scoring labels to return per input (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
}

/// The labels of each input, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// Always `list`.
    pub object: String,
    pub model: String,
    pub data: Vec<Classification>,
    pub usage: super::embeddings::EmbeddingUsage,
}

/// One input's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub index: u32,
    /// The best label.
    pub label: String,
    /// Its probability.
    pub score: f32,
    /// The `top_k` best labels with their probabilities, best first.
    pub labels: Vec<LabelScore>,
}

/// A label and its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

impl Classification {
    /// The result for input `index` from its label probabilities: best `top_k`, ties broken by
    /// label so the answer is deterministic. `None` when there are no labels.
    pub fn from_scores(index: u32, scores: &[(String, f32)], top_k: usize) -> Option<Self> {
        let mut sorted: Vec<&(String, f32)> = scores.iter().collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let best = sorted.first()?;
        Some(Self {
            index,
            label: best.0.clone(),
            score: best.1,
            labels: sorted
                .iter()
                .take(top_k.max(1))
                .map(|(label, score)| LabelScore {
                    label: label.clone(),
                    score: *score,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_labels_first_and_ties_by_name() {
        let scores = vec![
            ("b".to_string(), 0.4),
            ("a".to_string(), 0.4),
            ("c".to_string(), 0.2),
        ];
        let c = Classification::from_scores(3, &scores, 2).unwrap();
        assert_eq!(c.label, "a");
        assert_eq!(c.index, 3);
        let names: Vec<_> = c.labels.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(Classification::from_scores(0, &[], 1).is_none());
        let req: ClassifyRequest =
            serde_json::from_str(r#"{"model":"intent","input":["x","y"],"top_k":3}"#).unwrap();
        assert_eq!(req.input.len(), 2);
    }
}
