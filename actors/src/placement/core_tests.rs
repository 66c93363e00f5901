use flotilla_protocol::jobs::{AntiAffinity, JobKind};
use flotilla_protocol::{GpuState, GpuSummary};
use proptest::prelude::*;

use super::*;

const GIB: u64 = 1 << 30;

fn member(
    id: &str,
    cores: u32,
    ram_gib: u64,
    gpus: usize,
    score: f64,
    state: MemberState,
) -> MemberView {
    let gpu = GpuSummary {
        name: "H100".into(),
        memory_bytes: 80 * GIB,
        compute_capability: (9, 0),
    };
    MemberView {
        info: NodeInfo {
            id: id.into(),
            incarnation: 1,
            seq: 1,
            listen_addrs: vec![],
            api_addr: None,
            version: "test".into(),
            cores,
            ram_bytes: ram_gib * GIB,
            gpus: if gpus == 0 {
                GpuState::NoCudaDriver
            } else {
                GpuState::Gpus(vec![gpu; gpus])
            },
            compute_score: score,
            load: 0.0,
            ready_replicas: vec![],
            unhealthy: None,
        },
        state,
        last_seen_ms_ago: 0,
        is_self: false,
    }
}

fn alive(id: &str, cores: u32, ram_gib: u64, gpus: usize, score: f64) -> MemberView {
    member(id, cores, ram_gib, gpus, score, MemberState::Alive)
}

fn spec(
    tasks: u32,
    cores: u32,
    ram_gib: u64,
    gpus: u32,
    priority: Priority,
    aa: AntiAffinity,
) -> JobSpec {
    JobSpec {
        kind: JobKind::Benchmark {
            peers: tasks,
            matrix_size: 256,
            iterations: 1,
        },
        priority,
        resources: Resources {
            cores,
            ram_bytes: ram_gib * GIB,
            gpus,
        },
        tasks,
        anti_affinity: aa,
        preferred_nodes: vec![],
        idempotency_key: None,
    }
}

fn running(
    job: &str,
    task: u32,
    priority: Priority,
    cores: u32,
    ram_gib: u64,
    gpus: u32,
) -> RunningTask {
    RunningTask {
        job: job.into(),
        task,
        priority,
        resources: Resources {
            cores,
            ram_bytes: ram_gib * GIB,
            gpus,
        },
    }
}

fn nodes_of(p: &Placement) -> Vec<&str> {
    p.assignments.iter().map(|a| a.node.as_str()).collect()
}

#[test]
fn dead_suspect_and_left_members_are_never_chosen() {
    let view = vec![
        member("dead", 64, 256, 0, 500.0, MemberState::Dead),
        member("suspect", 64, 256, 0, 500.0, MemberState::Suspect),
        member("left", 64, 256, 0, 500.0, MemberState::Left),
        alive("slow", 4, 16, 0, 10.0),
    ];
    let p = place(
        &view,
        &BTreeMap::new(),
        &spec(1, 2, 1, 0, Priority::Batch, AntiAffinity::None),
        &"j".into(),
    )
    .unwrap();
    assert_eq!(nodes_of(&p), ["slow"]);
    let none = &view[..3];
    let e = place(
        none,
        &BTreeMap::new(),
        &spec(1, 2, 1, 0, Priority::Batch, AntiAffinity::None),
        &"j".into(),
    );
    assert!(matches!(e, Err(PlacementError::NoAliveNodes { .. })));
}

#[test]
fn preferred_nodes_then_score_then_load_decide() {
    let mut view = vec![
        alive("fast", 8, 32, 0, 200.0),
        alive("local", 8, 32, 0, 50.0),
        alive("mid", 8, 32, 0, 100.0),
    ];
    let mut s = spec(1, 2, 1, 0, Priority::Batch, AntiAffinity::None);
    assert_eq!(
        nodes_of(&place(&view, &BTreeMap::new(), &s, &"j".into()).unwrap()),
        ["fast"]
    );
    s.preferred_nodes = vec!["local".into()];
    assert_eq!(
        nodes_of(&place(&view, &BTreeMap::new(), &s, &"j".into()).unwrap()),
        ["local"]
    );
    // A busy fast node (load 3 → a quarter of its speed) loses to an idle mid one.
    s.preferred_nodes.clear();
    view[0].info.load = 3.0;
    assert_eq!(
        nodes_of(&place(&view, &BTreeMap::new(), &s, &"j".into()).unwrap()),
        ["mid"]
    );
}

