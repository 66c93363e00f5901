//! Catalog replicas converge under lossy, reordered gossip plus periodic anti-entropy, with
//! skewed clocks and concurrent writers: the pure cores wired together as the node will wire
//! them, without sockets. Each run prints its seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use flotilla_actors::catalog::{Catalog, Config, Write};
use flotilla_protocol::catalog::{
    CatalogKey, DatasetRecord, Entry, JobRecord, Lineage, ModelAlias, Record,
};
use flotilla_protocol::jobs::{AntiAffinity, JobKind, JobSpec, JobStatus, Priority, Resources};
use flotilla_protocol::services::catalog::Delta;
use flotilla_protocol::{JobId, NodeId};

/// A small deterministic generator (64-bit LCG, high bits), so the test needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NODES: usize = 6;
const STATUSES: [JobStatus; 6] = [
    JobStatus::Pending,
    JobStatus::Placing,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

fn dataset(name: &str, records: u64) -> Record {
    Record::Dataset(DatasetRecord {
        name: name.into(),
        version: 1,
        schema: vec![],
        record_count: records,
        shard_hashes: vec!["0a".repeat(32)],
        lineage: Lineage {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: 0,
    })
}

fn job(id: &str, owner: &NodeId, epoch: u64, status: JobStatus, at: u64) -> JobRecord {
    JobRecord {
        id: JobId::from(id),
        spec: JobSpec {
            kind: JobKind::Benchmark {
                peers: 2,
                matrix_size: 64,
                iterations: 1,
            },
            priority: Priority::Training,
            resources: Resources {
                cores: 1,
                ram_bytes: 1 << 20,
                gpus: 0,
            },
            tasks: 2,
            anti_affinity: AntiAffinity::OnePerNode,
            preferred_nodes: vec![],
            idempotency_key: None,
        },
        owner: owner.clone(),
        epoch,
        status,
        submitted_at_ms: 0,
        updated_at_ms: at,
    }
}

/// One random local write on `c` at wall time `wall`.
fn random_write(rng: &mut Rng, c: &mut Catalog, me: &NodeId, wall: u64) -> Delta {
    let name = ["a", "b", "c", "d"][rng.below(4) as usize];
    let (key, write) = match rng.below(4) {
        0 => (
            CatalogKey::dataset(name, 1),
            Write::Put(dataset(name, rng.below(100))),
        ),
        1 => (CatalogKey::dataset(name, 1), Write::Delete),
        2 => {
            let alias = Record::Alias(ModelAlias {
                model: "m".into(),
                alias: name.into(),
                version: 1 + rng.below(5),
            });
            (CatalogKey::alias("m", name), Write::Put(alias))
        }
        _ => {
            let id = JobId::from(format!("job-{name}").as_str());
            // Writers build on what they have seen: a takeover raises the epoch, otherwise the
            // status is set to any state (the lattice ignores backward moves).
            let (owner, epoch) = match c.job(&id) {
                Some(j) if rng.below(4) == 0 => (me.clone(), j.epoch + 1),
                Some(j) => (j.owner.clone(), j.epoch),
                None => (me.clone(), 1),
            };
            let status = STATUSES[rng.below(6) as usize];
            (
                CatalogKey::job(&id),
                Write::Job(job(id.as_str(), &owner, epoch, status, wall)),
            )
        }
    };
    c.apply_local_write(wall, key, write)
        .unwrap_or_else(|e| panic!("local write on {me}: {e}"))
}

fn run(seed: u64) {
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let keys: Vec<flotilla_actors::catalog::Keys> = (0..NODES)
        .map(|i| flotilla_actors::catalog::Keys::from_seed(&format!("node{i}")))
        .collect();
    let ids: Vec<NodeId> = keys.iter().map(|k| k.me().clone()).collect();
    let mut replicas: Vec<Catalog> = keys
        .into_iter()
        .map(|k| Catalog::new(Config::default(), k))
        .collect();
    // Clock offsets within ±5 s, well inside the 60 s skew bound.
    let offsets: Vec<i64> = (0..NODES)
        .map(|_| rng.below(10_001) as i64 - 5_000)
        .collect();
    let wall = |node: usize, t: u64| (1_000_000 + t as i64 + offsets[node]) as u64;
    // Everything ever written, folded: the state every replica must end in.
    let mut expected: BTreeMap<CatalogKey, Entry> = BTreeMap::new();
    // Gossip in flight: (deliver at step, to, delta).
    let mut in_flight: Vec<(u64, usize, Delta)> = Vec::new();

    for step in 0..400u64 {
        let t = step * 10;
        let writer = rng.below(NODES as u64) as usize;
        let delta = random_write(
            &mut rng,
            &mut replicas[writer],
            &ids[writer],
            wall(writer, t),
        );
        for (k, e) in &delta.entries {
            match expected.get_mut(k) {
                Some(x) => {
                    x.merge(e.clone());
                }
                None => {
                    expected.insert(k.clone(), e.clone());
                }
            }
        }
        // Lossy, delayed gossip: each peer gets the delta with probability 1/2, up to 20 steps
        // late, so deliveries reorder.
        for to in (0..NODES).filter(|&p| p != writer) {
            if rng.below(2) == 0 {
                in_flight.push((step + rng.below(20), to, delta.clone()));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) =
            in_flight.into_iter().partition(|(at, _, _)| *at <= step);
        in_flight = later;
        for (_, to, d) in due {
            let report = replicas[to].merge_remote(wall(to, t), d);
            assert!(
                report.rejected.is_empty(),
                "seed {seed}: {:?}",
                report.rejected
            );
        }
        // Every 25 steps each replica syncs with one random peer.
        if step % 25 == 24 {
            for a in 0..NODES {
                let b = (a + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
                sync(&mut replicas, a, b, wall(a, t));
            }
        }
    }
    // Gossip still in flight is lost. One ring of anti-entropy, then one more, must suffice:
    // the first ring carries everything around, the second spreads the last node's merge.
    for _ in 0..2 {
        for a in 0..NODES {
            sync(&mut replicas, a, (a + 1) % NODES, wall(a, 10_000));
        }
    }
    let expected: Vec<(CatalogKey, Entry)> = expected.into_iter().collect();
    for (i, r) in replicas.iter().enumerate() {
        let state: Vec<(CatalogKey, Entry)> =
            r.entries().map(|(k, e)| (k.clone(), e.clone())).collect();
        assert_eq!(state, expected, "seed {seed}: replica {i} differs");
        assert_eq!(r.digest(), replicas[0].digest(), "seed {seed}");
    }
}

/// One anti-entropy exchange initiated by `a` with `b`.
fn sync(replicas: &mut [Catalog], a: usize, b: usize, wall: u64) {
    let reply = replicas[b].answer_sync(&replicas[a].digest());
    let (report, pushes) = replicas[a].complete_sync(wall, reply);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    for d in pushes {
        let report = replicas[b].merge_remote(wall, d);
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
}

#[test]
fn replicas_converge_under_lossy_reordered_gossip_and_anti_entropy() {
    for seed in [1, 7, 42, 1234, 98765] {
        run(seed);
    }
}
