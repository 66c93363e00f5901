use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// Doubles its inputs and records the size of every batch.
#[derive(Default)]
struct Doubler {
    sizes: Mutex<Vec<usize>>,
}

impl BatchModel for Doubler {
    type Input = u32;
    type Output = u32;
    fn run(&self, inputs: Vec<u32>) -> std::result::Result<Vec<u32>, String> {
        self.sizes.lock().unwrap().push(inputs.len());
        if inputs.contains(&13) {
            return Err("unlucky".into());
        }
        if inputs.contains(&7) {
            return Ok(vec![]);
        }
        if inputs.contains(&666) {
            panic!("the model crashed");
        }
        Ok(inputs.into_iter().map(|x| x * 2).collect())
    }
}

/// Blocks every batch until the test releases it.
struct Gate {
    started: AtomicUsize,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl BatchModel for Gate {
    type Input = u32;
    type Output = u32;
    fn run(&self, inputs: Vec<u32>) -> std::result::Result<Vec<u32>, String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ = self.release.lock().unwrap().recv();
        Ok(inputs)
    }
}

fn config(max_batch: usize, wait_ms: u64, max_queue: usize) -> Config {
    Config {
        max_batch,
        max_wait: Duration::from_millis(wait_ms),
        max_queue,
    }
}

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn full_batches_answer_each_caller_its_own_output() {
    let model = Arc::new(Doubler::default());
    // A long wait: only size can flush these batches.
    let (h, _join) = Handle::spawn(model.clone(), config(4, 5_000, 64), LIMIT).unwrap();
    let calls: Vec<_> = (100..108u32)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { (i, h.infer(i).await) })
        })
        .collect();
    for c in calls {
        let (i, out) = tokio::time::timeout(LIMIT, c).await.unwrap().unwrap();
        assert_eq!(out.unwrap(), i * 2);
    }
    assert_eq!(*model.sizes.lock().unwrap(), vec![4, 4]);
    let s = h.stats();
    assert_eq!((s.batches, s.requests, s.failed), (2, 8, 0));
    assert_eq!(s.batch_sizes[4], 2);
}

#[tokio::test]
async fn a_lone_request_goes_after_max_wait() {
    let model = Arc::new(Doubler::default());
    let (h, _join) = Handle::spawn(model.clone(), config(16, 20, 64), LIMIT).unwrap();
    let out = tokio::time::timeout(LIMIT, h.infer(21)).await.unwrap();
    assert_eq!(out.unwrap(), 42);
    assert_eq!(*model.sizes.lock().unwrap(), vec![1]);
    assert_eq!(h.stats().batch_sizes[1], 1);
}

#[tokio::test]
async fn model_failures_fail_the_whole_batch() {
    let model = Arc::new(Doubler::default());
    let (h, _join) = Handle::spawn(model, config(2, 5_000, 64), LIMIT).unwrap();
    let (a, b) = tokio::join!(h.infer(13), h.infer(1));
    assert_eq!(a, Err(ServeError::Model("unlucky".into())));
    assert_eq!(b, Err(ServeError::Model("unlucky".into())));
    let (a, b) = tokio::join!(h.infer(7), h.infer(1));
    assert!(matches!(a, Err(ServeError::Model(m)) if m.contains("0 outputs for 2 inputs")));
    assert!(b.is_err());
    let (a, b) = tokio::join!(h.infer(666), h.infer(2));
    assert!(matches!(a, Err(ServeError::Model(m)) if m.contains("panicked")));
    assert!(b.is_err());
    // The batcher survives all of it.
    let (a, b) = tokio::join!(h.infer(3), h.infer(4));
    assert_eq!((a.unwrap(), b.unwrap()), (6, 8));
    assert_eq!(h.stats().failed, 6);
}

#[tokio::test]
async fn a_full_queue_refuses_and_accepted_requests_still_finish() {
    let (release, rx) = std::sync::mpsc::channel();
    let model = Arc::new(Gate {
        started: AtomicUsize::new(0),
        release: Mutex::new(rx),
    });
    let (h, _join) = Handle::spawn(model.clone(), config(1, 0, 1), LIMIT).unwrap();
    // At most three can be held: one running, one in the core's queue, one in the channel.
    let calls: Vec<_> = (0..6u32)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.infer(i).await })
        })
        .collect();
    // Wait until refusals are decided: some arrive while the model is blocked.
    tokio::time::timeout(LIMIT, async {
        while h.stats().refused < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("at least three of six requests must be refused");
    for _ in 0..6 {
        let _ = release.send(());
    }
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        match tokio::time::timeout(LIMIT, c).await.unwrap().unwrap() {
            Ok(_) => ok += 1,
            Err(ServeError::Overloaded { .. }) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok + refused, 6);
    assert!(ok >= 1 && refused >= 3, "ok {ok}, refused {refused}");
    assert_eq!(h.stats().refused as usize, refused);
}

#[tokio::test]
async fn a_caller_past_its_deadline_gets_an_error() {
    let (release, rx) = std::sync::mpsc::channel();
    let model = Arc::new(Gate {
        started: AtomicUsize::new(0),
        release: Mutex::new(rx),
    });
    let (h, _join) =
        Handle::spawn(model.clone(), config(1, 0, 4), Duration::from_millis(50)).unwrap();
    let r = tokio::time::timeout(LIMIT, h.infer(1)).await.unwrap();
    assert!(
        matches!(r, Err(ServeError::DeadlineExceeded { .. })),
        "{r:?}"
    );
    let _ = release.send(());
}
