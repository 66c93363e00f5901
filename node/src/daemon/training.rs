//! The node's training parts, as the daemon wires them: the roles other nodes' coordinators
//! spawn here (parameter-server shards and trainers), the checkpoint store endpoint, and what
//! the `train` job kind runs with. Training reaches model files through
//! [`ModelFiles`](crate::models::files::ModelFiles), never through serving.

use std::path::Path;
use std::sync::Arc;

use flotilla_actors::jobs::manager;
use flotilla_actors::mesh::Mesh;
use flotilla_actors::store::Store;
use flotilla_actors::{catalog, remote};
use flotilla_protocol::NodeId;
use prometheus_client::registry::Registry;

use crate::data::DataNode;
use crate::lifecycle::Lifecycle;
use crate::models::files::ModelFiles;
use crate::net::mesh::NetMesh;
use crate::train::checkpoint_writers::RunCoordinators;
use crate::train::checkpoints::{CheckpointStore, CHECKPOINT_STORE};
use crate::train::gradients::ClassifierGradients;
use crate::train::job::TrainContext;
use crate::train::metrics::TrainMetrics;
use flotilla_actors::training::coordinator::params::{ParamServerRole, PARAM_SERVER_ROLE};
use flotilla_actors::training::coordinator::trainers::{TrainerRole, TRAINER_ROLE};

/// The training gauges in `/metrics`.
pub(super) fn register_metrics(registry: &mut Registry) -> Arc<TrainMetrics> {
    Arc::new(TrainMetrics::register(registry))
}

/// Lets other nodes' coordinators spawn parameter-server shards (state in `store`) and
/// trainers (gradients `slowdown` times slower than this machine computes them) here.
pub(super) fn add_roles(host: &remote::Host, store: Arc<dyn Store>, mesh: &NetMesh, slowdown: f64) {
    host.add_role(PARAM_SERVER_ROLE, Arc::new(ParamServerRole { store }));
    host.add_role(
        TRAINER_ROLE,
        Arc::new(TrainerRole {
            mesh: Arc::new(mesh.clone()),
            gradients: Arc::new(ClassifierGradients { slowdown }),
        }),
    );
}

/// The parts of this node a `train` job's coordinator uses.
pub(super) struct ContextParts<'a> {
    pub mesh: &'a NetMesh,
    pub host: &'a remote::Host,
    pub data: &'a DataNode,
    pub data_dir: &'a Path,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<TrainMetrics>,
    pub files: ModelFiles,
    pub lifecycle: Arc<Lifecycle>,
}

/// What the `train` job kind runs with on this node; trained models go under
/// `<data dir>/trained`.
pub(super) fn context(p: ContextParts<'_>) -> TrainContext {
    TrainContext {
        mesh: Arc::new(p.mesh.clone()),
        host: p.host.clone(),
        data: p.data.clone(),
        models_dir: p.data_dir.join("trained"),
        store: p.store,
        metrics: p.metrics,
        files: p.files,
        lifecycle: p.lifecycle,
    }
}

/// Serves training checkpoints held here (see `train::checkpoints`), written only by the
/// coordinator of the run, which the job's owner names.
pub(super) fn register_checkpoint_store(
    host: &remote::Host,
    store: Arc<dyn Store>,
    me: NodeId,
    catalog: &catalog::Handle,
    jobs: &manager::Handle,
    mesh: &NetMesh,
) -> anyhow::Result<()> {
    let mesh: Arc<dyn Mesh> = Arc::new(mesh.clone());
    host.register(
        CHECKPOINT_STORE,
        Arc::new(CheckpointStore {
            store,
            writers: Arc::new(RunCoordinators::new(
                me,
                catalog.clone(),
                jobs.clone(),
                mesh,
            )),
        }),
    )?;
    Ok(())
}
