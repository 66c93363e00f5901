//! The `Membership` actor: a thin shell that feeds heartbeats and clock ticks to the
//! [`Detector`](super::core::Detector) and publishes its transitions.

use flotilla_protocol::NodeInfo;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast;
use tracing::Instrument;
use tracing::{info, warn};

use super::core::{Config, Detector, Transition};
use super::msg::Msg;
use crate::clock::MonotonicClock;

/// The actor type.
#[derive(Debug)]
pub struct Membership {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What the actor starts from.
#[derive(Debug)]
pub struct Args {
    pub config: Config,
    pub own: NodeInfo,
    /// Where transitions are published; slow subscribers lose the oldest (broadcast semantics).
    pub transitions: broadcast::Sender<Transition>,
}

/// The actor's state.
#[derive(Debug)]
pub struct State {
    detector: Detector,
    clock: MonotonicClock,
    transitions: broadcast::Sender<Transition>,
    /// When the last tick ran: a much later tick means this process was frozen.
    last_tick: crate::clock::Millis,
}

impl State {
    fn publish(&self, t: Transition) {
        match t.to {
            flotilla_protocol::MemberState::Dead => {
                warn!(peer = %t.id, from = ?t.from, "member declared dead")
            }
            _ => info!(peer = %t.id, from = ?t.from, to = %t.to, "member state changed"),
        }
        // No subscribers is fine: transitions are also visible in the view.
        let _ = self.transitions.send(t);
    }
}

impl Actor for Membership {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        args.config.validate()?;
        let clock = MonotonicClock::default();
        let tick = args.config.tick_interval();
        myself.send_interval(tick, || Msg::Tick);
        Ok(State {
            detector: Detector::new(args.config, args.own, clock.now()),
            last_tick: clock.now(),
            clock,
            transitions: args.transitions,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let span = self.span.clone();
        self.handle_message(myself, msg, state)
            .instrument(span)
            .await
    }
}

impl Membership {
    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.clock.now();
        match msg {
            Msg::Heartbeat(info) => {
                if let Some(t) = state.detector.on_heartbeat(now, info) {
                    state.publish(t);
                }
            }
            Msg::Leave { id, incarnation } => {
                if let Some(t) = state.detector.on_leave(now, &id, incarnation) {
                    state.publish(t);
                }
            }
            Msg::UpdateSelf(info) => state.detector.update_self(info, now),
            Msg::Tick => {
                // Ticks come every `tick_interval`; a gap longer than `dead_after` means this
                // node was frozen (SIGSTOP, a paused VM) and heard nothing: it must not bury
                // its peers for its own silence (and take over their jobs).
                let gap = now.since(state.last_tick);
                state.last_tick = now;
                if gap > state.detector.config().dead_after {
                    warn!(?gap, "no tick for longer than dead_after: this node was frozen; peers' silence excused");
                    state.detector.excuse(now, gap);
                }
                for t in state.detector.tick(now) {
                    state.publish(t);
                }
            }
            Msg::View(reply) => {
                // The caller may have given up waiting; that is not this actor's failure.
                let _ = reply.send(state.detector.view(now));
            }
        }
        Ok(())
    }
}