#[test]
fn capacity_and_reservations_are_respected() {
    let view = vec![alive("a", 8, 32, 1, 100.0), alive("b", 8, 32, 0, 100.0)];
    let mut load = BTreeMap::new();
    load.insert(
        NodeId::from("a"),
        Usage {
            tasks: vec![running("x", 0, Priority::Inference, 6, 8, 0)],
        },
    );
    // 3 tasks of 2 cores: a has 2 cores left, b has 8.
    let p = place(
        &view,
        &load,
        &spec(3, 2, 1, 0, Priority::Batch, AntiAffinity::None),
        &"j".into(),
    )
    .unwrap();
    let on_a = nodes_of(&p).iter().filter(|n| **n == "a").count();
    assert!(on_a <= 1, "{p:?}");
    assert!(p.preempt.is_empty());
    // GPUs: only a has one.
    let p = place(
        &view,
        &load,
        &spec(1, 1, 1, 1, Priority::Batch, AntiAffinity::None),
        &"g".into(),
    )
    .unwrap();
    assert_eq!(nodes_of(&p), ["a"]);
}

#[test]
fn anti_affinity_spreads_tasks_and_says_when_it_cannot() {
    let view: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| alive(n, 32, 64, 0, 100.0))
        .collect();
    let p = place(
        &view,
        &BTreeMap::new(),
        &spec(3, 1, 1, 0, Priority::Batch, AntiAffinity::OnePerNode),
        &"j".into(),
    )
    .unwrap();
    let mut ns = nodes_of(&p);
    ns.sort();
    assert_eq!(ns, ["a", "b", "c"]);
    let mut s = spec(7, 1, 1, 0, Priority::Batch, AntiAffinity::MaxPerNode(2));
    s.kind = JobKind::Benchmark {
        peers: 7,
        matrix_size: 8,
        iterations: 1,
    };
    let e = place(&view, &BTreeMap::new(), &s, &"j".into()).unwrap_err();
    assert!(
        matches!(
            e,
            PlacementError::AntiAffinity {
                tasks: 7,
                max_per_node: 2,
                nodes: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn impossible_jobs_get_clear_errors() {
    let view = vec![alive("a", 4, 8, 0, 100.0), alive("b", 8, 4, 0, 100.0)];
    let e = place(
        &view,
        &BTreeMap::new(),
        &spec(1, 8, 8, 0, Priority::Batch, AntiAffinity::None),
        &"big".into(),
    )
    .unwrap_err();
    assert!(matches!(e, PlacementError::TaskTooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("8 cores") && e.to_string().contains("big"),
        "{e}"
    );
    // Fits one per node (a by cores, b by RAM), not 5, and nothing lower to preempt.
    let e = place(
        &view,
        &BTreeMap::new(),
        &spec(5, 4, 4, 0, Priority::Inference, AntiAffinity::None),
        &"j".into(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PlacementError::Insufficient {
                tasks: 5,
                placed: 2,
                ..
            }
        ),
        "{e}"
    );
    let mut bad = spec(1, 0, 1, 0, Priority::Batch, AntiAffinity::None);
    bad.tasks = 0;
    let e = place(&view, &BTreeMap::new(), &bad, &"j".into()).unwrap_err();
    assert!(
        matches!(&e, PlacementError::InvalidSpec { errors, .. } if errors.mentions("resources.cores") && errors.mentions("tasks"))
    );
}

#[test]
fn a_higher_class_lists_the_fewest_lower_tasks_to_preempt() {
    let view = vec![alive("a", 8, 64, 0, 100.0), alive("b", 8, 64, 0, 100.0)];
    let mut load = BTreeMap::new();
    // a: two batch tasks of 4 cores. b: one training task of 4 and one batch of 4... and an
    // inference task that must never be listed.
    load.insert(
        NodeId::from("a"),
        Usage {
            tasks: vec![
                running("b1", 0, Priority::Batch, 4, 1, 0),
                running("b1", 1, Priority::Batch, 4, 1, 0),
            ],
        },
    );
    load.insert(
        NodeId::from("b"),
        Usage {
            tasks: vec![
                running("t1", 0, Priority::Training, 4, 1, 0),
                running("i1", 0, Priority::Inference, 4, 1, 0),
            ],
        },
    );
    let p = place(
        &view,
        &load,
        &spec(1, 4, 1, 0, Priority::Interactive, AntiAffinity::None),
        &"j".into(),
    )
    .unwrap();
    assert_eq!(p.preempt.len(), 1, "{p:?}");
    // The lowest class goes first: a batch task on a, not the training task on b.
    assert_eq!(
        (p.preempt[0].node.as_str(), p.preempt[0].priority),
        ("a", Priority::Batch)
    );
    assert_eq!(nodes_of(&p), ["a"]);
    // A batch job cannot preempt anything.
    let e = place(
        &view,
        &load,
        &spec(1, 4, 1, 0, Priority::Batch, AntiAffinity::None),
        &"j".into(),
    )
    .unwrap_err();
    assert!(matches!(e, PlacementError::Insufficient { .. }));
}

#[test]
fn equal_nodes_split_jobs_by_rendezvous_hashing() {
    // Scores within one band (noise of a few percent) count as equal.
    let view: Vec<_> = (0..10)
        .map(|i| alive(&format!("n{i}"), 16, 64, 0, 100.0 + f64::from(i) * 0.3))
        .collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for j in 0..500 {
        let p = place(
            &view,
            &BTreeMap::new(),
            &spec(1, 1, 1, 0, Priority::Batch, AntiAffinity::None),
            &JobId(format!("job-{j}")),
        )
        .unwrap();
        *per_node.entry(p.assignments[0].node.0.clone()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 10, "{per_node:?}");
    assert!(
        per_node.values().all(|&c| (25..=80).contains(&c)),
        "{per_node:?}"
    );
}

// ---- Properties ----

fn state() -> impl Strategy<Value = MemberState> {
    prop::sample::select(vec![
        MemberState::Alive,
        MemberState::Alive,
        MemberState::Alive,
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ])
}

fn priority() -> impl Strategy<Value = Priority> {
    prop::sample::select(vec![
        Priority::Batch,
        Priority::Training,
        Priority::Interactive,
        Priority::Inference,
    ])
}

fn view() -> impl Strategy<Value = Vec<MemberView>> {
    prop::collection::btree_map(
        "[a-h]",
        (
            4u32..33,
            8u64..129,
            0usize..3,
            0.0f64..300.0,
            0.0f64..2.0,
            state(),
        ),
        2..8,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, (cores, ram, gpus, score, load, st))| {
                let mut v = member(&id, cores, ram, gpus, score, st);
                v.info.load = load;
                v
            })
            .collect()
    })
}

fn load() -> impl Strategy<Value = BTreeMap<NodeId, Usage>> {
    prop::collection::btree_map(
        "[a-h]",
        prop::collection::vec((priority(), 1u32..17, 1u64..49, 0u32..2), 0..5),
        3..8,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(id, ts)| {
                let tasks = ts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (p, c, r, g))| running(&format!("r-{id}"), i as u32, p, c, r, g))
                    .collect();
                (NodeId(id), Usage { tasks })
            })
            .collect()
    })
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    let aa = prop::sample::select(vec![
        AntiAffinity::None,
        AntiAffinity::OnePerNode,
        AntiAffinity::MaxPerNode(2),
    ]);
    (
        1u32..6,
        1u32..9,
        1u64..17,
        prop::sample::select(vec![0u32, 0, 0, 1]),
        priority(),
        aa,
        prop::collection::vec("[a-h]", 0..2),
    )
        .prop_map(|(tasks, cores, ram, gpus, p, aa, pref)| {
            let mut s = spec(tasks, cores, ram, gpus, p, aa);
            s.preferred_nodes = pref
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(NodeId)
                .collect();
            s
        })
}

