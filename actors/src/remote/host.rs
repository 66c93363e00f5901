//! The node-local side of remote actors: roles, named actors under one supervisor, watchers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flotilla_protocol::services::actors::{RequestBody, ResponseBody, MAX_NAME_BYTES};
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::{MemberState, NodeId};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Down, Endpoint, Role};
use crate::membership;
use crate::mesh::Mesh;
use crate::{Error, Result};

/// Most monitors of remote actors one node keeps; more are refused.
const MAX_MONITORS: usize = 65_536;
/// Most actors one peer may have running here at once (a coordinator spawns a few shards and
/// one trainer per run); more are refused.
pub const MAX_SPAWNS_PER_PEER: usize = 256;

struct Hosted {
    /// `None` for an endpoint registered without an actor (not supervised).
    cell: Option<ActorCell>,
    endpoint: Arc<dyn Endpoint>,
    /// The node that asked for it; `None` for what this node started itself.
    spawned_by: Option<NodeId>,
}

#[derive(Default)]
struct State {
    roles: BTreeMap<String, Arc<dyn Role>>,
    actors: BTreeMap<String, Hosted>,
    /// Local actor name → nodes to tell when it stops.
    watchers: BTreeMap<String, BTreeSet<NodeId>>,
    /// (peer, actor) → local subscribers waiting for its `Down`.
    monitors: BTreeMap<(NodeId, String), Vec<mpsc::Sender<Down>>>,
    /// Who is alive: an actor whose spawner is dead or gone may be stopped by any peer (the
    /// leftovers of a coordinator that died, stopped by its successor).
    membership: Option<membership::Handle>,
}

/// This node's host of remote-reachable actors. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    state: Arc<Mutex<State>>,
    mesh: Arc<dyn Mesh>,
    supervisor: ActorCell,
    deadline: Duration,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain maps behind; keep serving them.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn remote(kind: RemoteErrorKind, message: impl Into<String>) -> RemoteError {
    RemoteError {
        kind,
        message: message.into(),
    }
}

/// The supervisor every hosted actor is linked to.
struct Supervisor;

struct SupervisorState {
    host: Arc<Mutex<State>>,
    mesh: Arc<dyn Mesh>,
    deadline: Duration,
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: SupervisorState,
    ) -> std::result::Result<SupervisorState, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        // A child's end never stops the supervisor: the others keep running.
        let (cell, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            _ => return Ok(()),
        };
        let (name, watchers) = {
            let mut s = lock(&state.host);
            let Some(name) = s
                .actors
                .iter()
                .find(|(_, h)| h.cell.as_ref().map(|c| c.get_id()) == Some(cell.get_id()))
                .map(|(n, _)| n.clone())
            else {
                return Ok(());
            };
            s.actors.remove(&name);
            let watchers = s.watchers.remove(&name).unwrap_or_default();
            (name, watchers)
        };
        debug!(actor = %name, %reason, "hosted actor ended");
        for node in watchers {
            let (mesh, deadline) = (state.mesh.clone(), state.deadline);
            let body = RequestBody::Down {
                actor: name.clone(),
                reason: reason.clone(),
            };
            crate::task::spawn(async move {
                if let Err(e) = mesh.actors(&node, body, deadline).await {
                    warn!(%node, error = %e, "down notice not delivered");
                }
            });
        }
        Ok(())
    }
}

/// Whether `node` is dead or has left, by `membership` (never, without one).
async fn spawner_gone(membership: Option<&membership::Handle>, node: &NodeId) -> bool {
    let Some(m) = membership else { return false };
    match m.view().await {
        Ok(view) => view
            .iter()
            .find(|v| v.info.id == *node)
            .is_none_or(|v| matches!(v.state, MemberState::Dead | MemberState::Left)),
        Err(_) => false,
    }
}

impl Host {
    /// Starts the host's supervisor.
    pub async fn start(mesh: Arc<dyn Mesh>, deadline: Duration) -> Result<Host> {
        let state = Arc::new(Mutex::new(State::default()));
        let (supervisor, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorState {
                host: state.clone(),
                mesh: mesh.clone(),
                deadline,
            },
        )
        .await
        .map_err(|e| Error::Store(format!("actor supervisor failed to start: {e}")))?;
        Ok(Host {
            state,
            mesh,
            supervisor: supervisor.get_cell(),
            deadline,
        })
    }

