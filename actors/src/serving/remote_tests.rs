//! The whole path without a network: router → remote client → the serving codec → replica
//! service → batcher and generation engine, with some poll answers lost on the way.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;

use flotilla_protocol::openai::{CompletionRequest, ModelLimits, Prompt};
use flotilla_protocol::services::serving::{self, Endpoint, ReplicaLoad, StreamEnd};
use tokio::sync::mpsc;

use super::*;
use crate::serving::batcher::{self, BatchModel};
use crate::serving::relay::{Limits, Relay};
use crate::serving::replica::{Backend, ReplicaService};
use crate::serving::router::{Config, ReplicaSpec, RouteRequest, Router, StreamItem};
use crate::serving::scheduler::testing::{drive, Arrival, Bigram};
use crate::serving::scheduler::{self, SamplingParams, Scheduler, SeqRequest, StreamEvent};

const LIMIT: Duration = Duration::from_secs(10);
const EOS: u32 = 0;

/// Upper-cases bodies, a batch at a time.
struct Upper;

impl BatchModel for Upper {
    type Input = Vec<u8>;
    type Output = Vec<u8>;
    fn run(&self, inputs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
        Ok(inputs.into_iter().map(|b| b.to_ascii_uppercase()).collect())
    }
}

/// A replica: a batcher for `infer`, a continuous batching engine over a bigram model for
/// streams of token-id prompts (pieces are `<id>`).
struct TestBackend {
    batcher: batcher::Handle<Upper>,
    engine: scheduler::Handle,
}