proptest! {
    #[test]
    fn placements_are_deterministic_valid_and_order_free(
        (view, shuffled) in view().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        load in load(),
        spec in job_spec(),
        job in "[a-z]{1,6}",
    ) {
        let job = JobId(job);
        let first = place(&view, &load, &spec, &job);
        prop_assert_eq!(&first, &place(&view, &load, &spec, &job));
        prop_assert_eq!(&first, &place(&shuffled, &load, &spec, &job));
        if let Err(PlacementError::Insufficient { .. }) = &first {
            // Tasks are identical, so the greedy placement is complete without preemption: it
            // fails only if the free slots on alive nodes are fewer than the tasks.
            let slots: u64 = view
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| {
                    let used = load.get(&m.info.id).map(Usage::used).unwrap_or(Resources { cores: 0, ram_bytes: 0, gpus: 0 });
                    let free = sub(capacity(&m.info), used);
                    let per = |f: u64, n: u64| f.checked_div(n).unwrap_or(u64::MAX);
                    let n = per(free.cores.into(), spec.resources.cores.into())
                        .min(per(free.ram_bytes, spec.resources.ram_bytes))
                        .min(per(free.gpus.into(), spec.resources.gpus.into()));
                    spec.anti_affinity.max_per_node().map_or(n, |m| n.min(m.into())).min(u64::from(spec.tasks))
                })
                .sum();
            prop_assert!(slots < u64::from(spec.tasks), "{slots} free slots but placement failed");
        }
        let Ok(p) = first else { return Ok(()) };

        prop_assert_eq!(p.assignments.len(), spec.tasks as usize);
        let by_id: BTreeMap<&NodeId, &MemberView> = view.iter().map(|m| (&m.info.id, m)).collect();
        let mut per_node: BTreeMap<&NodeId, u32> = BTreeMap::new();
        for (i, a) in p.assignments.iter().enumerate() {
            prop_assert_eq!(a.task as usize, i);
            prop_assert_eq!(by_id[&a.node].state, MemberState::Alive, "{} is not alive", a.node);
            *per_node.entry(&a.node).or_default() += 1;
        }
        if let Some(max) = spec.anti_affinity.max_per_node() {
            prop_assert!(per_node.values().all(|&c| c <= max), "{per_node:?}");
        }
        for pre in &p.preempt {
            prop_assert!(pre.priority < spec.priority, "{pre:?} is not of a lower class");
            let on_node = load.get(&pre.node).map(|u| u.tasks.iter().any(|t| t.job == pre.job && t.task == pre.task));
            prop_assert_eq!(on_node, Some(true));
        }
        // Capacity: what stays, plus what was placed, fits every node.
        for (id, count) in per_node {
            let m = by_id[id];
            let kept: Vec<&RunningTask> = load.get(id).map(|u| u.tasks.iter().filter(|t| {
                !p.preempt.iter().any(|x| &x.node == id && x.job == t.job && x.task == t.task)
            }).collect()).unwrap_or_default();
            let kept = kept.iter().fold(Resources { cores: 0, ram_bytes: 0, gpus: 0 }, |a, t| add(a, t.resources));
            let mut placed = Resources { cores: 0, ram_bytes: 0, gpus: 0 };
            for _ in 0..count {
                placed = add(placed, spec.resources);
            }
            // What was placed fits in what the kept tasks leave free (a node may already be
            // booked beyond its capacity by a stale view; nothing is added to that).
            let free = sub(capacity(&m.info), kept);
            prop_assert!(fits(placed, free), "{id} over capacity: placed {placed:?}, free {free:?}");
        }
    }
}
