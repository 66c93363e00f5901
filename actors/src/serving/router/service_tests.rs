use std::sync::atomic::AtomicBool;
use std::time::Duration;

use flotilla_protocol::openai::ChatCompletionRequest;
use flotilla_protocol::openai::FinishReason;
use flotilla_protocol::services::serving::{Endpoint, ErrorKind, StreamEnd};
use tokio::sync::{mpsc, watch};

use super::*;

const LIMIT: Duration = Duration::from_secs(10);

/// In-process replicas: answer `<replica>:<body>`, fail on demand, and hold requests at a gate
/// while `hold` is set.
struct Fake {
    calls: Mutex<Vec<String>>,
    failing: Mutex<BTreeMap<String, ErrorKind>>,
    hold: AtomicBool,
    gate: watch::Sender<bool>,
}

impl Fake {
    fn new() -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            failing: Mutex::new(BTreeMap::new()),
            hold: AtomicBool::new(false),
            gate: watch::channel(false).0,
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl ReplicaClient for Arc<Fake> {
    async fn infer(
        &self,
        replica: &ReplicaId,
        request: &RouteRequest,
        _deadline: Duration,
    ) -> std::result::Result<Body, ServingError> {
        self.calls.lock().unwrap().push(replica.0.clone());
        if self.hold.load(Ordering::SeqCst) {
            let mut open = self.gate.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        if let Some(kind) = self.failing.lock().unwrap().get(&replica.0) {
            return Err(ServingError::new(*kind, format!("{replica} fails")));
        }
        let mut out = format!("{replica}:").into_bytes();
        out.extend_from_slice(&request.body);
        Ok(out.into())
    }

    async fn stream(
        &self,
        replica: &ReplicaId,
        _request: &RouteRequest,
    ) -> std::result::Result<PieceStream, ServingError> {
        self.calls.lock().unwrap().push(replica.0.clone());
        if let Some(kind) = self.failing.lock().unwrap().get(&replica.0) {
            return Err(ServingError::new(*kind, "stream refused"));
        }
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(StreamItem::Piece("Hel".into()))).unwrap();
        tx.try_send(Ok(StreamItem::Piece("lo".into()))).unwrap();
        tx.try_send(Ok(StreamItem::End(StreamEnd {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 3,
            completion_tokens: 2,
        })))
        .unwrap();
        Ok(rx)
    }
}

fn spec(id: &str, capacity: u32, max_inflight: u32) -> ReplicaSpec {
    ReplicaSpec {
        id: ReplicaId(id.into()),
        capacity,
        max_inflight,
    }
}

fn router(replicas: Vec<ReplicaSpec>) -> (Router<Arc<Fake>>, Arc<Fake>) {
    let fake = Arc::new(Fake::new());
    let r = Router::new(fake.clone(), Config::default()).unwrap();
    r.set_replicas("d", "h1", replicas);
    (r, fake)
}

fn request(body: &str, cache_key: Option<CacheKey>) -> RouteRequest {
    RouteRequest {
        deployment: "d".into(),
        model_hash: "h1".into(),
        endpoint: Endpoint::ChatCompletions,
        body: body.as_bytes().into(),
        cache_key,
        deadline: LIMIT,
    }
}

fn text(b: &Body) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

async fn wait_until(mut pred: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition not reached within the deadline");
}

#[tokio::test]
async fn deterministic_requests_are_cached_per_model_version() {
    let (r, fake) = router(vec![spec("a", 1, 8)]);
    r.set_replicas("d", "h2", vec![spec("b", 1, 8)]);
    let chat: ChatCompletionRequest = serde_json::from_str(
        r#"{"model":"d","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
    )
    .unwrap();
    assert!(chat.is_deterministic());
    let first = r
        .infer(request("q", Some(chat.cache_key("h1"))))
        .await
        .unwrap();
    let again = r
        .infer(request("q", Some(chat.cache_key("h1"))))
        .await
        .unwrap();
    assert_eq!(text(&first), "a:q");
    assert_eq!(first, again);
    assert_eq!(
        fake.calls(),
        vec!["a"],
        "the second answer came from the cache"
    );
    // The same request for another model version is another entry.
    let mut v2 = request("q", Some(chat.cache_key("h2")));
    v2.model_hash = "h2".into();
    assert_eq!(text(&r.infer(v2).await.unwrap()), "b:q");
    // Requests without a key are never cached.
    r.infer(request("q", None)).await.unwrap();
    r.infer(request("q", None)).await.unwrap();
    assert_eq!(fake.calls().len(), 4);
    let s = r.stats();
    assert_eq!((s.requests, s.cache_hits, s.cache_misses), (5, 1, 2));
    assert_eq!(r.cache_size().0, 2);
}

#[tokio::test]
async fn identical_requests_in_flight_run_once() {
    let (r, fake) = router(vec![spec("a", 1, 64), spec("b", 1, 64)]);
    fake.hold.store(true, Ordering::SeqCst);
    let key = CacheKey([9; 32]);
    let n = 10;
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.infer(request("same", Some(key))).await })
        })
        .collect();
    wait_until(|| r.stats().coalesced == n - 1).await;
    assert_eq!(fake.calls().len(), 1, "one execution for {n} requests");
    fake.gate.send_replace(true);
    for c in calls {
        let body = tokio::time::timeout(LIMIT, c)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(text(&body), "a:same");
    }
    assert_eq!(fake.calls().len(), 1);
    // Distinct keys are not coalesced.
    fake.hold.store(false, Ordering::SeqCst);
    r.infer(request("other", Some(CacheKey([8; 32]))))
        .await
        .unwrap();
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test]
async fn load_follows_capacity_and_is_released() {
    let (r, fake) = router(vec![spec("small", 1, 64), spec("big", 3, 64)]);
    fake.hold.store(true, Ordering::SeqCst);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.infer(request(&format!("{i}"), None)).await })
        })
        .collect();
    wait_until(|| fake.calls().len() == 8).await;
    let mut by_replica = r.outstanding("d", "h1");
    by_replica.sort();
    assert_eq!(
        by_replica,
        vec![(ReplicaId("big".into()), 6), (ReplicaId("small".into()), 2)]
    );
    fake.gate.send_replace(true);
    for c in calls {
        tokio::time::timeout(LIMIT, c)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert!(r.outstanding("d", "h1").iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn a_failed_request_is_retried_once_on_another_replica() {
    let (r, fake) = router(vec![spec("a", 2, 8), spec("b", 1, 8)]);
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::Internal);
    let body = r.infer(request("x", None)).await.unwrap();
    assert_eq!(text(&body), "b:x");
    assert_eq!(fake.calls(), vec!["a", "b"]);
    assert_eq!(r.stats().retries, 1);

    // Both fail: two attempts, then the error.
    fake.failing
        .lock()
        .unwrap()
        .insert("b".into(), ErrorKind::Unavailable);
    let err = r.infer(request("x", None)).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Replica { ref replica, .. } if replica == "b"),
        "{err:?}"
    );
    assert_eq!(fake.calls().len(), 4);
    assert_eq!(r.stats().failed, 1);

    // A bad request is the client's fault: not retried.
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::BadRequest);
    r.infer(request("x", None)).await.unwrap_err();
    assert_eq!(fake.calls().len(), 5);
    assert_eq!(r.stats().retries, 2);
}

