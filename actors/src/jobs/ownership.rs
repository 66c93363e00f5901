//! Job ownership and failover, as a pure function of a job record and a membership view.
//!
//! A job is driven by its owner's coordinator. When the owner is gone (dead, left, or no longer
//! in the view), the alive node ranked first by rendezvous hashing of the job id takes over: it
//! writes the record with itself as owner and the epoch raised by one. Every node computes the
//! same successor from the same view, so normally one node takes over. If views differ and two
//! nodes take over, the catalog keeps the head with the higher `(epoch, hlc)`, and the loser
//! sees [`Decision::Follow`] on its next decision and stops: the epoch fences it. A suspect
//! owner is not replaced: suspicion is often a short network stall, and a takeover is costly.
//!
//! The shell should start deciding only once its view has settled (the failure detector's
//! `dead_after` after start), since a fresh node has not yet heard from every owner.

use flotilla_protocol::catalog::JobRecord;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::{MemberState, MemberView, NodeId};

use crate::rendezvous;

/// What this node should do about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This node owns the job: drive it.
    Drive,
    /// Another node owns it and is alive or merely suspect: leave it (and stop driving it, if
    /// this node was: it has been fenced off).
    Follow { owner: NodeId },
    /// The owner is gone and this node is its successor: write this record (owner = this node,
    /// epoch + 1, status unchanged) to the catalog, then drive the job.
    TakeOver(Box<JobRecord>),
    /// The owner is gone and another node is its successor.
    Wait { successor: NodeId },
    /// The owner is gone and no alive node can succeed it.
    Orphaned,
    /// The job has finished; nobody needs to drive it.
    Finished,
}

/// Alive nodes in failover order for `job`: rendezvous order of the job id.
pub fn failover_order(job: &JobId, view: &[MemberView]) -> Vec<NodeId> {
    let alive: Vec<NodeId> = view
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.info.id.clone())
        .collect();
    rendezvous::rank(job.as_str().as_bytes(), &alive)
}

