//! This node's replicas and the [`Backend`] that answers them: the same code answers requests
//! from this node's router (in process) and from other nodes' routers (over
//! `/flotilla/serving/1`), so a local and a remote replica give the same bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_actors::serving::batcher::{self, BatchStatsSnapshot};
use flotilla_actors::serving::replica::Backend;
use flotilla_actors::serving::router::{PieceStream, StreamItem};
use flotilla_actors::serving::scheduler::{self, SamplingParams, SeqRequest, StreamEvent};
use flotilla_actors::serving::stop::{Fed, StopMatcher};
use flotilla_actors::serving::ServeError;
use flotilla_protocol::openai::classify::Classification;
use flotilla_protocol::openai::embeddings::EmbeddingUsage;
use flotilla_protocol::openai::{
    ApiError, ChatCompletion, ChatCompletionRequest, ClassifyRequest, ClassifyResponse, Completion,
    CompletionRequest, EmbeddingRequest, EmbeddingResponse, EncodingFormat, GenerationParams,
    Input, Usage,
};
use flotilla_protocol::services::serving::{
    Endpoint, ErrorKind, ReplicaLoad, ServingError, StreamEnd,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::models::artifacts::{ModelKind, ServedModel};
use crate::models::classifier::TextClassifier;
use crate::models::embedder::BertEmbedder;
use crate::models::gpt::{CharGpt, GptGenerator};

/// Pieces buffered between a sequence and its consumer.
const PIECE_BUFFER: usize = 64;
/// How long a sequence's submission or a batch waits at most.
const ENGINE_DEADLINE: Duration = Duration::from_secs(60);

/// How a replica runs its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSettings {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub max_inflight: u32,
}

enum Engine {
    Embed {
        batcher: batcher::Handle<BertEmbedder>,
        model: Arc<BertEmbedder>,
    },
    Gen {
        engine: scheduler::Handle,
        gpt: Arc<CharGpt>,
    },
    Classify {
        batcher: batcher::Handle<TextClassifier>,
        model: Arc<TextClassifier>,
    },
}

/// A loaded model, before its engine starts.
enum Loaded {
    Embed(Arc<BertEmbedder>),
    Gen(Arc<CharGpt>),
    Classify(Arc<TextClassifier>),
}

/// One replica running on this node.
pub struct LocalReplica {
    pub deployment: String,
    pub model: ServedModel,
    pub settings: ReplicaSettings,
    engine: Engine,
    /// Requests that reached the model (after the router's cache and coalescing).
    pub executions: AtomicU64,
    outstanding: AtomicU32,
    task: JoinHandle<()>,
}

impl Drop for LocalReplica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for LocalReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalReplica")
            .field("deployment", &self.deployment)
            .field("model", &self.model.hash)
            .finish()
    }
}