    /// Stops every hosted actor and the supervisor (the node is shutting down).
    pub fn shutdown(&self) {
        let cells: Vec<ActorCell> = {
            let mut s = lock(&self.state);
            s.watchers.clear();
            s.monitors.clear();
            // Roles and endpoints may hold the node's store: drop them now, not whenever the
            // supervisor's task ends, so the data dir can be reopened at once.
            s.roles.clear();
            let cells = s.actors.values().filter_map(|h| h.cell.clone()).collect();
            s.actors.clear();
            cells
        };
        for cell in cells {
            cell.stop(Some("node shutting down".into()));
        }
        self.supervisor.stop(None);
    }

    /// Makes `role` spawnable here under `name`.
    pub fn add_role(&self, name: &str, role: Arc<dyn Role>) {
        lock(&self.state).roles.insert(name.to_string(), role);
    }

    /// Names of the actors running here.
    pub fn actors(&self) -> Vec<String> {
        lock(&self.state).actors.keys().cloned().collect()
    }

    /// Lets [`Host::serve`] tell live spawners from dead ones.
    pub fn set_membership(&self, membership: membership::Handle) {
        lock(&self.state).membership = Some(membership);
    }

    /// Spawns an actor of `role` named `name` here, for `spawned_by` (`None`: this node).
    pub async fn spawn(
        &self,
        role: &str,
        name: &str,
        args: &[u8],
        spawned_by: Option<&NodeId>,
    ) -> std::result::Result<(), RemoteError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(remote(
                RemoteErrorKind::BadRequest,
                format!("an actor name has 1 to {MAX_NAME_BYTES} bytes"),
            ));
        }
        let factory = {
            let s = lock(&self.state);
            if s.actors.contains_key(name) {
                return Err(remote(
                    RemoteErrorKind::BadRequest,
                    format!("an actor named {name:?} already runs here"),
                ));
            }
            if let Some(peer) = spawned_by {
                let theirs = s
                    .actors
                    .values()
                    .filter(|h| h.spawned_by.as_ref() == Some(peer))
                    .count();
                if theirs >= MAX_SPAWNS_PER_PEER {
                    return Err(remote(
                        RemoteErrorKind::Unavailable,
                        format!("{peer} already runs {theirs} actors here (at most {MAX_SPAWNS_PER_PEER})"),
                    ));
                }
            }
            let known: Vec<&String> = s.roles.keys().collect();
            s.roles.get(role).cloned().ok_or_else(|| {
                remote(
                    RemoteErrorKind::NotFound,
                    format!("no role {role:?} on this node (roles: {known:?})"),
                )
            })?
        };
        let (cell, endpoint) = factory
            .spawn(name, args, self.supervisor.clone())
            .await
            .map_err(|e| remote(RemoteErrorKind::BadRequest, e))?;
        lock(&self.state).actors.insert(
            name.to_string(),
            Hosted {
                cell: Some(cell),
                endpoint,
                spawned_by: spawned_by.cloned(),
            },
        );
        Ok(())
    }

    /// Makes `endpoint` reachable as `name` without an actor behind it (a job's coordinator
    /// core, say); it is not supervised, so [`Host::unregister`] removes it. Refused if the
    /// name is taken.
    pub fn register(&self, name: &str, endpoint: Arc<dyn Endpoint>) -> Result<()> {
        let mut s = lock(&self.state);
        if s.actors.contains_key(name) {
            return Err(Error::Peer {
                peer: "this node".into(),
                reason: format!("an actor named {name:?} already runs here"),
            });
        }
        s.actors.insert(
            name.to_string(),
            Hosted {
                cell: None,
                endpoint,
                spawned_by: None,
            },
        );
        Ok(())
    }

    /// Removes an endpoint added with [`Host::register`].
    pub fn unregister(&self, name: &str) {
        let mut s = lock(&self.state);
        if s.actors.get(name).is_some_and(|h| h.cell.is_none()) {
            s.actors.remove(name);
            s.watchers.remove(name);
        }
    }

    /// Answers an actors request from `from`.
    pub async fn serve(
        &self,
        from: &NodeId,
        body: RequestBody,
    ) -> std::result::Result<ResponseBody, RemoteError> {
        match body {
            RequestBody::Call { actor, payload } => {
                let endpoint = lock(&self.state)
                    .actors
                    .get(&actor)
                    .map(|h| h.endpoint.clone())
                    .ok_or_else(|| {
                        remote(
                            RemoteErrorKind::NotFound,
                            format!("no actor {actor:?} here"),
                        )
                    })?;
                endpoint
                    .call(from, payload)
                    .await
                    .map(ResponseBody::Reply)
                    .map_err(|e| remote(RemoteErrorKind::BadRequest, e))
            }
            RequestBody::Spawn { role, name, args } => self
                .spawn(&role, &name, &args, Some(from))
                .await
                .map(|()| ResponseBody::Spawned),
            RequestBody::Stop { actor } => {
                let (found, membership) = {
                    let s = lock(&self.state);
                    let found = s
                        .actors
                        .get(&actor)
                        .and_then(|h| h.cell.clone().map(|c| (c, h.spawned_by.clone())));
                    (found, s.membership.clone())
                };
                let Some((cell, spawned_by)) = found else {
                    return Err(remote(
                        RemoteErrorKind::NotFound,
                        format!("no actor {actor:?} here"),
                    ));
                };
                let allowed = match &spawned_by {
                    Some(owner) if owner == from => true,
                    // Its spawner is gone: whoever carries the work on may clear it up.
                    Some(owner) => spawner_gone(membership.as_ref(), owner).await,
                    // This node's own actors are not stopped by peers.
                    None => false,
                };
                if !allowed {
                    warn!(actor = %actor, %from, "stop refused: not the actor's spawner");
                    return Err(remote(
                        RemoteErrorKind::Forbidden,
                        format!(
                            "{from} may not stop {actor:?}: it was started by {}",
                            spawned_by
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "this node".into())
                        ),
                    ));
                }
                cell.stop(Some(format!("stopped at the request of {from}")));
                Ok(ResponseBody::Stopped)
            }
            RequestBody::Monitor { actor } => {
                let mut s = lock(&self.state);
                if !s.actors.contains_key(&actor) {
                    return Err(remote(
                        RemoteErrorKind::NotFound,
                        format!("no actor {actor:?} here"),
                    ));
                }
                s.watchers.entry(actor).or_default().insert(from.clone());
                Ok(ResponseBody::Monitoring)
            }
            RequestBody::Down { actor, reason } => {
                self.deliver_down(from, &actor, &reason);
                Ok(ResponseBody::Ack)
            }
        }
    }

    fn deliver_down(&self, node: &NodeId, actor: &str, reason: &str) {
        let subscribers = lock(&self.state)
            .monitors
            .remove(&(node.clone(), actor.to_string()))
            .unwrap_or_default();
        for s in subscribers {
            let _ = s.try_send(Down {
                node: node.clone(),
                actor: actor.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// Watches actor `actor` on `peer`: the channel receives one [`Down`] when it stops or when
    /// `membership` declares `peer` dead or gone.
    pub async fn monitor(
        &self,
        membership: &membership::Handle,
        peer: &NodeId,
        actor: &str,
    ) -> Result<mpsc::Receiver<Down>> {
        let (tx, rx) = mpsc::channel(1);
        {
            let mut s = lock(&self.state);
            if s.monitors.len() >= MAX_MONITORS {
                return Err(Error::Peer {
                    peer: peer.to_string(),
                    reason: format!("this node already monitors {MAX_MONITORS} actors"),
                });
            }
            s.monitors
                .entry((peer.clone(), actor.to_string()))
                .or_default()
                .push(tx.clone());
        }
        // Subscribe before asking, so a death between the two is not missed.
        let mut transitions = membership.subscribe();
        let body = RequestBody::Monitor {
            actor: actor.to_string(),
        };
        if let Err(e) = self.mesh.actors(peer, body, self.deadline).await {
            lock(&self.state)
                .monitors
                .remove(&(peer.clone(), actor.to_string()));
            return Err(e);
        }
        let host = self.clone();
        let (peer, actor) = (peer.clone(), actor.to_string());
        crate::task::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    t = transitions.recv() => match t {
                        Ok(t) if t.id == peer && matches!(t.to, MemberState::Dead | MemberState::Left) => {
                            host.deliver_down(&peer, &actor, &format!("node {peer} is {}", t.to));
                            return;
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(rx)
    }
}
