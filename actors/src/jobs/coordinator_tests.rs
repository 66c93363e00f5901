use super::*;
use crate::jobs::ledger::{Ledger, TaskKey};

fn n(s: &str) -> NodeId {
    NodeId::from(s)
}

fn job() -> JobId {
    JobId("job-7".into())
}

fn cfg() -> Config {
    Config {
        start_timeout_ms: 1000,
        max_attempts: 3,
    }
}

fn starts(fx: &[Effect]) -> Vec<(NodeId, u32, u64, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Start {
                node,
                task,
                epoch,
                attempt,
            } => Some((node.clone(), *task, *epoch, *attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn submit_place_start_succeed() {
    let (mut c, fx) = Coordinator::submit(job(), 1, 2, cfg());
    assert!(fx.contains(&Effect::Status(JobStatus::Placing)));
    assert!(fx.contains(&Effect::Place {
        tasks: vec![0, 1],
        avoid: vec![]
    }));
    let fx = c.on_placed(0, &[(0, n("a")), (1, n("b"))]);
    assert_eq!(starts(&fx), vec![(n("a"), 0, 1, 0), (n("b"), 1, 1, 0)]);
    let fx = c.on_start_answer(0, &n("a"), 0, StartAnswer::Started);
    assert_eq!(fx, vec![Effect::Status(JobStatus::Running)]);
    c.on_start_answer(1, &n("b"), 0, StartAnswer::Started);
    let fx = c.on_task_finished(0, &n("a"), 0, TaskOutcome::Succeeded("1".into()));
    assert!(!fx.contains(&Effect::Status(JobStatus::Succeeded)));
    let fx = c.on_task_finished(1, &n("b"), 0, TaskOutcome::Succeeded("2".into()));
    assert!(fx.contains(&Effect::Status(JobStatus::Succeeded)));
    assert_eq!(c.results().len(), 2);
    assert_eq!(c.on_cancel(), None, "cancelling a finished job is a no-op");
}

#[test]
fn a_dead_node_s_tasks_are_re_placed_with_the_next_attempt_elsewhere() {
    let (mut c, _) = Coordinator::submit(job(), 1, 2, cfg());
    c.on_placed(0, &[(0, n("a")), (1, n("b"))]);
    c.on_start_answer(0, &n("a"), 0, StartAnswer::Started);
    let fx = c.on_node_gone(&n("a"));
    assert!(fx.contains(&Effect::Place {
        tasks: vec![0],
        avoid: vec![n("a")]
    }));
    let fx = c.on_placed(10, &[(0, n("c"))]);
    assert_eq!(starts(&fx), vec![(n("c"), 0, 1, 1)]);
    // A late result from the dead node's attempt is ignored.
    assert!(c
        .on_task_finished(0, &n("a"), 0, TaskOutcome::Succeeded("stale".into()))
        .is_empty());
}

#[test]
fn failures_retry_until_out_of_attempts_then_the_job_fails_and_others_stop() {
    let (mut c, _) = Coordinator::submit(job(), 1, 2, cfg());
    c.on_placed(0, &[(0, n("a")), (1, n("b"))]);
    c.on_start_answer(1, &n("b"), 0, StartAnswer::Started);
    for attempt in 0..2 {
        let fx = c.on_task_finished(0, &n("a"), attempt, TaskOutcome::Failed("boom".into()));
        assert!(fx.iter().any(|e| matches!(e, Effect::Place { .. })));
        c.on_placed(1, &[(0, n("a"))]);
    }
    let fx = c.on_task_finished(0, &n("a"), 2, TaskOutcome::Failed("boom".into()));
    assert!(fx.contains(&Effect::Status(JobStatus::Failed)));
    assert!(fx.contains(&Effect::Cancel {
        node: n("b"),
        task: 1
    }));
}

#[test]
fn unacknowledged_starts_time_out() {
    let (mut c, _) = Coordinator::submit(job(), 1, 1, cfg());
    c.on_placed(0, &[(0, n("a"))]);
    assert!(c.on_tick(999).is_empty());
    let fx = c.on_tick(1000);
    assert!(fx.contains(&Effect::Place {
        tasks: vec![0],
        avoid: vec![n("a")]
    }));
}

#[test]
fn placement_failure_fails_the_job() {
    let (mut c, _) = Coordinator::submit(job(), 1, 1, cfg());
    assert!(c
        .on_placement_failed("no capacity")
        .contains(&Effect::Status(JobStatus::Failed)));
}

#[test]
fn cancel_stops_running_tasks() {
    let (mut c, _) = Coordinator::submit(job(), 1, 2, cfg());
    c.on_placed(0, &[(0, n("a")), (1, n("b"))]);
    c.on_start_answer(0, &n("a"), 0, StartAnswer::Started);
    let fx = c.on_cancel().unwrap();
    assert!(fx.contains(&Effect::Cancel {
        node: n("a"),
        task: 0
    }));
    assert!(fx.contains(&Effect::Cancel {
        node: n("b"),
        task: 1
    }));
    assert!(fx.contains(&Effect::Status(JobStatus::Cancelled)));
    assert_eq!(c.status(), JobStatus::Cancelled);
}

#[test]
fn a_fenced_start_makes_the_old_owner_abdicate() {
    let (mut c, _) = Coordinator::submit(job(), 1, 1, cfg());
    c.on_placed(0, &[(0, n("a"))]);
    assert_eq!(
        c.on_start_answer(0, &n("a"), 0, StartAnswer::Fenced { current: 2 }),
        vec![Effect::Abdicate { newer_epoch: 2 }]
    );
}

/// The whole protocol on in-memory nodes: the owner dies mid-job, its successor takes over by
/// survey, the old owner comes back and is fenced, and every task executes exactly once.
#[test]
fn owner_failover_runs_every_task_exactly_once() {
    let nodes = [n("a"), n("b"), n("c")];
    let mut ledgers: BTreeMap<NodeId, Ledger> =
        nodes.iter().map(|x| (x.clone(), Ledger::new())).collect();
    let mut executions: BTreeMap<u32, u32> = BTreeMap::new();
    let mut run = |ledgers: &mut BTreeMap<NodeId, Ledger>,
                   node: &NodeId,
                   task: u32,
                   epoch: u64,
                   attempt: u32| {
        let d =
            ledgers
                .get_mut(node)
                .unwrap()
                .on_start(&TaskKey { job: job(), task }, epoch, attempt);
        if d == StartAnswer::Started {
            *executions.entry(task).or_default() += 1;
        }
        d
    };

    // Owner "o" (epoch 1) places 3 tasks on a, b, c; all start; task 0 finishes.
    let (mut old, _) = Coordinator::submit(job(), 1, 3, cfg());
    let fx = old.on_placed(0, &[(0, n("a")), (1, n("b")), (2, n("c"))]);
    for (node, task, epoch, attempt) in starts(&fx) {
        let d = run(&mut ledgers, &node, task, epoch, attempt);
        old.on_start_answer(task, &node, attempt, d);
    }
    ledgers.get_mut(&n("a")).unwrap().on_finish(
        &TaskKey {
            job: job(),
            task: 0,
        },
        TaskOutcome::Succeeded("r0".into()),
        1,
    );

    // The owner dies; "b" takes over at epoch 2 and surveys the ledgers.
    let (mut new, fx) = Coordinator::take_over(job(), 2, JobStatus::Running, 3, cfg());
    assert!(fx.contains(&Effect::Survey));
    let found: BTreeMap<NodeId, Vec<(u32, Entry)>> = ledgers
        .iter()
        .map(|(node, l)| {
            (
                node.clone(),
                (0..3)
                    .filter_map(|t| {
                        l.entry(&TaskKey {
                            job: job(),
                            task: t,
                        })
                        .map(|e| (t, e.clone()))
                    })
                    .collect(),
            )
        })
        .collect();
    let fx = new.on_survey(5, &found);
    let restarts = starts(&fx);
    assert_eq!(
        restarts.len(),
        2,
        "tasks 1 and 2 are re-attached, task 0 is done: {fx:?}"
    );
    for (node, task, epoch, attempt) in restarts {
        let d = run(&mut ledgers, &node, task, epoch, attempt);
        assert_eq!(d, StartAnswer::AlreadyRunning);
        new.on_start_answer(task, &node, attempt, d);
    }
    for task in [1u32, 2] {
        let node = new.assignments()[&task].clone();
        ledgers.get_mut(&node).unwrap().on_finish(
            &TaskKey { job: job(), task },
            TaskOutcome::Succeeded(format!("r{task}")),
            1,
        );
        new.on_task_finished(task, &node, 0, TaskOutcome::Succeeded(format!("r{task}")));
    }
    assert_eq!(new.status(), JobStatus::Succeeded);
    assert_eq!(new.results().len(), 3);

    // The old owner comes back after a partition and retries a start: fenced, it abdicates.
    let d = run(&mut ledgers, &n("c"), 2, 1, 0);
    assert_eq!(d, StartAnswer::Fenced { current: 2 });
    assert_eq!(
        old.on_start_answer(2, &n("c"), 0, d),
        vec![Effect::Abdicate { newer_epoch: 2 }]
    );

    assert_eq!(
        executions,
        BTreeMap::from([(0, 1), (1, 1), (2, 1)]),
        "each task executed exactly once"
    );
}

#[test]
fn survey_places_tasks_nobody_holds_as_a_new_attempt() {
    let (mut c, _) = Coordinator::take_over(job(), 3, JobStatus::Placing, 2, cfg());
    let mut found = BTreeMap::new();
    found.insert(
        n("a"),
        vec![(
            0,
            Entry {
                epoch: 2,
                attempt: 0,
                outcome: None,
            },
        )],
    );
    let fx = c.on_survey(0, &found);
    assert_eq!(starts(&fx), vec![(n("a"), 0, 3, 0)]);
    assert!(fx.contains(&Effect::Place {
        tasks: vec![1],
        avoid: vec![]
    }));
    let fx = c.on_placed(1, &[(1, n("b"))]);
    assert_eq!(starts(&fx), vec![(n("b"), 1, 3, 1)]);
    // A second survey answer (late) changes nothing.
    assert!(c.on_survey(2, &found).is_empty());
}
