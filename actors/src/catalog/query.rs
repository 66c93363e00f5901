//! Read-side helpers over a catalog replica: versions, latest versions, alias resolution and
//! jobs, for the HTTP API and the job coordinator.

use flotilla_protocol::catalog::{CatalogKey, JobRecord, ModelVersion, Record, RecordKind};

use super::core::Catalog;

impl Catalog {
    /// Live (not deleted) versions of dataset or model `name`, ascending.
    pub fn versions(&self, kind: RecordKind, name: &str) -> Vec<u64> {
        let from = CatalogKey {
            kind,
            name: name.to_string(),
            version: 0,
        };
        let to = CatalogKey {
            kind,
            name: name.to_string(),
            version: u64::MAX,
        };
        self.range(from..=to)
            .filter(|(k, _)| self.record(k).is_some())
            .map(|(k, _)| k.version)
            .collect()
    }

    /// The live record of the highest version of dataset or model `name`.
    pub fn latest(&self, kind: RecordKind, name: &str) -> Option<&Record> {
        let version = *self.versions(kind, name).last()?;
        self.record(&CatalogKey {
            kind,
            name: name.to_string(),
            version,
        })
    }

    /// The model version alias `alias` of `model` points to, if both exist.
    pub fn resolve_alias(&self, model: &str, alias: &str) -> Option<&ModelVersion> {
        let Some(Record::Alias(a)) = self.record(&CatalogKey::alias(model, alias)) else {
            return None;
        };
        match self.record(&CatalogKey::model(model, a.version))? {
            Record::Model(m) => Some(m),
            _ => None,
        }
    }

    /// Every job record, in id order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.entries_of(RecordKind::Job)
            .filter_map(|(k, _)| self.job_by_key(k))
    }

    /// Jobs that have not finished, in id order: the ones a coordinator must decide about.
    pub fn active_jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs().filter(|j| !j.status.is_terminal())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flotilla_protocol::catalog::{Lineage, ModelAlias};
    use flotilla_protocol::jobs::JobStatus;

    use super::*;
    use crate::catalog::core::Write;
    use crate::catalog::fixtures::{dataset, job, replica};

    fn model(version: u64) -> Record {
        Record::Model(ModelVersion {
            name: "m".into(),
            version,
            metadata: BTreeMap::new(),
            artifact_hashes: BTreeMap::from([("w.safetensors".into(), "ab".repeat(32))]),
            lineage: Lineage {
                parent_version: None,
                operation: "import".into(),
                parameters: BTreeMap::new(),
            },
            created_at_ms: 0,
        })
    }

    #[test]
    fn versions_skip_deleted_ones_and_latest_is_the_highest_live() {
        let mut c = replica("a");
        for v in [1, 2, 10] {
            c.apply_local_write(
                v,
                CatalogKey::dataset("d", v),
                Write::Put(dataset("d", v, 1, 1)),
            )
            .unwrap();
        }
        c.apply_local_write(
            20,
            CatalogKey::dataset("dd", 3),
            Write::Put(dataset("dd", 3, 1, 1)),
        )
        .unwrap();
        c.apply_local_write(30, CatalogKey::dataset("d", 10), Write::Delete)
            .unwrap();
        assert_eq!(c.versions(RecordKind::Dataset, "d"), [1, 2]);
        assert_eq!(
            c.latest(RecordKind::Dataset, "d"),
            Some(&dataset("d", 2, 1, 1))
        );
        assert_eq!(c.latest(RecordKind::Model, "d"), None);
    }

    #[test]
    fn aliases_resolve_to_live_model_versions() {
        let mut c = replica("a");
        c.apply_local_write(1, CatalogKey::model("m", 2), Write::Put(model(2)))
            .unwrap();
        let alias = Record::Alias(ModelAlias {
            model: "m".into(),
            alias: "production".into(),
            version: 2,
        });
        c.apply_local_write(2, CatalogKey::alias("m", "production"), Write::Put(alias))
            .unwrap();
        assert_eq!(
            c.resolve_alias("m", "production").map(|m| m.version),
            Some(2)
        );
        assert!(c.resolve_alias("m", "latest").is_none());
        c.apply_local_write(3, CatalogKey::model("m", 2), Write::Delete)
            .unwrap();
        assert!(c.resolve_alias("m", "production").is_none());
    }

    #[test]
    fn active_jobs_leave_out_finished_ones() {
        let mut c = replica("a");
        for (id, s) in [
            ("j1", JobStatus::Running),
            ("j2", JobStatus::Succeeded),
            ("j3", JobStatus::Pending),
        ] {
            c.apply_local_write(
                1,
                CatalogKey::job(&id.into()),
                Write::Job(job(id, 1, "a", s, 1)),
            )
            .unwrap();
        }
        let all: Vec<_> = c.jobs().map(|j| j.id.as_str()).collect();
        let active: Vec<_> = c.active_jobs().map(|j| j.id.as_str()).collect();
        assert_eq!((all, active), (vec!["j1", "j2", "j3"], vec!["j1", "j3"]));
    }
}