#[tokio::test]
async fn a_lone_replica_failure_is_reported_without_a_retry() {
    let (r, fake) = router(vec![spec("a", 1, 8)]);
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::Internal);
    let err = r.infer(request("x", None)).await.unwrap_err();
    assert_eq!(err.to_api_error().status, 500);
    assert_eq!(fake.calls(), vec!["a"]);
    assert_eq!(r.stats().retries, 0);
}

#[tokio::test]
async fn streams_are_never_retried_and_hold_their_place() {
    let (r, fake) = router(vec![spec("a", 2, 8), spec("b", 1, 8)]);
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::Internal);
    let err = r.stream(request("s", None)).await.unwrap_err();
    assert!(matches!(err, ServeError::Replica { .. }));
    assert_eq!(fake.calls(), vec!["a"]);
    fake.failing.lock().unwrap().clear();
    let mut s = r.stream(request("s", None)).await.unwrap();
    assert_eq!(s.replica().0, "a");
    assert!(r
        .outstanding("d", "h1")
        .contains(&(ReplicaId("a".into()), 1)));
    let mut text = String::new();
    loop {
        match tokio::time::timeout(LIMIT, s.next()).await.unwrap() {
            Some(Ok(StreamItem::Piece(p))) => text.push_str(&p),
            Some(Ok(StreamItem::End(end))) => {
                assert_eq!(end.completion_tokens, 2);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(text, "Hello");
    drop(s);
    assert!(r.outstanding("d", "h1").iter().all(|(_, n)| *n == 0));
    assert_eq!(r.stats().streams, 2);
}

#[tokio::test]
async fn overload_is_refused_with_a_retry_hint() {
    let (r, fake) = router(vec![spec("a", 1, 1), spec("b", 1, 1)]);
    fake.hold.store(true, Ordering::SeqCst);
    let held: Vec<_> = (0..2)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.infer(request(&format!("{i}"), None)).await })
        })
        .collect();
    wait_until(|| fake.calls().len() == 2).await;
    let err = r.infer(request("late", None)).await.unwrap_err();
    assert_eq!(
        err,
        ServeError::Overloaded {
            retry_after: Duration::from_secs(1)
        }
    );
    let api = err.to_api_error();
    assert_eq!((api.status, api.retry_after_s), (429, Some(1)));
    assert_eq!(r.stats().rejected, 1);
    assert_eq!(
        fake.calls().len(),
        2,
        "the refused request reached no replica"
    );
    fake.gate.send_replace(true);
    for h in held {
        tokio::time::timeout(LIMIT, h)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    r.infer(request("now", None)).await.unwrap();
}

