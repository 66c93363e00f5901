use std::collections::BTreeSet;

use flotilla_protocol::training::WorkerId;
use proptest::prelude::*;

use super::assignment::{permutation, Assignment, Checkpoint, Next};
use super::ledger::Ledger;

fn w(i: u32) -> WorkerId {
    WorkerId(i)
}

/// Runs workers round-robin, acknowledging everything, until done.
fn drain(a: &mut Assignment, workers: &[WorkerId], share: u32, step: &mut u64, sync: bool) {
    for _ in 0..100_000 {
        let mut all_done = true;
        for &wk in workers {
            match a.next(
                wk,
                share,
                sync.then_some(*step),
                share * workers.len() as u32,
            ) {
                Next::Batch(l) => {
                    all_done = false;
                    assert!(a.ack(wk, l.id, sync.then_some(*step)));
                }
                Next::Idle => all_done = false,
                Next::Done => {}
            }
        }
        *step += 1;
        if all_done {
            return;
        }
    }
    panic!("assignment never finished");
}

#[test]
fn every_record_once_per_epoch_with_uneven_shares() {
    let mut a = Assignment::new(103, 7, Some(3)).with_ledger();
    let mut step = 0;
    for (i, wk) in [w(0), w(1), w(2)].iter().enumerate() {
        // Different shares per worker.
        if let Next::Batch(l) = a.next(*wk, 3 + i as u32 * 4, None, 0) {
            a.ack(*wk, l.id, None);
        }
    }
    drain(&mut a, &[w(0), w(1), w(2)], 5, &mut step, false);
    a.ledger().unwrap().verify_exactly_once(3, 103).unwrap();
    assert_eq!(a.next(w(0), 5, None, 0), Next::Done);
}

#[test]
fn a_dead_workers_lease_goes_to_the_survivors() {
    let mut a = Assignment::new(50, 1, Some(1)).with_ledger();
    let Next::Batch(dead) = a.next(w(9), 10, None, 0) else {
        panic!()
    };
    let Next::Batch(l) = a.next(w(0), 10, None, 0) else {
        panic!()
    };
    a.ack(w(0), l.id, None);
    assert_eq!(a.give_back(w(9)), 10);
    assert!(
        !a.ack(w(9), dead.id, None),
        "a lease given back cannot be acknowledged"
    );
    // Given-back samples are served first.
    let Next::Batch(l) = a.next(w(1), 4, None, 0) else {
        panic!()
    };
    assert_eq!(l.indices, dead.indices[..4]);
    a.ack(w(1), l.id, None);
    let mut step = 0;
    drain(&mut a, &[w(0), w(1)], 7, &mut step, false);
    a.ledger().unwrap().verify_exactly_once(1, 50).unwrap();
}

#[test]
fn outstanding_leases_make_others_idle_until_done() {
    let mut a = Assignment::new(4, 1, Some(1));
    let Next::Batch(l) = a.next(w(0), 4, None, 0) else {
        panic!()
    };
    assert_eq!(a.next(w(1), 4, None, 0), Next::Idle);
    a.ack(w(0), l.id, None);
    assert_eq!(a.next(w(1), 4, None, 0), Next::Done);
}

#[test]
fn sync_steps_read_the_permutation_in_global_batches() {
    let (len, g) = (25u64, 6u32);
    let perm: Vec<Vec<u64>> = (0..2).map(|e| permutation(len, 3, e)).collect();
    let mut a = Assignment::new(len, 3, Some(2)).with_ledger();
    let shares = [1u32, 3, 2];
    let mut step = 0u64;
    let mut expect: Vec<(u32, Vec<u64>)> = Vec::new();
    for (e, p) in perm.iter().enumerate() {
        for chunk in p.chunks(g as usize) {
            expect.push((e as u32, chunk.to_vec()));
        }
    }
    let mut got = Vec::new();
    loop {
        let mut step_batch = BTreeSet::new();
        let mut epochs = BTreeSet::new();
        let mut done = 0;
        // Workers ask in a different order each step.
        let mut order = [0usize, 1, 2];
        order.rotate_left((step % 3) as usize);
        for i in order {
            match a.next(w(i as u32), shares[i], Some(step), g) {
                Next::Batch(l) => {
                    epochs.insert(l.epoch);
                    step_batch.extend(l.indices.iter().copied());
                    a.ack(w(i as u32), l.id, Some(step));
                }
                Next::Idle => {}
                Next::Done => done += 1,
            }
        }
        if done == 3 {
            break;
        }
        assert!(epochs.len() <= 1, "step {step} mixes epochs");
        if let Some(e) = epochs.first() {
            got.push((*e, step_batch));
        }
        step += 1;
    }
    assert_eq!(got.len(), expect.len());
    for ((e, set), (ee, chunk)) in got.iter().zip(&expect) {
        assert_eq!(e, ee);
        assert_eq!(*set, chunk.iter().copied().collect::<BTreeSet<_>>());
    }
    a.ledger().unwrap().verify_exactly_once(2, len).unwrap();
}

