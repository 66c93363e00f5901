//! Checks that what a job spec names exists before the job is accepted: a `train` job's
//! dataset version, its text and label fields, and a registered model to fine-tune. A missing
//! one is a field error naming it (the API answers 400), so a typo fails at submission rather
//! than minutes later on a worker. Model sources the coordinator cannot train yet (decoders,
//! registered generation models, folders without a `config.json`) are refused here too, with
//! what to use instead.
//!
//! The answer is this node's view of the catalog: a dataset uploaded at another node a moment
//! ago may not have arrived yet by gossip (retrying the submission after a second succeeds).

use flotilla_actors::catalog;
use flotilla_protocol::catalog::{CatalogKey, Entry, Record};
use flotilla_protocol::jobs::{JobKind, JobSpec};
use flotilla_protocol::training::{Architecture, ModelSource, TrainSpec, Versioned};
use flotilla_protocol::validation::{FieldError, FieldErrors};

/// Every reference of `spec` that this node's catalog does not hold, as field errors under
/// `train.*`; empty when all exist. Catalog failures are errors of the whole check.
pub async fn missing(catalog: &catalog::Handle, spec: &JobSpec) -> anyhow::Result<FieldErrors> {
    let mut errors = Vec::new();
    let JobKind::Train { spec_toml } = &spec.kind else {
        return Ok(FieldErrors(errors));
    };
    // The spec was validated already; an unparsable one has no references to check.
    let Ok(train) = toml::from_str::<TrainSpec>(spec_toml) else {
        return Ok(FieldErrors(errors));
    };
    let mut push = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if let Ok(d) = Versioned::parse(&train.dataset.name) {
        match catalog.get(CatalogKey::dataset(&d.name, d.version)).await? {
            Some(Entry::Register(r)) => match r.value {
                Some(Record::Dataset(ds)) => {
                    let has = |f: &str| ds.schema.iter().any(|s| s.name == f);
                    let fields: Vec<&str> = ds.schema.iter().map(|s| s.name.as_str()).collect();
                    if !has(&train.dataset.text_field) {
                        push(
                            "train.dataset.text_field",
                            format!(
                                "dataset {} has no field {:?} (it has {fields:?})",
                                train.dataset.name, train.dataset.text_field
                            ),
                        );
                    }
                    if let Some(l) = train.dataset.label_field.as_deref().filter(|l| !has(l)) {
                        push(
                            "train.dataset.label_field",
                            format!(
                                "dataset {} has no field {l:?} (it has {fields:?})",
                                train.dataset.name
                            ),
                        );
                    }
                }
                _ => push(
                    "train.dataset.name",
                    format!("dataset {} was deleted", train.dataset.name),
                ),
            },
            _ => push(
                "train.dataset.name",
                format!("no dataset {} in the catalog", train.dataset.name),
            ),
        }
    }
    // What the coordinator cannot train yet is refused here rather than failing the job later.
    match &train.model {
        ModelSource::New(m) if m.architecture != Architecture::Classifier => push(
            "train.model.new.architecture",
            "only architecture = \"classifier\" can be trained on the mesh yet".to_string(),
        ),
        // Registered at submission (see `hf_folder`); a spec that still names a folder here
        // did not come through a submission and is refused.
        ModelSource::HfFolder(dir) => push(
            "train.model.hf_folder",
            format!("{dir} was not registered at submission"),
        ),
        _ => {}
    }
    if let ModelSource::Registered(m) = &train.model {
        if Versioned::parse(m).is_ok() {
            match crate::models::parent::record(catalog, m).await {
                Ok(record) => {
                    if let Some(why) = crate::models::parent::unsupported(m, &record) {
                        push("train.model.registered", why);
                    }
                }
                Err(why) => push("train.model.registered", why),
            }
        }
    }
    Ok(FieldErrors(errors))
}