#[tokio::test]
async fn the_router_bound_refuses_too() {
    let fake = Arc::new(Fake::new());
    let config = Config {
        max_outstanding: 1,
        ..Config::default()
    };
    let r = Router::new(fake.clone(), config).unwrap();
    r.set_replicas("d", "h1", vec![spec("a", 1, 100)]);
    fake.hold.store(true, Ordering::SeqCst);
    let r2 = r.clone();
    let held = tokio::spawn(async move { r2.infer(request("1", None)).await });
    wait_until(|| fake.calls().len() == 1).await;
    assert!(matches!(
        r.infer(request("2", None)).await,
        Err(ServeError::Overloaded { .. })
    ));
    fake.gate.send_replace(true);
    tokio::time::timeout(LIMIT, held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn deadlines_end_the_wait() {
    let (r, fake) = router(vec![spec("a", 1, 8)]);
    fake.hold.store(true, Ordering::SeqCst);
    let mut req = request("slow", None);
    req.deadline = Duration::from_millis(30);
    let err = tokio::time::timeout(LIMIT, r.infer(req.clone()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ServeError::DeadlineExceeded { .. }));
    // Coalesced and cached requests honour it as well.
    req.cache_key = Some(CacheKey([1; 32]));
    let err = tokio::time::timeout(LIMIT, r.infer(req))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ServeError::DeadlineExceeded { .. }));
    assert_eq!(r.stats().deadline_exceeded, 2);
    assert_eq!(err.to_api_error().status, 504);
    // Once the slow requests give up, their places are free again.
    fake.gate.send_replace(true);
    wait_until(|| r.outstanding("d", "h1")[0].1 == 0).await;
}

#[tokio::test]
async fn unknown_deployments_and_replica_set_changes() {
    let (r, _fake) = router(vec![spec("a", 1, 8)]);
    let mut req = request("x", None);
    req.deployment = "nope".into();
    assert!(matches!(
        r.infer(req).await,
        Err(ServeError::NoReplica { .. })
    ));
    r.set_replicas("d", "h1", vec![spec("c", 1, 8)]);
    assert_eq!(text(&r.infer(request("x", None)).await.unwrap()), "c:x");
    r.set_replicas("d", "h1", vec![]);
    assert!(matches!(
        r.infer(request("x", None)).await,
        Err(ServeError::NoReplica { .. })
    ));
}

#[test]
fn router_futures_can_be_awaited_by_http_handlers() {
    // axum needs Send futures; this fails to compile if a lock is held across an await.
    fn send<T: Send + 'static>(_: &T) {}
    let (r, _) = router(vec![spec("a", 1, 8)]);
    let r1 = r.clone();
    let infer = async move { r1.infer(request("x", None)).await };
    send(&infer);
    let stream = async move {
        r.stream(request("x", None))
            .await
            .map(|s| s.replica().clone())
    };
    send(&stream);
}

fn request_to(deployment: &str, body: &str, cache_key: Option<CacheKey>) -> RouteRequest {
    RouteRequest {
        deployment: deployment.into(),
        ..request(body, cache_key)
    }
}