#[test]
fn resuming_from_a_checkpoint_neither_loses_nor_repeats() {
    let len = 40;
    let mut a = Assignment::new(len, 5, Some(2));
    // Acknowledgements tagged with their step: those before the checkpoint's version are in
    // the checkpointed parameters.
    let mut applied = Ledger::new();
    let mut step = 0u64;
    for _ in 0..5 {
        for i in 0..3 {
            if let Next::Batch(l) = a.next(w(i), 3, Some(step), 9) {
                a.ack(w(i), l.id, Some(step));
                applied.record(l.epoch, &l.indices);
            }
        }
        step += 1;
    }
    // Step 5 in flight: one worker acknowledged, one holds a lease, one has not asked.
    let version = step;
    let Next::Batch(acked) = a.next(w(0), 3, Some(step), 9) else {
        panic!()
    };
    a.ack(w(0), acked.id, Some(step));
    let Next::Batch(_) = a.next(w(1), 3, Some(step), 9) else {
        panic!()
    };
    let cp = a.checkpoint(Some(version));
    assert_eq!(cp.epoch, 1);
    // The acknowledged lease of step 5 is not in the parameters at version 5.
    assert!(cp
        .pending
        .iter()
        .any(|(_, v)| v.contains(&acked.indices[0])));

    let mut b = Assignment::resume(len, 5, Some(2), cp.clone()).with_ledger();
    let mut s2 = version;
    drain(&mut b, &[w(0), w(1), w(2)], 3, &mut s2, true);
    let mut all = applied;
    all.merge(b.ledger().unwrap());
    all.verify_exactly_once(2, len).unwrap();
    assert_eq!(
        Checkpoint::default(),
        Assignment::new(len, 5, Some(2)).checkpoint(None)
    );
}

#[derive(Debug, Clone)]
enum Op {
    Next(u32, u32),
    Ack(u32),
    Die(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..4, 1u32..9).prop_map(|(a, b)| Op::Next(a, b)),
        (0u32..4).prop_map(Op::Ack),
        (0u32..4).prop_map(Op::Die),
    ]
}

proptest! {
    #[test]
    fn exactly_once_under_any_interleaving(
        len in 1u64..60,
        epochs in 1u32..3,
        ops in prop::collection::vec(op(), 0..120),
        sync in any::<bool>(),
    ) {
        let mut a = Assignment::new(len, 11, Some(epochs)).with_ledger();
        let mut step = 0u64;
        for (k, o) in ops.iter().enumerate() {
            if sync && k % 5 == 0 {
                step += 1;
            }
            match *o {
                Op::Next(wk, n) => {
                    a.next(w(wk), n, sync.then_some(step), 12);
                }
                Op::Ack(wk) => {
                    if let Some(id) = a.lease(w(wk)).map(|l| l.id) {
                        prop_assert!(a.ack(w(wk), id, sync.then_some(step)));
                    }
                }
                Op::Die(wk) => {
                    a.give_back(w(wk));
                }
            }
        }
        // Workers that stopped asking are gone: their leases come back.
        for i in 0..4 {
            a.give_back(w(i));
        }
        step += 1;
        drain(&mut a, &[w(0), w(5)], 4, &mut step, sync);
        let l = a.ledger().unwrap();
        prop_assert!(l.verify_exactly_once(epochs, len).is_ok(), "{:?}", l.verify_exactly_once(epochs, len));
    }
}
