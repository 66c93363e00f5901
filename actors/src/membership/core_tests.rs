use super::*;
use flotilla_protocol::GpuState;

fn info(id: &str, incarnation: u64, seq: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId::from(id),
        incarnation,
        seq,
        listen_addrs: vec![],
        api_addr: None,
        version: "test".into(),
        cores: 2,
        ram_bytes: 1 << 30,
        gpus: GpuState::NoCudaDriver,
        compute_score: 1.0,
        load: 0.0,
        ready_replicas: vec![],
        unhealthy: None,
    }
}

fn cfg() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        dead_after: Duration::from_millis(1000),
        forget_after: Duration::from_millis(5000),
    }
}

fn detector() -> Detector {
    Detector::new(cfg(), info("me", 1, 0), Millis(0))
}

#[test]
fn new_member_is_alive() {
    let mut d = detector();
    let t = d.on_heartbeat(Millis(10), info("a", 1, 1)).unwrap();
    assert_eq!((t.from, t.to), (None, MemberState::Alive));
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Alive));
}

#[test]
fn silence_goes_suspect_then_dead_at_the_configured_times() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 1));
    assert!(d.tick(Millis(299)).is_empty());
    let t = d.tick(Millis(300));
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].from, t[0].to),
        (Some(MemberState::Alive), MemberState::Suspect)
    );
    assert!(d.tick(Millis(999)).is_empty());
    let t = d.tick(Millis(1000));
    assert_eq!(
        (t[0].from, t[0].to),
        (Some(MemberState::Suspect), MemberState::Dead)
    );
}

#[test]
fn a_long_gap_between_ticks_goes_straight_to_dead() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 1));
    let t = d.tick(Millis(5000 - 1));
    assert_eq!(
        (t[0].from, t[0].to),
        (Some(MemberState::Alive), MemberState::Dead)
    );
}

#[test]
fn heartbeats_keep_a_member_alive() {
    let mut d = detector();
    for i in 0..50u64 {
        d.on_heartbeat(Millis(i * 100), info("a", 1, i + 1));
        assert!(d.tick(Millis(i * 100 + 50)).is_empty());
    }
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Alive));
}

#[test]
fn a_stale_heartbeat_does_not_refresh_liveness() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 5));
    // Same or older (incarnation, seq) arriving late must not count as a sign of life.
    assert!(d.on_heartbeat(Millis(250), info("a", 1, 5)).is_none());
    assert!(d.on_heartbeat(Millis(250), info("a", 1, 4)).is_none());
    assert_eq!(d.tick(Millis(300))[0].to, MemberState::Suspect);
}

#[test]
fn suspect_and_dead_members_recover_on_a_newer_heartbeat() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 1));
    d.tick(Millis(400));
    let t = d.on_heartbeat(Millis(410), info("a", 1, 2)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Some(MemberState::Suspect), MemberState::Alive)
    );
    d.tick(Millis(2000));
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Dead));
    let t = d.on_heartbeat(Millis(2100), info("a", 2, 0)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Some(MemberState::Dead), MemberState::Alive)
    );
}

#[test]
fn graceful_leave_is_left_not_dead() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 7, 3));
    let t = d.on_leave(Millis(50), &"a".into(), 7).unwrap();
    assert_eq!(t.to, MemberState::Left);
    // Silence after a leave does not turn it into a death.
    assert!(d.tick(Millis(4000)).is_empty());
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Left));
    // A heartbeat of the same incarnation sent before the leave cannot revive it...
    assert!(d.on_heartbeat(Millis(60), info("a", 7, 4)).is_none());
    // ...but a restart (new incarnation) does.
    let t = d.on_heartbeat(Millis(70), info("a", 8, 0)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (Some(MemberState::Left), MemberState::Alive)
    );
}

#[test]
fn a_leave_for_an_older_incarnation_is_ignored() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 8, 0));
    assert!(d.on_leave(Millis(10), &"a".into(), 7).is_none());
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Alive));
}

#[test]
fn self_is_always_alive_and_first_class() {
    let mut d = detector();
    assert!(d.on_heartbeat(Millis(0), info("me", 9, 9)).is_none());
    assert!(d.on_leave(Millis(0), &"me".into(), 1).is_none());
    assert!(d.tick(Millis(100_000)).is_empty());
    let v = d.view(Millis(100_000));
    assert_eq!(v.len(), 1);
    assert!(v[0].is_self && v[0].state == MemberState::Alive);
}

#[test]
fn dead_members_are_forgotten_after_forget_after() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 1));
    d.tick(Millis(1000));
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Dead));
    d.tick(Millis(5999));
    assert!(d.state_of(&"a".into()).is_some());
    d.tick(Millis(6000));
    assert!(d.state_of(&"a".into()).is_none());
}

#[test]
fn view_is_sorted_and_reports_silence() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("c", 1, 1));
    d.on_heartbeat(Millis(100), info("b", 1, 1));
    let v = d.view(Millis(250));
    let ids: Vec<_> = v.iter().map(|m| m.info.id.0.clone()).collect();
    assert_eq!(ids, ["b", "c", "me"]);
    assert_eq!(v[0].last_seen_ms_ago, 150);
    assert_eq!(v[1].last_seen_ms_ago, 250);
}

#[test]
fn config_validation_names_the_field() {
    let mut c = cfg();
    c.dead_after = c.suspect_after;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("dead_after"), "{e}");
    assert!(cfg().validate().is_ok());
    assert!(Config::default().validate().is_ok());
}

#[test]
fn tick_interval_bounds_detection_overshoot() {
    let c = cfg();
    assert!(c.tick_interval() <= c.dead_after / 10);
}

#[test]
fn an_excused_gap_buries_nobody_but_later_silence_still_counts() {
    let mut d = detector();
    d.on_heartbeat(Millis(0), info("a", 1, 1));
    // This node was frozen from 100 ms to 5 s: a's silence over that time is excused.
    d.excuse(Millis(5_000), Duration::from_millis(4_900));
    assert!(d.tick(Millis(5_000)).is_empty());
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Alive));
    // Silent for dead_after after the freeze: dead after all.
    d.tick(Millis(5_000 + 400));
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Suspect));
    d.tick(Millis(5_000 + 1_000));
    assert_eq!(d.state_of(&"a".into()), Some(MemberState::Dead));
}