#[tokio::test]
async fn counters_are_kept_per_deployment() {
    let (r, fake) = router(vec![spec("a", 1, 64)]);
    r.set_replicas("e", "h1", vec![spec("b", 1, 64)]);
    // "d": a miss, then a hit.
    let kd = CacheKey([1; 32]);
    r.infer(request_to("d", "q", Some(kd))).await.unwrap();
    r.infer(request_to("d", "q", Some(kd))).await.unwrap();
    // "e": five identical requests at once, one execution.
    fake.hold.store(true, Ordering::SeqCst);
    let ke = CacheKey([2; 32]);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.infer(request_to("e", "same", Some(ke))).await })
        })
        .collect();
    wait_until(|| r.stats_for("e").coalesced == 4).await;
    fake.gate.send_replace(true);
    for c in calls {
        let body = tokio::time::timeout(LIMIT, c)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(text(&body), "b:same");
    }
    // A stream to "e", and a request for a deployment without a pool.
    fake.hold.store(false, Ordering::SeqCst);
    drop(r.stream(request_to("e", "s", None)).await.unwrap());
    assert!(matches!(
        r.infer(request_to("nope", "x", None)).await,
        Err(ServeError::NoReplica { .. })
    ));

    let d = r.stats_for("d");
    assert_eq!(
        d,
        RouterStatsSnapshot {
            requests: 2,
            cache_hits: 1,
            cache_misses: 1,
            ..Default::default()
        }
    );
    let e = r.stats_for("e");
    assert_eq!(
        e,
        RouterStatsSnapshot {
            requests: 6,
            streams: 1,
            cache_misses: 5,
            coalesced: 4,
            ..Default::default()
        }
    );
    // The node's totals hold everything, the request without a pool included; that one
    // has no entry of its own.
    let node = r.stats();
    assert_eq!((node.requests, node.failed), (9, 1));
    assert_eq!(node.coalesced, d.coalesced + e.coalesced);
    assert_eq!(node.cache_hits, d.cache_hits + e.cache_hits);
    assert_eq!(r.stats_for("nope"), RouterStatsSnapshot::default());
    assert_eq!(
        r.deployment_stats().into_keys().collect::<Vec<_>>(),
        vec!["d", "e"]
    );
    // Per replica: what each was sent.
    let attempts = |dep: &str| -> Vec<(String, u64)> {
        r.replica_stats(dep)
            .into_iter()
            .map(|(id, s)| (id.0, s.attempts))
            .collect()
    };
    assert_eq!(attempts("d"), vec![("a".into(), 1)]);
    assert_eq!(attempts("e"), vec![("b".into(), 2)]);
}

#[tokio::test]
async fn failures_are_counted_under_the_replica_that_failed() {
    let (r, fake) = router(vec![spec("a", 2, 8), spec("b", 1, 8)]);
    r.set_replicas("e", "h1", vec![spec("c", 1, 8)]);
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::Internal);
    // "a" fails, the retry on "b" answers.
    assert_eq!(
        text(&r.infer(request_to("d", "x", None)).await.unwrap()),
        "b:x"
    );
    // A stream is not retried: "a" fails it.
    r.stream(request_to("d", "s", None)).await.unwrap_err();
    // "e"'s lone replica fails.
    fake.failing
        .lock()
        .unwrap()
        .insert("c".into(), ErrorKind::Unavailable);
    r.infer(request_to("e", "x", None)).await.unwrap_err();

    let replicas = |dep: &str| -> Vec<(String, ReplicaStatsSnapshot)> {
        r.replica_stats(dep)
            .into_iter()
            .map(|(id, s)| (id.0, s))
            .collect()
    };
    let snap = |attempts, failures, retried_away| ReplicaStatsSnapshot {
        attempts,
        failures,
        retried_away,
    };
    assert_eq!(
        replicas("d"),
        vec![("a".into(), snap(2, 2, 1)), ("b".into(), snap(1, 0, 0))]
    );
    assert_eq!(replicas("e"), vec![("c".into(), snap(1, 1, 0))]);
    let (d, e) = (r.stats_for("d"), r.stats_for("e"));
    assert_eq!((d.requests, d.retries, d.failed), (2, 1, 1));
    assert_eq!((e.requests, e.retries, e.failed), (1, 0, 1));
    assert_eq!((r.stats().retries, r.stats().failed), (1, 2));
}

#[tokio::test]
async fn counters_follow_the_pools() {
    let (r, fake) = router(vec![spec("a", 1, 8), spec("b", 1, 8)]);
    fake.failing
        .lock()
        .unwrap()
        .insert("a".into(), ErrorKind::Internal);
    r.infer(request_to("d", "x", None)).await.unwrap();
    r.infer(request_to("d", "y", None)).await.unwrap();
    let before = r.replica_stats("d");
    assert_eq!(before.len(), 2);
    // A new model version on the same replicas: the replicas keep their counters, and the
    // deployment its own, once the old version's pool goes.
    r.set_replicas("d", "h2", vec![spec("b", 1, 8)]);
    r.set_replicas("d", "h1", vec![]);
    let b = ReplicaId("b".into());
    assert_eq!(
        r.replica_stats("d").into_iter().collect::<Vec<_>>(),
        vec![(b.clone(), before[&b])],
        "a replica no pool names is dropped; the others keep their counters"
    );
    assert_eq!(r.stats_for("d").requests, 2);
    // The last pool gone: the deployment's counters go too; the node's stay.
    r.set_replicas("d", "h2", vec![]);
    assert!(r.deployment_stats().is_empty());
    assert!(r.replica_stats("d").is_empty());
    assert_eq!(r.stats_for("d"), RouterStatsSnapshot::default());
    assert_eq!(r.stats().requests, 2);
    // Requests for deployments without a pool add no entry, however many names they use.
    for i in 0..100 {
        let _ = r.infer(request_to(&format!("x{i}"), "x", None)).await;
    }
    assert!(r.deployment_stats().is_empty());
    assert_eq!(r.stats().requests, 102);
}
