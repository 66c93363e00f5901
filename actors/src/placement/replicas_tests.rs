use flotilla_protocol::GpuState;

use super::*;

const GIB: u64 = 1 << 30;

fn member(id: &str, cores: u32, ram_gib: u64, state: MemberState) -> MemberView {
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
            gpus: GpuState::NoCudaDriver,
            compute_score: 10.0,
            load: 0.0,
            ready_replicas: vec![],
            unhealthy: None,
        },
        state,
        last_seen_ms_ago: 0,
        is_self: false,
    }
}

fn demand(name: &str, replicas: u32, cores: u32, ram_gib: u64) -> ReplicaDemand {
    written(name, replicas, cores, ram_gib, 1)
}

fn written(name: &str, replicas: u32, cores: u32, ram_gib: u64, at_ms: u64) -> ReplicaDemand {
    ReplicaDemand {
        written: Hlc {
            physical_ms: at_ms,
            logical: 0,
            node: NodeId::from("writer"),
        },
        deployment: name.into(),
        replicas,
        resources: Resources {
            cores,
            ram_bytes: ram_gib * GIB,
            gpus: 0,
        },
    }
}

fn nodes(plan: &ReplicaPlan) -> Vec<&str> {
    plan.nodes.iter().map(|n| n.0.as_str()).collect()
}

#[test]
fn replicas_go_only_where_they_fit() {
    let view = vec![
        member("small", 1, 1, MemberState::Alive),
        member("big-a", 8, 32, MemberState::Alive),
        member("big-b", 8, 32, MemberState::Alive),
    ];
    let plans = place_replicas(&view, &[demand("chat", 3, 2, 4)]);
    let mut got = nodes(&plans["chat"]);
    got.sort();
    assert_eq!(
        got,
        vec!["big-a", "big-b"],
        "the 1-core node cannot hold one"
    );
    let why = plans["chat"].short.as_deref().unwrap();
    assert!(why.contains("placed 2 of 3"), "{why}");
    assert!(why.contains("2 cores"), "{why}");
}

#[test]
fn replicas_of_earlier_deployments_reserve_capacity() {
    let view = vec![
        member("n1", 4, 16, MemberState::Alive),
        member("n2", 4, 16, MemberState::Alive),
    ];
    // "a" takes 3 of 4 cores on both nodes; "b" needs 2 and fits nowhere; "c" needs 1 and fits.
    let plans = place_replicas(
        &view,
        &[
            demand("c", 2, 1, 1),
            demand("b", 1, 2, 1),
            demand("a", 2, 3, 1),
        ],
    );
    assert_eq!(plans["a"].nodes.len(), 2);
    assert!(plans["a"].short.is_none());
    assert!(plans["b"].nodes.is_empty());
    assert!(plans["b"]
        .short
        .as_deref()
        .unwrap()
        .contains("placed 0 of 1"));
    assert_eq!(plans["c"].nodes.len(), 2, "{:?}", plans["c"]);
}

#[test]
fn dead_and_suspect_members_get_no_replica() {
    let view = vec![
        member("up", 4, 16, MemberState::Alive),
        member("dead", 64, 512, MemberState::Dead),
        member("suspect", 64, 512, MemberState::Suspect),
    ];
    let plans = place_replicas(&view, &[demand("embed", 3, 1, 1)]);
    assert_eq!(nodes(&plans["embed"]), vec!["up"]);
    let empty = place_replicas(&[], &[demand("embed", 1, 1, 1)]);
    assert!(empty["embed"]
        .short
        .as_deref()
        .unwrap()
        .contains("no alive nodes"));
}

#[test]
fn placement_is_the_same_in_any_input_order_and_moves_little() {
    let view: Vec<MemberView> = (0..6)
        .map(|i| member(&format!("n{i}"), 4, 16, MemberState::Alive))
        .collect();
    let demands = vec![demand("x", 3, 1, 1), demand("y", 2, 2, 1)];
    let a = place_replicas(&view, &demands);
    let mut rv = view.clone();
    rv.reverse();
    let mut rd = demands.clone();
    rd.reverse();
    assert_eq!(place_replicas(&rv, &rd), a);
    // Losing a node that holds a replica of x moves only that replica.
    let lost = a["x"].nodes[0].clone();
    let survivors: Vec<MemberView> = view.into_iter().filter(|m| m.info.id != lost).collect();
    let b = place_replicas(&survivors, &demands);
    assert!(a["x"].nodes[1..].iter().all(|n| b["x"].nodes.contains(n)));
    assert!(!b["x"].nodes.contains(&lost));
    assert_eq!(b["x"].nodes.len(), 3);
}

#[test]
fn a_newer_deployment_never_displaces_an_older_one() {
    let view = vec![member("only", 4, 16, MemberState::Alive)];
    // "a-new" sorts first by name but was written later: "z-old" keeps its node.
    let plans = place_replicas(
        &view,
        &[written("a-new", 1, 2, 1, 20), written("z-old", 1, 3, 1, 10)],
    );
    assert_eq!(nodes(&plans["z-old"]), vec!["only"]);
    assert!(plans["a-new"].nodes.is_empty());
}
