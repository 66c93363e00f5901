//! The operation commands of `flotilla data` turned into the API's operation chain.

use anyhow::Context;
use serde_json::{json, Value};

use super::data::{DataCommand, OpCommon};

/// The common flags and the op chain (as the API's JSON) of an operation command.
pub fn op_chain(op: &DataCommand) -> anyhow::Result<(&OpCommon, Vec<Value>)> {
    Ok(match op {
        DataCommand::Normalize { common, lowercase } => (
            common,
            vec![json!({"op": "normalize", "field": common.field, "lowercase": lowercase})],
        ),
        DataCommand::Filter {
            common,
            min_chars,
            max_chars,
            max_repetition,
            max_symbol_ratio,
            include,
            exclude,
        } => (
            common,
            vec![
                json!({"op": "filter", "field": common.field, "min_chars": min_chars, "max_chars": max_chars,
                "max_repetition": max_repetition, "max_symbol_ratio": max_symbol_ratio, "include": include, "exclude": exclude}),
            ],
        ),
        DataCommand::Pii { common } => (common, vec![json!({"op": "pii", "field": common.field})]),
        DataCommand::Dedup {
            common,
            exact,
            near,
            threshold,
        } => {
            if *exact == *near {
                anyhow::bail!("choose one of --exact or --near");
            }
            let op = if *exact {
                json!({"op": "dedup-exact", "field": common.field})
            } else {
                json!({"op": "dedup-near", "field": common.field, "threshold": threshold})
            };
            (common, vec![op])
        }
        DataCommand::Label { common, rules } => {
            let text = std::fs::read_to_string(rules)
                .with_context(|| format!("cannot read {}", rules.display()))?;
            let parsed = if rules.extension().is_some_and(|e| e == "json") {
                flotilla_actors::data::ops::label::Rules::from_json(&text)
            } else {
                flotilla_actors::data::ops::label::Rules::from_toml(&text)
            }?;
            (
                common,
                vec![json!({"op": "label", "field": common.field, "rules": parsed})],
            )
        }
        DataCommand::Augment {
            common,
            copies,
            seed,
        } => (
            common,
            vec![json!({"op": "augment", "field": common.field, "copies": copies, "seed": seed})],
        ),
        DataCommand::Split {
            common,
            train,
            val,
            test,
            seed,
            label_field,
        } => {
            if let Some(t) = test {
                if (train + val + t - 1.0).abs() > 1e-6 {
                    anyhow::bail!(
                        "--train, --val and --test must sum to 1 (they sum to {})",
                        train + val + t
                    );
                }
            }
            (
                common,
                vec![
                    json!({"op": "split", "train": train, "val": val, "seed": seed, "label_field": label_field}),
                ],
            )
        }
        DataCommand::Clean {
            common,
            ops,
            threshold,
        } => {
            let mut chain = Vec::new();
            for o in ops {
                chain.push(match o.trim() {
                    "normalize" => json!({"op": "normalize", "field": common.field}),
                    "pii" => json!({"op": "pii", "field": common.field}),
                    "filter" => json!({"op": "filter", "field": common.field}),
                    "dedup-exact" => json!({"op": "dedup-exact", "field": common.field}),
                    "dedup-near" => json!({"op": "dedup-near", "field": common.field, "threshold": threshold}),
                    other => anyhow::bail!("--ops: unknown operation {other:?} (normalize, pii, filter, dedup-exact, dedup-near)"),
                });
            }
            (common, chain)
        }
        _ => anyhow::bail!("not an operation"),
    })
}