/// Decides what node `me` does about `record`, given its view, at wall time `now_wall_ms`
/// (recorded as the takeover's `updated_at_ms`).
pub fn decide(record: &JobRecord, view: &[MemberView], me: &NodeId, now_wall_ms: u64) -> Decision {
    if record.status.is_terminal() {
        return Decision::Finished;
    }
    if record.owner == *me {
        return Decision::Drive;
    }
    // The best state any row gives the owner (a view has one row per node; be safe anyway).
    let owner_state = view
        .iter()
        .filter(|m| m.info.id == record.owner)
        .map(|m| m.state)
        .min_by_key(|s| match s {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead | MemberState::Left => 2,
        });
    if matches!(owner_state, Some(MemberState::Alive | MemberState::Suspect)) {
        return Decision::Follow {
            owner: record.owner.clone(),
        };
    }
    match failover_order(&record.id, view)
        .into_iter()
        .find(|n| *n != record.owner)
    {
        None => Decision::Orphaned,
        Some(successor) if successor == *me => {
            let mut next = record.clone();
            next.owner = me.clone();
            next.epoch = record.epoch.saturating_add(1);
            next.updated_at_ms = record.updated_at_ms.max(now_wall_ms);
            Decision::TakeOver(Box::new(next))
        }
        Some(successor) => Decision::Wait { successor },
    }
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::jobs::{AntiAffinity, JobKind, JobSpec, JobStatus, Priority, Resources};
    use flotilla_protocol::{GpuState, NodeInfo};

    use super::*;

    fn member(id: &str, state: MemberState) -> MemberView {
        MemberView {
            info: NodeInfo {
                id: id.into(),
                incarnation: 1,
                seq: 1,
                listen_addrs: vec![],
                api_addr: None,
                version: "test".into(),
                cores: 4,
                ram_bytes: 1 << 30,
                gpus: GpuState::NoCudaDriver,
                compute_score: 1.0,
                load: 0.0,
                ready_replicas: vec![],
                unhealthy: None,
            },
            state,
            last_seen_ms_ago: 0,
            is_self: false,
        }
    }

    fn record(id: &str, owner: &str, status: JobStatus) -> JobRecord {
        JobRecord {
            id: id.into(),
            spec: JobSpec {
                kind: JobKind::Benchmark {
                    peers: 1,
                    matrix_size: 8,
                    iterations: 1,
                },
                priority: Priority::Batch,
                resources: Resources {
                    cores: 1,
                    ram_bytes: 1 << 20,
                    gpus: 0,
                },
                tasks: 1,
                anti_affinity: AntiAffinity::None,
                preferred_nodes: vec![],
                idempotency_key: None,
            },
            owner: owner.into(),
            epoch: 3,
            status,
            submitted_at_ms: 10,
            updated_at_ms: 20,
        }
    }

    fn view(owner_state: MemberState) -> Vec<MemberView> {
        let mut v: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| member(n, MemberState::Alive))
            .collect();
        v.push(member("owner", owner_state));
        v
    }

    #[test]
    fn an_alive_or_suspect_owner_keeps_its_job() {
        for s in [MemberState::Alive, MemberState::Suspect] {
            let r = record("j", "owner", JobStatus::Running);
            assert_eq!(
                decide(&r, &view(s), &"a".into(), 100),
                Decision::Follow {
                    owner: "owner".into()
                }
            );
            assert_eq!(decide(&r, &view(s), &"owner".into(), 100), Decision::Drive);
        }
    }

    #[test]
    fn exactly_one_node_takes_over_a_dead_owners_job_with_a_higher_epoch() {
        for gone in [MemberState::Dead, MemberState::Left] {
            for j in 0..50 {
                let r = record(&format!("job-{j}"), "owner", JobStatus::Running);
                let v = view(gone);
                let decisions: Vec<_> = ["a", "b", "c", "d"]
                    .iter()
                    .map(|n| decide(&r, &v, &(*n).into(), 500))
                    .collect();
                let takers: Vec<_> = decisions
                    .iter()
                    .filter_map(|d| match d {
                        Decision::TakeOver(next) => Some(next),
                        _ => None,
                    })
                    .collect();
                assert_eq!(takers.len(), 1, "{decisions:?}");
                let next = takers[0];
                assert_eq!(
                    (next.epoch, next.updated_at_ms, next.status),
                    (4, 500, JobStatus::Running)
                );
                assert_eq!(Some(&next.owner), failover_order(&r.id, &v).first());
                let successor = next.owner.clone();
                for d in &decisions {
                    if !matches!(d, Decision::TakeOver(_)) {
                        assert_eq!(
                            d,
                            &Decision::Wait {
                                successor: successor.clone()
                            }
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_owner_missing_from_the_view_is_replaced_and_a_fenced_owner_follows() {
        let r = record("j", "ghost", JobStatus::Placing);
        let v = view(MemberState::Alive);
        let successor = failover_order(&r.id, &v)[0].clone();
        let Decision::TakeOver(next) = decide(&r, &v, &successor, 1) else {
            panic!("successor must take over")
        };
        // The old owner, back and reading the new record, follows the new owner.
        assert_eq!(
            decide(&next, &v, &"ghost".into(), 2),
            Decision::Follow {
                owner: successor.clone()
            }
        );
        assert_eq!(decide(&next, &v, &successor, 2), Decision::Drive);
    }

    #[test]
    fn finished_jobs_and_empty_views() {
        let r = record("j", "owner", JobStatus::Failed);
        assert_eq!(
            decide(&r, &view(MemberState::Dead), &"a".into(), 1),
            Decision::Finished
        );
        let r = record("j", "owner", JobStatus::Running);
        assert_eq!(
            decide(&r, &[member("owner", MemberState::Dead)], &"a".into(), 1),
            Decision::Orphaned
        );
    }
}