#[async_trait::async_trait]
impl Backend for TestBackend {
    async fn infer(
        &self,
        _deployment: &str,
        _model_hash: &str,
        _endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Vec<u8>, ServingError> {
        self.batcher
            .infer(body.to_vec())
            .await
            .map_err(|e| e.to_serving_error())
    }

    async fn stream(
        &self,
        _deployment: &str,
        _model_hash: &str,
        _endpoint: Endpoint,
        body: &[u8],
    ) -> Result<(PieceStream, u32), ServingError> {
        let bad = |m: String| ServingError::new(ErrorKind::BadRequest, m);
        let req: CompletionRequest =
            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        let limits = ModelLimits {
            context_length: 256,
            max_inputs: 1,
            embedding_dim: None,
        };
        let params = req.validate(&limits).map_err(|e| bad(e.to_json()))?;
        let Prompt::Tokens(prompt) = req.prompt else {
            return Err(bad("token prompts only".into()));
        };
        let max_tokens = params
            .completion_budget(prompt.len() as u32, 256)
            .map_err(|e| bad(e.to_json()))?;
        let n = prompt.len() as u32;
        let mut seq = self
            .engine
            .generate(
                SeqRequest {
                    prompt,
                    max_tokens,
                    stop_tokens: vec![EOS],
                },
                SamplingParams::from_request(&params, 0),
            )
            .await
            .map_err(|e| e.to_serving_error())?;
        let (tx, rx) = mpsc::channel(4);
        // Detokenise; when the consumer goes away, dropping `seq` cancels the sequence.
        tokio::spawn(async move {
            while let Some(event) = seq.next().await {
                let item = match event {
                    StreamEvent::Token(t) => Ok(StreamItem::Piece(format!("<{t}>"))),
                    StreamEvent::Done(f) => Ok(StreamItem::End(StreamEnd {
                        finish_reason: f.reason,
                        prompt_tokens: f.prompt_tokens,
                        completion_tokens: f.completion_tokens,
                    })),
                    StreamEvent::Failed(m) => Err(ServingError::new(ErrorKind::Internal, m)),
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok((rx, n))
    }

    fn load(&self) -> ReplicaLoad {
        ReplicaLoad::default()
    }
}

/// Every message goes through the serving codec both ways; every `lose_every`-th poll answer
/// is lost after the replica handled it.
struct Loopback {
    replicas: BTreeMap<String, ReplicaService<TestBackend>>,
    lose_every: u32,
    polls: AtomicU32,
}

#[async_trait::async_trait]
impl ServingTransport for Loopback {
    async fn call(
        &self,
        replica: &ReplicaId,
        request: Request,
        deadline: Duration,
    ) -> Result<Response, ServingError> {
        let unavailable = |m: String| ServingError::new(ErrorKind::Unavailable, m);
        let service = self
            .replicas
            .get(&replica.0)
            .ok_or_else(|| unavailable(format!("no route to {replica}")))?;
        let frame = serving::encode_request(&request).map_err(|e| unavailable(e.to_string()))?;
        let decoded = serving::decode_request(&frame).map_err(|e| unavailable(e.to_string()))?;
        let is_poll = matches!(decoded.body, RequestBody::NextPieces { .. });
        let response = tokio::time::timeout(deadline, service.handle(decoded))
            .await
            .map_err(|_| ServingError::new(ErrorKind::DeadlineExceeded, "transport timeout"))?;
        if is_poll && self.lose_every > 0 {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(self.lose_every) {
                return Err(unavailable("connection reset".into()));
            }
        }
        let frame = serving::encode_response(&response).map_err(|e| unavailable(e.to_string()))?;
        serving::decode_response(&frame).map_err(|e| unavailable(e.to_string()))
    }
}

fn replica_service() -> (ReplicaService<TestBackend>, scheduler::Handle) {
    let (b, _) = batcher::Handle::spawn(
        Arc::new(Upper),
        batcher::Config {
            max_batch: 4,
            max_wait: Duration::from_millis(2),
            max_queue: 64,
        },
        LIMIT,
    )
    .unwrap();
    let (gen, _) = Bigram::new(32);
    let config = scheduler::Config {
        max_running: 8,
        token_budget: 2048,
        max_waiting: 64,
        stream_capacity: 4,
    };
    let (engine, _) = scheduler::Handle::spawn(gen, config, LIMIT).unwrap();
    let backend = TestBackend {
        batcher: b,
        engine: engine.clone(),
    };
    // Small buffers, so a stream nobody reads pauses its sequence instead of finishing it.
    let relay = Relay::new(Limits {
        max_buffered: 2,
        ..Limits::default()
    });
    (ReplicaService::new(backend, relay), engine)
}

type Setup = (
    Router<RemoteClient<Loopback>>,
    BTreeMap<String, scheduler::Handle>,
);

fn setup(lose_every: u32) -> Setup {
    let mut replicas = BTreeMap::new();
    let mut engines = BTreeMap::new();
    for id in ["r1", "r2"] {
        let (svc, engine) = replica_service();
        replicas.insert(id.to_string(), svc);
        engines.insert(id.to_string(), engine);
    }
    let transport = Loopback {
        replicas,
        lose_every,
        polls: AtomicU32::new(0),
    };
    let pull = PullConfig {
        wait_ms: 500,
        capacity: 4,
        max_lost_polls: 3,
    };
    let router = Router::new(RemoteClient::new(transport, pull), Config::default()).unwrap();
    let specs = engines
        .keys()
        .map(|id| ReplicaSpec {
            id: ReplicaId(id.clone()),
            capacity: 1,
            max_inflight: 16,
        })
        .collect();
    router.set_replicas("d", "h", specs);
    (router, engines)
}

fn route(body: String) -> RouteRequest {
    RouteRequest {
        deployment: "d".into(),
        model_hash: "h".into(),
        endpoint: Endpoint::Completions,
        body: body.into_bytes().into(),
        cache_key: None,
        deadline: LIMIT,
    }
}

fn prompt(i: u32) -> Vec<u32> {
    (0..3 + i % 3).map(|k| 1 + (i * 5 + k) % 31).collect()
}

#[tokio::test]
async fn non_streaming_requests_cross_the_codec_to_a_batcher() {
    let (router, _) = setup(0);
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let r = router.clone();
            tokio::spawn(async move { r.infer(route(format!("hello {i}"))).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let body = tokio::time::timeout(LIMIT, c)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&body[..], format!("HELLO {i}").as_bytes());
    }
}

#[tokio::test]
async fn streams_through_the_router_match_generation_one_at_a_time() {
    let (router, _) = setup(3);
    // Reference tokens: the scheduler core alone, one sequence at a time, greedy.
    let (mut gen, _) = Bigram::new(32);
    let mut core = Scheduler::new(scheduler::Config {
        max_running: 1,
        ..scheduler::Config::default()
    });
    let arrivals = (0..6u32)
        .map(|i| Arrival {
            at: 0,
            id: u64::from(i),
            req: SeqRequest {
                prompt: prompt(i),
                max_tokens: 12,
                stop_tokens: vec![EOS],
            },
            sampling: SamplingParams::greedy(),
        })
        .collect();
    let reference = drive(&mut core, &mut gen, arrivals, |_, _| {});

    let mut tasks = Vec::new();
    for i in 0..6u32 {
        let body = format!(
            r#"{{"model":"d","prompt":{:?},"max_tokens":12,"temperature":0,"stream":true}}"#,
            prompt(i)
        );
        let mut s = router.stream(route(body)).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut text = String::new();
            loop {
                match s.next().await {
                    Some(Ok(StreamItem::Piece(p))) => text.push_str(&p),
                    Some(Ok(StreamItem::End(end))) => return (text, end),
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (text, end) = tokio::time::timeout(LIMIT, t).await.unwrap().unwrap();
        let (tokens, finish) = &reference[&(i as u64)];
        let expected: String = tokens.iter().map(|t| format!("<{t}>")).collect();
        assert_eq!(text, expected, "stream {i}");
        assert_eq!(end.completion_tokens, finish.completion_tokens);
        assert_eq!(end.finish_reason, finish.reason);
    }
    assert_eq!(router.stats().streams, 6);
}

/// A one-token prompt from which greedy decoding of the test model never reaches EOS.
fn endless_prompt() -> Vec<u32> {
    let (gen, _) = Bigram::new(32);
    let argmax = |t: u32| {
        let l = gen.logits(t);
        (0..32u32)
            .max_by(|a, b| l[*a as usize].total_cmp(&l[*b as usize]).then(b.cmp(a)))
            .unwrap()
    };
    (1..32u32)
        .find(|&start| {
            let mut t = start;
            (0..300).all(|_| {
                t = argmax(t);
                t != EOS
            })
        })
        .map(|start| vec![start])
        .expect("the test model has a greedy path without EOS")
}

#[tokio::test]
async fn dropping_a_routed_stream_cancels_the_sequence_on_the_replica() {
    let (router, engines) = setup(0);
    let body = format!(
        r#"{{"model":"d","prompt":{:?},"max_tokens":200,"temperature":0,"stream":true}}"#,
        endless_prompt()
    );
    let mut s = router.stream(route(body)).await.unwrap();
    let replica = s.replica().0.clone();
    let first = tokio::time::timeout(LIMIT, s.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(StreamItem::Piece(_)))), "{first:?}");
    let stats = engines[&replica].stats();
    assert_eq!(stats.cancelled.load(Ordering::Relaxed), 0);
    drop(s);
    tokio::time::timeout(LIMIT, async {
        while stats.cancelled.load(Ordering::Relaxed) == 0
            || stats.running.load(Ordering::Relaxed) != 0
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the replica cancels the sequence");
    // Far fewer than 200 tokens were generated: buffers filled and the sequence paused.
    assert!(stats.tokens.load(Ordering::Relaxed) < 100);
    assert!(router.outstanding("d", "h").iter().all(|(_, n)| *n == 0));
}

#[tokio::test]
async fn replica_futures_can_be_awaited_by_request_handlers() {
    fn send<T: Send>(_: &T) {}
    let (svc, engine) = replica_service();
    let request = Request {
        id: flotilla_protocol::RequestId(1),
        body: RequestBody::Load,
    };
    let handled = svc.handle(request);
    send(&handled);
    let generate = engine.generate(
        SeqRequest {
            prompt: vec![1],
            max_tokens: 1,
            stop_tokens: vec![],
        },
        SamplingParams::greedy(),
    );
    send(&generate);
    let answer = tokio::time::timeout(LIMIT, handled).await.unwrap();
    assert_eq!(answer.body, Ok(ResponseBody::Load(ReplicaLoad::default())));
}
