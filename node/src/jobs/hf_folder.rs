//! `model.hf_folder` at submission: the folder is on the node that accepts the submission (the
//! client named it there, as `flotilla models register` does), so that node copies it into its
//! artifact store, registers it as a model version and rewrites the spec to name that version
//! (`model.registered`). The spec that travels to the node coordinating the run then names
//! only hashed artifacts, and no node ever reads a path that another node named.
//!
//! Submitting the same folder again reuses the version whose files are identical instead of
//! registering another.

use flotilla_actors::catalog;
use flotilla_protocol::catalog::{Entry, Record, RecordKind};
use flotilla_protocol::jobs::{JobKind, JobSpec};
use flotilla_protocol::training::{ModelSource, TrainSpec};
use flotilla_protocol::validation::{FieldError, FieldErrors};

use crate::models::artifacts::{next_version, register_folder};
use crate::models::files::ModelFiles;

/// The catalog name a folder is registered under: `hf.<folder name>`, cut to what names allow.
pub fn model_name(dir: &std::path::Path) -> String {
    let base: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if base.is_empty() {
        "hf.folder".to_string()
    } else {
        format!("hf.{base}")
    }
}

fn field(message: String) -> FieldErrors {
    FieldErrors(vec![FieldError {
        field: "train.model.hf_folder".into(),
        message,
    }])
}

/// `spec` with a `model.hf_folder` registered and named as `model.registered`; other specs as
/// they are. Errors name the field (400).
pub async fn resolve(
    files: &ModelFiles,
    catalog: &catalog::Handle,
    mut spec: JobSpec,
) -> Result<JobSpec, anyhow::Result<FieldErrors>> {
    let JobKind::Train { spec_toml } = &spec.kind else {
        return Ok(spec);
    };
    let Ok(mut train) = toml::from_str::<TrainSpec>(spec_toml) else {
        return Ok(spec);
    };
    let ModelSource::HfFolder(dir) = &train.model else {
        return Ok(spec);
    };
    let dir = std::path::PathBuf::from(dir);
    if !dir.join("config.json").is_file() {
        return Err(Ok(field(format!(
            "{} has no config.json (a Hugging Face model folder is expected)",
            dir.display()
        ))));
    }
    let name = model_name(&dir);
    let staged = {
        let (folder, name, me, blobs) = (
            dir.clone(),
            name.clone(),
            files.me.clone(),
            files.blobs.clone(),
        );
        // The version number is chosen below, once the files are known.
        tokio::task::spawn_blocking(move || register_folder(&name, 1, &folder, &me, &blobs))
            .await
            .map_err(|e| Err(anyhow::anyhow!(e)))?
            .map_err(|e| Ok(field(format!("{}: {e}", dir.display()))))?
    };
    let existing = catalog
        .list(Some(RecordKind::Model))
        .await
        .map_err(|e| Err(anyhow::anyhow!(e)))?
        .into_iter()
        .find_map(|(_, e)| match e {
            Entry::Register(r) => match r.value {
                Some(Record::Model(m))
                    if m.name == name && m.artifact_hashes == staged.artifact_hashes =>
                {
                    Some(m.version)
                }
                _ => None,
            },
            Entry::Job(_) => None,
        });
    let version = match existing {
        Some(v) => v,
        None => {
            let version = next_version(catalog, &name)
                .await
                .map_err(|e| Err(anyhow::anyhow!(e)))?;
            let mut record = staged;
            record.version = version;
            record
                .lineage
                .parameters
                .insert("source".into(), "hf_folder".into());
            catalog
                .put(Record::Model(record))
                .await
                .map_err(|e| Err(anyhow::anyhow!(e)))?;
            version
        }
    };
    train.model = ModelSource::Registered(format!("{name}@{version}"));
    // The spec holds names the client chose: refuse what the TOML writer cannot write.
    let as_json = serde_json::to_value(&train).map_err(|e| Err(anyhow::anyhow!(e)))?;
    flotilla_protocol::toml_text::check_quote_runs(&as_json)
        .map_err(|e| Err(anyhow::anyhow!(e)))?;
    let spec_toml = toml::to_string(&train).map_err(|e| Err(anyhow::anyhow!(e)))?;
    spec.kind = JobKind::Train { spec_toml };
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::model_name;
    use std::path::Path;

    #[test]
    fn folder_names_become_catalog_names() {
        assert_eq!(
            model_name(Path::new("/x/all-MiniLM-L6-v2")),
            "hf.all-MiniLM-L6-v2"
        );
        assert_eq!(model_name(Path::new("/x/my model!")), "hf.my-model-");
        assert_eq!(model_name(Path::new("/")), "hf.folder");
        for n in [
            model_name(Path::new("/x/all-MiniLM-L6-v2")),
            model_name(Path::new("/x/my model!")),
        ] {
            flotilla_protocol::validation::name_problem(&n).unwrap();
        }
    }
}