impl LocalReplica {
    /// Verifies the artifacts against the catalog's hashes, loads the model and starts its
    /// batcher or generation engine. Loading runs on a blocking thread.
    pub async fn start(
        deployment: &str,
        model: ServedModel,
        settings: ReplicaSettings,
    ) -> anyhow::Result<LocalReplica> {
        let m = model.clone();
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            crate::models::artifacts::verify(&m)?;
            Ok(match m.kind {
                ModelKind::Embedding => Loaded::Embed(Arc::new(BertEmbedder::load(&m.path)?)),
                ModelKind::Generation => Loaded::Gen(CharGpt::load(&m.path, &m.hash)?),
                ModelKind::Classifier => Loaded::Classify(Arc::new(TextClassifier::load(&m.path)?)),
            })
        })
        .await??;
        let batching = batcher::Config {
            max_batch: settings.max_batch,
            max_wait: settings.max_wait,
            max_queue: (settings.max_inflight as usize).max(settings.max_batch) * 4,
        };
        // The engine's span (its role) sits under the deployment's, under the node's.
        let span = tracing::info_span!("deployment", deployment, model = %model.hash);
        let (engine, task) = span.in_scope(|| -> anyhow::Result<_> {
            Ok(match loaded {
                Loaded::Embed(model) => {
                    let (batcher, task) =
                        batcher::Handle::spawn(model.clone(), batching, ENGINE_DEADLINE)?;
                    (Engine::Embed { batcher, model }, task)
                }
                Loaded::Classify(model) => {
                    let (batcher, task) =
                        batcher::Handle::spawn(model.clone(), batching, ENGINE_DEADLINE)?;
                    (Engine::Classify { batcher, model }, task)
                }
                Loaded::Gen(gpt) => {
                    let config = scheduler::Config {
                        max_running: settings.max_batch,
                        token_budget: (settings.max_batch * gpt.context()) as u32,
                        max_waiting: (settings.max_inflight as usize).max(1) * 2,
                        stream_capacity: PIECE_BUFFER,
                    };
                    let (engine, task) = scheduler::Handle::spawn(
                        GptGenerator::new(gpt.clone()),
                        config,
                        ENGINE_DEADLINE,
                    )?;
                    (Engine::Gen { engine, gpt }, task)
                }
            })
        })?;
        Ok(LocalReplica {
            deployment: deployment.to_string(),
            model,
            settings,
            engine,
            executions: AtomicU64::new(0),
            outstanding: AtomicU32::new(0),
            task,
        })
    }

    /// The batcher's counters (embedding replicas).
    pub fn batch_stats(&self) -> Option<BatchStatsSnapshot> {
        match &self.engine {
            Engine::Embed { batcher, .. } => Some(batcher.stats()),
            Engine::Classify { batcher, .. } => Some(batcher.stats()),
            Engine::Gen { .. } => None,
        }
    }

    /// Generation counters: (decoding steps, tokens, running, waiting).
    pub fn engine_stats(&self) -> Option<(u64, u64, u64, u64)> {
        match &self.engine {
            Engine::Gen { engine, .. } => {
                let s = engine.stats();
                Some((
                    s.steps.load(Ordering::Relaxed),
                    s.tokens.load(Ordering::Relaxed),
                    s.running.load(Ordering::Relaxed),
                    s.waiting.load(Ordering::Relaxed),
                ))
            }
            Engine::Embed { .. } | Engine::Classify { .. } => None,
        }
    }

    /// Sequences cancelled or abandoned by their consumer (generation replicas).
    pub fn cancelled(&self) -> Option<u64> {
        match &self.engine {
            Engine::Gen { engine, .. } => Some(engine.stats().cancelled.load(Ordering::Relaxed)),
            Engine::Embed { .. } | Engine::Classify { .. } => None,
        }
    }

    /// Requests accepted and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// Counts a request as outstanding while it lives.
struct Busy(Arc<LocalReplica>);
impl Busy {
    fn new(r: Arc<LocalReplica>) -> Self {
        r.outstanding.fetch_add(1, Ordering::Relaxed);
        r.executions.fetch_add(1, Ordering::Relaxed);
        Busy(r)
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replicas of this node, by deployment, and the artifact store peers fetch from.
#[derive(Clone, Default)]
pub struct LocalBackend {
    replicas: Arc<RwLock<BTreeMap<String, Arc<LocalReplica>>>>,
    /// Serves blobs to peers; `None` serves none.
    blobs: Option<Arc<crate::models::blob_server::BlobServer>>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").finish_non_exhaustive()
    }
}

fn bad(e: ApiError) -> ServingError {
    ServingError::new(ErrorKind::BadRequest, e.to_json())
}

fn serve_err(e: ServeError) -> ServingError {
    e.to_serving_error()
}

/// The token ids of an input given as text or texts (an input of token ids gives none); a text
/// the model cannot encode is the client's error, naming `input`.
fn encode_texts(
    input: &Input,
    encode: impl Fn(&str) -> Result<Vec<u32>, String>,
) -> Result<Vec<Vec<u32>>, ServingError> {
    let texts: &[String] = match input {
        Input::Text(t) => std::slice::from_ref(t),
        Input::Texts(v) => v,
        Input::Tokens(_) | Input::TokenLists(_) => &[],
    };
    texts
        .iter()
        .map(|t| encode(t))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(ApiError::invalid_request(e, Some("input"))))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ServingError> {
    serde_json::from_slice(body).map_err(|e| bad(ApiError::from_json_error(&e)))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ServingError> {
    serde_json::to_vec(v).map_err(|e| ServingError::new(ErrorKind::Internal, e.to_string()))
}

/// The text a chat prompt becomes for a model without a chat template: one `role: content`
/// line per message, then the assistant's turn.
pub fn chat_prompt(req: &ChatCompletionRequest) -> String {
    let mut s = String::new();
    for m in &req.messages {
        s.push_str(m.role.as_str());
        s.push_str(": ");
        s.push_str(&m.text().unwrap_or_default());
        s.push('\n');
    }
    s.push_str("assistant: ");
    s
}

impl LocalBackend {
    /// The replica of `deployment`, if this node runs one.
    pub fn get(&self, deployment: &str) -> Option<Arc<LocalReplica>> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(deployment)
            .cloned()
    }

    /// The replicas of this node as its heartbeat announces them ready:
    /// `<deployment>/<model hash>` (a replica is inserted only once its model is loaded).
    pub fn ready_keys(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|r| flotilla_protocol::NodeInfo::ready_key(&r.deployment, &r.model.hash))
            .collect()
    }

