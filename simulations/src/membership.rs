//! Failure detection at scale: N simulated nodes, each running the real
//! [`Detector`](flotilla_actors::membership::Detector), exchanging heartbeats over a network with
//! seeded latency and loss, while some nodes crash.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use flotilla_actors::clock::Millis;
use flotilla_actors::membership::{Config, Detector};
use flotilla_protocol::{GpuState, MemberState, NodeId, NodeInfo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    pub detector: Config,
    /// One-way latency is uniform in `[min_latency, max_latency]`.
    pub min_latency: Duration,
    pub max_latency: Duration,
    /// Probability that one heartbeat to one peer is lost.
    pub loss: f64,
    /// Nodes (by index) and the virtual time at which each crashes.
    pub crashes: Vec<(usize, Duration)>,
    /// Virtual time simulated.
    pub duration: Duration,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// For each crash: the time from the crash until the last live node declared it dead
    /// (`None` if some node never did within the run).
    pub detection: Vec<Option<Duration>>,
    /// Times a live node was suspected by some peer.
    pub false_suspicions: usize,
    /// Times a live node was declared dead by some peer.
    pub false_deaths: usize,
    /// Heartbeat deliveries simulated.
    pub messages: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Node `from` sends its heartbeat `seq` to everyone.
    Beat { from: usize, seq: u64 },
    /// A heartbeat arrives at `to`.
    Deliver { to: usize, from: usize, seq: u64 },
    /// Node ticks its detector.
    Tick { node: usize },
    /// Node crashes.
    Crash { node: usize },
}

fn info(i: usize, seq: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId(format!("n{i:05}")),
        incarnation: 1,
        seq,
        listen_addrs: vec![],
        api_addr: None,
        version: "sim".into(),
        cores: 8,
        ram_bytes: 32 << 30,
        gpus: GpuState::NoCudaDriver,
        compute_score: 100.0,
        load: 0.0,
        ready_replicas: vec![],
        unhealthy: None,
    }
}

/// Runs the simulation; the same `Params` always give the same `Report`.
pub fn run(p: &Params) -> Report {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let ms = |d: Duration| d.as_millis() as u64;
    let mut detectors: Vec<Detector> = (0..p.nodes)
        .map(|i| Detector::new(p.detector.clone(), info(i, 0), Millis(0)))
        .collect();
    let mut crashed_at: Vec<Option<u64>> = vec![None; p.nodes];
    let mut queue: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut push = |q: &mut BinaryHeap<Reverse<(u64, u64, Event)>>, at: u64, e: Event| {
        order += 1;
        q.push(Reverse((at, order, e)));
    };
    let beat = ms(p.detector.heartbeat_interval);
    let tick = ms(p.detector.tick_interval());
    for i in 0..p.nodes {
        // Nodes start at random phases, as real ones do.
        push(
            &mut queue,
            rng.gen_range(0..beat.max(1)),
            Event::Beat { from: i, seq: 1 },
        );
        push(
            &mut queue,
            rng.gen_range(0..tick.max(1)),
            Event::Tick { node: i },
        );
    }
    for (node, at) in &p.crashes {
        push(&mut queue, ms(*at), Event::Crash { node: *node });
    }
    let end = ms(p.duration);
    let mut detected: Vec<Vec<Option<u64>>> = vec![vec![None; p.nodes]; p.nodes];
    let (mut false_suspicions, mut false_deaths, mut messages) = (0, 0, 0u64);

    while let Some(Reverse((now, _, event))) = queue.pop() {
        if now > end {
            break;
        }
        match event {
            Event::Crash { node } => crashed_at[node] = Some(now),
            Event::Beat { from, seq } => {
                if crashed_at[from].is_some() {
                    continue;
                }
                for to in 0..p.nodes {
                    if to != from && !rng.gen_bool(p.loss.clamp(0.0, 1.0)) {
                        let lat = rng.gen_range(
                            ms(p.min_latency)..=ms(p.max_latency).max(ms(p.min_latency)),
                        );
                        push(&mut queue, now + lat, Event::Deliver { to, from, seq });
                    }
                }
                push(&mut queue, now + beat, Event::Beat { from, seq: seq + 1 });
            }
            Event::Deliver { to, from, seq } => {
                if crashed_at[to].is_none() {
                    messages += 1;
                    detectors[to].on_heartbeat(Millis(now), info(from, seq));
                }
            }
            Event::Tick { node } => {
                if crashed_at[node].is_some() {
                    continue;
                }
                for t in detectors[node].tick(Millis(now)) {
                    let subject: usize = t.id.as_str()[1..].parse().unwrap_or(usize::MAX);
                    let Some(crash) = crashed_at.get(subject).copied() else {
                        continue;
                    };
                    match (t.to, crash) {
                        (MemberState::Dead, Some(_)) => detected[subject][node] = Some(now),
                        (MemberState::Dead, None) => false_deaths += 1,
                        (MemberState::Suspect, None) => false_suspicions += 1,
                        _ => {}
                    }
                }
                push(&mut queue, now + tick, Event::Tick { node });
            }
        }
    }

    let detection = p
        .crashes
        .iter()
        .map(|(victim, _)| {
            let crash = crashed_at[*victim]?;
            let mut latest = 0;
            for observer in 0..p.nodes {
                if observer == *victim || crashed_at[observer].is_some_and(|c| c <= crash) {
                    continue;
                }
                latest = latest.max(detected[*victim][observer]?);
            }
            Some(Duration::from_millis(latest.saturating_sub(crash)))
        })
        .collect();
    Report {
        detection,
        false_suspicions,
        false_deaths,
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(nodes: usize, loss: f64, seed: u64) -> Params {
        Params {
            nodes,
            detector: Config {
                heartbeat_interval: Duration::from_millis(500),
                suspect_after: Duration::from_secs(2),
                dead_after: Duration::from_secs(5),
                forget_after: Duration::from_secs(3600),
            },
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(50),
            loss,
            crashes: vec![(3, Duration::from_secs(20)), (7, Duration::from_secs(31))],
            duration: Duration::from_secs(60),
            seed,
        }
    }

    #[test]
    fn crashes_are_detected_within_the_bound_and_nobody_else_dies() {
        let p = params(100, 0.01, 7);
        let r = run(&p);
        println!("seed {}: {r:?}", p.seed);
        // Bound: dead_after after the last heartbeat, which left at most one interval (plus its
        // latency) before the crash, and one tick of the observer.
        let bound = p.detector.dead_after + p.detector.tick_interval() + p.max_latency;
        for d in &r.detection {
            let d = d.expect("every live node declares the crashed node dead");
            assert!(d <= bound, "detection {d:?} over bound {bound:?}");
            assert!(
                d + p.detector.heartbeat_interval + p.max_latency >= p.detector.dead_after,
                "too early: {d:?}"
            );
        }
        assert_eq!(r.false_deaths, 0);
    }

    #[test]
    fn same_seed_same_report() {
        assert_eq!(run(&params(50, 0.05, 3)), run(&params(50, 0.05, 3)));
        assert_ne!(
            run(&params(50, 0.05, 3)).messages,
            run(&params(50, 0.05, 4)).messages
        );
    }

    #[test]
    fn heavy_loss_raises_false_suspicion() {
        // With half the heartbeats lost, four in a row go missing often enough to be suspected.
        let calm = run(&params(60, 0.0, 11));
        let lossy = run(&params(60, 0.5, 11));
        assert_eq!(calm.false_suspicions, 0);
        assert!(lossy.false_suspicions > 0, "{lossy:?}");
    }
}
