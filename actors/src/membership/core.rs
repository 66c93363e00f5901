//! The failure detector: a pure core, `(now, input) -> transitions`.
//!
//! A member is `alive` while heartbeats arrive; silent for `suspect_after` it becomes `suspect`,
//! silent for `dead_after` it is `dead`. A leave notice makes it `left`. A newer heartbeat
//! (higher `(incarnation, seq)`) brings a suspect or dead member back; a member that left comes
//! back only with a new incarnation, so stray heartbeats sent before the leave cannot revive it.
//! The worst-case detection time of a crash is `dead_after` plus one tick.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::{MemberState, MemberView, NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Timeouts of the failure detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often this node publishes its heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspected.
    #[serde(with = "humantime_serde")]
    pub suspect_after: Duration,
    /// Silence after which a member is declared dead.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// How long dead and left members stay in the view before they are forgotten.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(4),
            dead_after: Duration::from_secs(10),
            forget_after: Duration::from_secs(3600),
        }
    }
}

impl Config {
    /// Checks the timeouts are ordered so detection is meaningful.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::InvalidConfig(m.to_string()));
        if self.heartbeat_interval.is_zero() {
            return bad("membership.heartbeat_interval must be greater than zero");
        }
        if self.suspect_after <= self.heartbeat_interval {
            return bad(
                "membership.suspect_after must be longer than membership.heartbeat_interval",
            );
        }
        if self.dead_after <= self.suspect_after {
            return bad("membership.dead_after must be longer than membership.suspect_after");
        }
        if self.forget_after < self.dead_after {
            return bad("membership.forget_after must be at least membership.dead_after");
        }
        Ok(())
    }

    /// How often the detector should be ticked: often enough that detection overshoots
    /// `dead_after` by at most a tenth of it.
    pub fn tick_interval(&self) -> Duration {
        (self.dead_after / 10).clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// A change of one member's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub id: NodeId,
    /// `None` when the member is new to the view.
    pub from: Option<MemberState>,
    pub to: MemberState,
    pub at: Millis,
}

#[derive(Debug, Clone)]
struct Member {
    info: NodeInfo,
    state: MemberState,
    last_heard: Millis,
    state_since: Millis,
}

/// The failure detector's state.
#[derive(Debug, Clone)]
pub struct Detector {
    config: Config,
    self_id: NodeId,
    members: BTreeMap<NodeId, Member>,
}

impl Detector {
    /// A detector whose view holds only this node.
    pub fn new(config: Config, own: NodeInfo, now: Millis) -> Self {
        let self_id = own.id.clone();
        let mut members = BTreeMap::new();
        members.insert(
            self_id.clone(),
            Member {
                info: own,
                state: MemberState::Alive,
                last_heard: now,
                state_since: now,
            },
        );
        Self {
            config,
            self_id,
            members,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces this node's own entry (it is always alive in its own view).
    pub fn update_self(&mut self, info: NodeInfo, now: Millis) {
        if let Some(me) = self.members.get_mut(&self.self_id) {
            me.info = info;
            me.last_heard = now;
        }
    }

    /// Takes in a heartbeat. Returns the transition it caused, if any.
    pub fn on_heartbeat(&mut self, now: Millis, info: NodeInfo) -> Option<Transition> {
        if info.id == self.self_id {
            return None;
        }
        let id = info.id.clone();
        match self.members.get_mut(&id) {
            None => {
                self.members.insert(
                    id.clone(),
                    Member {
                        info,
                        state: MemberState::Alive,
                        last_heard: now,
                        state_since: now,
                    },
                );
                Some(Transition {
                    id,
                    from: None,
                    to: MemberState::Alive,
                    at: now,
                })
            }
            Some(m) => {
                if !info.newer_than(&m.info) {
                    // A duplicate or reordered heartbeat says nothing about liveness now.
                    return None;
                }
                if m.state == MemberState::Left && info.incarnation <= m.info.incarnation {
                    return None;
                }
                m.info = info;
                m.last_heard = now;
                if m.state == MemberState::Alive {
                    return None;
                }
                let from = m.state;
                m.state = MemberState::Alive;
                m.state_since = now;
                Some(Transition {
                    id,
                    from: Some(from),
                    to: MemberState::Alive,
                    at: now,
                })
            }
        }
    }

    /// Takes in a graceful leave notice for `incarnation` of `id`.
    pub fn on_leave(&mut self, now: Millis, id: &NodeId, incarnation: u64) -> Option<Transition> {
        if *id == self.self_id {
            return None;
        }
        let m = self.members.get_mut(id)?;
        if incarnation < m.info.incarnation || m.state == MemberState::Left {
            return None;
        }
        let from = m.state;
        m.state = MemberState::Left;
        m.state_since = now;
        Some(Transition {
            id: id.clone(),
            from: Some(from),
            to: MemberState::Left,
            at: now,
        })
    }

    /// This detector did not run for `gap` (its process was frozen, its runtime stalled): the
    /// members' silence during it is its own, not theirs. Moves every member's last-heard time
    /// forward by `gap`, at most to `now`, so nobody is suspected or buried for it; a member
    /// that really died meanwhile is found `dead_after` later.
    pub fn excuse(&mut self, now: Millis, gap: std::time::Duration) {
        for m in self.members.values_mut() {
            let moved = m.last_heard.plus(gap);
            m.last_heard = if moved.0 > now.0 { now } else { moved };
        }
    }

    /// Advances time: suspects and buries silent members, forgets long-gone ones.
    pub fn tick(&mut self, now: Millis) -> Vec<Transition> {
        let mut out = Vec::new();
        let cfg = &self.config;
        for (id, m) in self.members.iter_mut() {
            if *id == self.self_id {
                continue;
            }
            let silent = now.since(m.last_heard);
            let next = match m.state {
                MemberState::Alive | MemberState::Suspect if silent >= cfg.dead_after => {
                    MemberState::Dead
                }
                MemberState::Alive if silent >= cfg.suspect_after => MemberState::Suspect,
                s => s,
            };
            if next != m.state {
                out.push(Transition {
                    id: id.clone(),
                    from: Some(m.state),
                    to: next,
                    at: now,
                });
                m.state = next;
                m.state_since = now;
            }
        }
        let forget = cfg.forget_after;
        self.members.retain(|_, m| {
            !matches!(m.state, MemberState::Dead | MemberState::Left)
                || now.since(m.state_since) < forget
        });
        out
    }

    /// State of one member.
    pub fn state_of(&self, id: &NodeId) -> Option<MemberState> {
        self.members.get(id).map(|m| m.state)
    }

    /// Latest heartbeat of one member.
    pub fn info_of(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.members.get(id).map(|m| &m.info)
    }

    /// Ids of members in `state`, in id order.
    pub fn members_in(&self, state: MemberState) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.state == state)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The whole view, in id order.
    pub fn view(&self, now: Millis) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                info: m.info.clone(),
                state: m.state,
                last_seen_ms_ago: if *id == self.self_id {
                    0
                } else {
                    now.since(m.last_heard).as_millis() as u64
                },
                is_self: *id == self.self_id,
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