    /// Every replica on this node.
    pub fn all(&self) -> Vec<Arc<LocalReplica>> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Installs (or replaces) the replica of a deployment.
    pub fn insert(&self, replica: LocalReplica) {
        self.replicas
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(replica.deployment.clone(), Arc::new(replica));
    }

    /// A backend whose artifact store peers may fetch from.
    pub fn with_blobs(server: Arc<crate::models::blob_server::BlobServer>) -> Self {
        Self {
            replicas: Arc::default(),
            blobs: Some(server),
        }
    }

    /// Stops the replica of `deployment`.
    pub fn remove(&self, deployment: &str) {
        self.replicas
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment);
    }

    fn replica(
        &self,
        deployment: &str,
        model_hash: &str,
    ) -> Result<Arc<LocalReplica>, ServingError> {
        let r = self.get(deployment).ok_or_else(|| {
            ServingError::new(
                ErrorKind::NotFound,
                format!("no replica of {deployment} here"),
            )
        })?;
        if r.model.hash != model_hash {
            return Err(ServingError::new(
                ErrorKind::WrongModelVersion,
                format!("{deployment} runs {} here, not {model_hash}", r.model.hash),
            ));
        }
        Ok(r)
    }

    async fn embeddings(&self, r: Arc<LocalReplica>, body: &[u8]) -> Result<Vec<u8>, ServingError> {
        let Engine::Embed { batcher, model } = &r.engine else {
            return Err(bad(ApiError::invalid_request(
                "this model does not give embeddings",
                Some("model"),
            )));
        };
        let req: EmbeddingRequest = parse(body)?;
        req.validate(&r.model.limits).map_err(bad)?;
        let inputs: Vec<Vec<u32>> = match &req.input {
            Input::Tokens(t) => vec![t.clone()],
            Input::TokenLists(v) => v.clone(),
            texts => encode_texts(texts, |t| model.encode(t))?,
        };
        let tokens: usize = inputs.iter().map(Vec::len).sum();
        let runs = inputs.into_iter().map(|i| batcher.infer(i));
        let vectors = futures::future::try_join_all(runs)
            .await
            .map_err(serve_err)?;
        let format = req.encoding_format.unwrap_or(EncodingFormat::Float);
        to_json(&EmbeddingResponse::new(
            req.model.clone(),
            vectors,
            format,
            tokens as u32,
        ))
    }

    async fn classify(&self, r: Arc<LocalReplica>, body: &[u8]) -> Result<Vec<u8>, ServingError> {
        let Engine::Classify { batcher, model } = &r.engine else {
            return Err(bad(ApiError::invalid_request(
                "this deployment's model has no classifier head",
                Some("model"),
            )));
        };
        let req: ClassifyRequest = parse(body)?;
        let n = req.input.len();
        if n == 0 || n > r.model.limits.max_inputs as usize {
            return Err(bad(ApiError::invalid_request(
                format!(
                    "input must hold 1 to {} texts, it holds {n}",
                    r.model.limits.max_inputs
                ),
                Some("input"),
            )));
        }
        let vocab = model.labels().len() as u32;
        let inputs: Vec<Vec<u32>> = match &req.input {
            Input::Tokens(_) | Input::TokenLists(_) => {
                return Err(bad(ApiError::unsupported(
                    "input",
                    "a classifier takes texts, not token ids",
                )))
            }
            texts => encode_texts(texts, |t| model.encode(t))?,
        };
        let top_k = req.top_k.unwrap_or(1).clamp(1, vocab.max(1)) as usize;
        let tokens: usize = inputs.iter().map(Vec::len).sum();
        let runs = inputs.into_iter().map(|i| batcher.infer(i));
        let probs = futures::future::try_join_all(runs)
            .await
            .map_err(serve_err)?;
        let data = probs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let scores: Vec<(String, f32)> = model
                    .labels()
                    .iter()
                    .cloned()
                    .zip(p.iter().copied())
                    .collect();
                Classification::from_scores(i as u32, &scores, top_k).ok_or_else(|| {
                    ServingError::new(ErrorKind::Internal, "the model has no labels")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        to_json(&ClassifyResponse {
            object: "list".to_string(),
            model: req.model.clone(),
            data,
            usage: EmbeddingUsage {
                prompt_tokens: tokens as u32,
                total_tokens: tokens as u32,
            },
        })
    }

    /// Validates a generation request and starts it: its pieces, prompt tokens and model name.
    async fn generate(
        &self,
        r: Arc<LocalReplica>,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<(PieceStream, u32, String), ServingError> {
        let Engine::Gen { engine, gpt } = &r.engine else {
            return Err(bad(ApiError::invalid_request(
                "this model does not generate text",
                Some("model"),
            )));
        };
        let (prompt, params, model): (String, GenerationParams, String) = match endpoint {
            Endpoint::ChatCompletions => {
                let req: ChatCompletionRequest = parse(body)?;
                let p = req.validate(&r.model.limits).map_err(bad)?;
                (chat_prompt(&req), p, req.model)
            }
            Endpoint::Completions => {
                let req: CompletionRequest = parse(body)?;
                let p = req.validate(&r.model.limits).map_err(bad)?;
                let text = match req.prompt {
                    flotilla_protocol::openai::Prompt::Text(t) => t,
                    flotilla_protocol::openai::Prompt::Texts(mut v) if v.len() == 1 => v.remove(0),
                    _ => {
                        return Err(bad(ApiError::unsupported(
                            "prompt",
                            "only one text prompt per request is supported",
                        )))
                    }
                };
                (text, p, req.model)
            }
            _ => {
                return Err(bad(ApiError::invalid_request(
                    "this model generates text: use /v1/completions or /v1/chat/completions",
                    Some("model"),
                )))
            }
        };
        let ids = gpt.tokenizer.encode(&prompt).map_err(|e| {
            bad(ApiError::invalid_request(
                format!("the prompt cannot be encoded by this model's vocabulary: {e}"),
                Some("messages"),
            ))
        })?;
        let prompt_tokens = ids.len() as u32;
        let max_tokens = params
            .completion_budget(prompt_tokens, r.model.limits.context_length)
            .map_err(bad)?;
        let sampling = SamplingParams::from_request(&params, rand::random());
        let seq = engine
            .generate(
                SeqRequest {
                    prompt: ids,
                    max_tokens,
                    stop_tokens: Vec::new(),
                },
                sampling,
            )
            .await
            .map_err(serve_err)?;
        let (tx, rx) = mpsc::channel(PIECE_BUFFER);
        flotilla_actors::task::spawn(pump(
            seq,
            gpt.clone(),
            params.stop,
            prompt_tokens,
            tx,
            Busy::new(r.clone()),
        ));
        Ok((rx, prompt_tokens, model))
    }
}

/// Turns a sequence's tokens into text pieces, applying the client's stop strings. Ends as soon
/// as the consumer goes away: dropping `seq` frees the sequence's slot in the engine.
async fn pump(
    mut seq: scheduler::SeqStream,
    gpt: Arc<CharGpt>,
    stops: Vec<String>,
    prompt_tokens: u32,
    tx: mpsc::Sender<Result<StreamItem, ServingError>>,
    _busy: Busy,
) {
    let mut stop = StopMatcher::new(stops);
    let mut completion = 0u32;
    loop {
        let item = tokio::select! {
            ev = seq.next() => ev,
            _ = tx.closed() => return,
        };
        let out = match item {
            Some(StreamEvent::Token(t)) => {
                completion += 1;
                let piece = gpt.tokenizer.decode(&[t]).unwrap_or_default();
                match stop.push(&piece) {
                    Fed::Text(t) if t.is_empty() => continue,
                    Fed::Text(t) => Ok(StreamItem::Piece(t)),
                    Fed::Stopped(t) => {
                        if !t.is_empty() && tx.send(Ok(StreamItem::Piece(t))).await.is_err() {
                            return;
                        }
                        let end = StreamEnd {
                            finish_reason: flotilla_protocol::openai::FinishReason::Stop,
                            prompt_tokens,
                            completion_tokens: completion,
                        };
                        let _ = tx.send(Ok(StreamItem::End(end))).await;
                        return;
                    }
                }
            }
            Some(StreamEvent::Done(f)) => {
                let rest = stop.finish();
                if !rest.is_empty() && tx.send(Ok(StreamItem::Piece(rest))).await.is_err() {
                    return;
                }
                let end = StreamEnd {
                    finish_reason: f.reason,
                    prompt_tokens: f.prompt_tokens,
                    completion_tokens: f.completion_tokens,
                };
                let _ = tx.send(Ok(StreamItem::End(end))).await;
                return;
            }
            Some(StreamEvent::Failed(e)) => Err(ServingError::new(ErrorKind::Internal, e)),
            None => Err(ServingError::new(
                ErrorKind::Unavailable,
                "the generation engine stopped",
            )),
        };
        let last = out.is_err();
        if tx.send(out).await.is_err() || last {
            return;
        }
    }
}

/// Reads a whole piece stream: (text, end).
pub async fn collect(mut rx: PieceStream) -> Result<(String, StreamEnd), ServingError> {
    let mut text = String::new();
    while let Some(item) = rx.recv().await {
        match item? {
            StreamItem::Piece(p) => text.push_str(&p),
            StreamItem::End(end) => return Ok((text, end)),
        }
    }
    Err(ServingError::new(
        ErrorKind::Unavailable,
        "the stream ended without an end",
    ))
}

#[async_trait::async_trait]
impl Backend for LocalBackend {
    async fn infer(
        &self,
        deployment: &str,
        model_hash: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<Vec<u8>, ServingError> {
        let r = self.replica(deployment, model_hash)?;
        match endpoint {
            Endpoint::Embeddings => {
                let _busy = Busy::new(r.clone());
                self.embeddings(r, body).await
            }
            Endpoint::Classify => {
                let _busy = Busy::new(r.clone());
                self.classify(r, body).await
            }
            Endpoint::ChatCompletions | Endpoint::Completions => {
                let (rx, prompt_tokens, model) = self.generate(r.clone(), endpoint, body).await?;
                let (text, end) = collect(rx).await?;
                let usage = Usage::new(prompt_tokens, end.completion_tokens);
                let id = format!("{:016x}", rand::random::<u64>());
                let now = flotilla_actors::clock::wall_ms() / 1000;
                let fp = Some(format!("fp_{}", &r.model.hash[..12]));
                if endpoint == Endpoint::ChatCompletions {
                    let mut c = ChatCompletion::new(
                        format!("chatcmpl-{id}"),
                        now,
                        model,
                        text,
                        end.finish_reason,
                        usage,
                    );
                    c.system_fingerprint = fp;
                    to_json(&c)
                } else {
                    let mut c = Completion::new(
                        format!("cmpl-{id}"),
                        now,
                        model,
                        vec![(text, end.finish_reason)],
                        usage,
                    );
                    c.system_fingerprint = fp;
                    to_json(&c)
                }
            }
        }
    }

    async fn stream(
        &self,
        deployment: &str,
        model_hash: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Result<(PieceStream, u32), ServingError> {
        let r = self.replica(deployment, model_hash)?;
        let (rx, prompt_tokens, _) = self.generate(r, endpoint, body).await?;
        Ok((rx, prompt_tokens))
    }

    async fn fetch_blob(
        &self,
        blob: &str,
        offset: u64,
        len: u32,
    ) -> Result<(u64, Vec<u8>), ServingError> {
        match &self.blobs {
            Some(server) => server.read(blob, offset, len).await,
            None => Err(ServingError::new(
                ErrorKind::NotFound,
                format!("blob {blob} is not held here"),
            )),
        }
    }

    async fn held_blobs(&self, blobs: &[String]) -> Vec<String> {
        match &self.blobs {
            Some(server) => server.held(blobs).await,
            None => Vec::new(),
        }
    }

    fn load(&self) -> ReplicaLoad {
        let all = self.all();
        ReplicaLoad {
            outstanding: all.iter().map(|r| r.outstanding()).sum(),
            queued: 0,
            capacity: all
                .iter()
                .map(|r| r.settings.max_batch as u32)
                .sum::<u32>()
                .max(1),
        }
    }
}
