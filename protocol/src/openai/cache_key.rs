//! The canonical key of a request for the response cache and for coalescing.
//!
//! The key is blake3 over a fixed-order, length-prefixed encoding of what decides the answer:
//! the model version's hash, the model name the client used (it is echoed in the response),
//! the inputs, and the sampling parameters with their defaults filled in. Fields that do not
//! change the answer (`stream`, `stream_options`, `user`) are left out, and equivalent
//! spellings (`stop: "x"` and `stop: ["x"]`, content as a string or as text parts, `-0.0`
//! and `0.0`) encode alike. The model version hash comes first, so an answer of one version is
//! never served for another.

use super::chat::ChatCompletionRequest;
use super::classify::ClassifyRequest;
use super::common::Sampling;
use super::completions::{CompletionRequest, Prompt};
use super::embeddings::{EmbeddingRequest, EncodingFormat, Input};

/// A request's canonical key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The canonical encoder: every value is tagged, every variable-length value length-prefixed,
/// so no two different requests encode alike.
struct Canon(blake3::Hasher);

impl Canon {
    fn new(endpoint: &str, model_hash: &str, model: &str) -> Self {
        let mut c = Canon(blake3::Hasher::new());
        c.str(b'E', "flotilla/openai-cache/1");
        c.str(b'e', endpoint);
        c.str(b'H', model_hash);
        c.str(b'M', model);
        c
    }
    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.0.update(&[tag]);
        self.0.update(&(b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn str(&mut self, tag: u8, s: &str) {
        self.bytes(tag, s.as_bytes());
    }
    fn u64(&mut self, tag: u8, v: u64) {
        self.bytes(tag, &v.to_be_bytes());
    }
    fn opt_u64(&mut self, tag: u8, v: Option<u64>) {
        match v {
            Some(v) => self.u64(tag, v),
            None => self.bytes(tag, &[]),
        }
    }
    fn f32(&mut self, tag: u8, v: f32) {
        // -0.0 and 0.0 sample alike; give them one encoding.
        let v = if v == 0.0 { 0.0 } else { v };
        self.bytes(tag, &v.to_bits().to_be_bytes());
    }
    fn tokens(&mut self, tag: u8, t: &[u32]) {
        let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_be_bytes()).collect();
        self.bytes(tag, &bytes);
    }
    fn input(&mut self, input: &Input) {
        match input {
            Input::Text(t) => self.str(b'T', t),
            Input::Texts(v) => {
                self.u64(b'n', v.len() as u64);
                v.iter().for_each(|t| self.str(b'T', t));
            }
            Input::Tokens(t) => self.tokens(b'K', t),
            Input::TokenLists(v) => {
                self.u64(b'n', v.len() as u64);
                v.iter().for_each(|t| self.tokens(b'K', t));
            }
        }
    }
    fn sampling(&mut self, s: &Sampling) {
        let max = s.max_completion_tokens.or(s.max_tokens);
        self.opt_u64(b'x', max.map(u64::from));
        self.f32(b't', s.temperature.unwrap_or(1.0));
        self.f32(b'p', s.top_p.unwrap_or(1.0));
        self.u64(b'k', u64::from(s.top_k.unwrap_or(0)));
        self.opt_u64(b's', s.seed.map(|x| x as u64));
        let stop = s.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
        self.u64(b'S', stop.len() as u64);
        stop.iter().for_each(|x| self.str(b'z', x));
        self.u64(b'N', u64::from(s.n.unwrap_or(1)));
        self.f32(b'P', s.presence_penalty.unwrap_or(0.0));
        self.f32(b'F', s.frequency_penalty.unwrap_or(0.0));
    }
    fn finish(self) -> CacheKey {
        CacheKey(*self.0.finalize().as_bytes())
    }
}

impl ChatCompletionRequest {
    /// Whether the answer is a function of the request (temperature 0 or a seed), so it may be
    /// cached and identical requests coalesced.
    pub fn is_deterministic(&self) -> bool {
        self.sampling.is_deterministic()
    }

    /// The canonical key of this request for the model version `model_hash`.
    pub fn cache_key(&self, model_hash: &str) -> CacheKey {
        let mut c = Canon::new("chat", model_hash, &self.model);
        c.u64(b'n', self.messages.len() as u64);
        for m in &self.messages {
            c.str(b'r', m.role.as_str());
            c.str(b'a', m.name.as_deref().unwrap_or(""));
            // Validation refuses non-text parts before any key is taken; were one present, its
            // message encodes as a marker no text can produce (a one-byte tag, no length).
            match m.text() {
                Some(t) => c.str(b'c', &t),
                None => {
                    c.0.update(b"!");
                }
            }
        }
        c.sampling(&self.sampling);
        c.finish()
    }
}

impl CompletionRequest {
    /// Whether the answer is a function of the request (temperature 0 or a seed).
    pub fn is_deterministic(&self) -> bool {
        self.sampling.is_deterministic()
    }

    /// The canonical key of this request for the model version `model_hash`.
    pub fn cache_key(&self, model_hash: &str) -> CacheKey {
        let mut c = Canon::new("completions", model_hash, &self.model);
        let as_input = match &self.prompt {
            Prompt::Text(t) => Input::Text(t.clone()),
            Prompt::Texts(v) => Input::Texts(v.clone()),
            Prompt::Tokens(t) => Input::Tokens(t.clone()),
            Prompt::TokenLists(v) => Input::TokenLists(v.clone()),
        };
        c.input(&as_input);
        c.sampling(&self.sampling);
        c.finish()
    }
}

impl EmbeddingRequest {
    /// Embeddings are always deterministic.
    pub fn is_deterministic(&self) -> bool {
        true
    }

    /// The canonical key of this request for the model version `model_hash`.
    pub fn cache_key(&self, model_hash: &str) -> CacheKey {
        let mut c = Canon::new("embeddings", model_hash, &self.model);
        c.input(&self.input);
        let format = self.encoding_format.unwrap_or_default();
        c.u64(b'f', u64::from(format == EncodingFormat::Base64));
        c.opt_u64(b'd', self.dimensions.map(u64::from));
        c.finish()
    }
}

impl ClassifyRequest {
    /// Classification is always deterministic.
    pub fn is_deterministic(&self) -> bool {
        true
    }

    /// The canonical key of this request for the model version `model_hash`.
    pub fn cache_key(&self, model_hash: &str) -> CacheKey {
        let mut c = Canon::new("classify", model_hash, &self.model);
        c.input(&self.input);
        c.u64(b'k', u64::from(self.top_k.unwrap_or(1)));
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> ChatCompletionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn equivalent_spellings_share_a_key() {
        let a = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"x","temperature":0,"stream":true,"user":"u1"}"#,
        );
        let b = chat(
            r#"{"user":"u2","temperature":-0.0,"stop":["x"],"messages":[{"role":"user","content":[{"type":"text","text":"h"},{"type":"text","text":"i"}]}],"model":"m"}"#,
        );
        assert_eq!(a.cache_key("v1"), b.cache_key("v1"));
        assert!(a.is_deterministic() && b.is_deterministic());
        // Defaults are filled in: omitted temperature equals 1.
        let c = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":3}"#);
        let d = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":3,"temperature":1,"top_p":1,"n":1}"#,
        );
        assert_eq!(c.cache_key("v1"), d.cache_key("v1"));
    }

    #[test]
    fn anything_that_changes_the_answer_changes_the_key() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let k = chat(base).cache_key("v1");
        assert_ne!(k, chat(base).cache_key("v2"), "model version");
        let variants = [
            r#"{"model":"m2","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"hi"}],"temperature":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":1}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"top_k":4}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"stop":"\n"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"h"},{"role":"user","content":"i"}],"temperature":0}"#,
        ];
        for v in variants {
            assert_ne!(k, chat(v).cache_key("v1"), "{v}");
        }
        // Splitting text differently between messages must not collide.
        let x = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"ab"},{"role":"user","content":"c"}]}"#,
        );
        let y = chat(
            r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"bc"}]}"#,
        );
        assert_ne!(x.cache_key("v"), y.cache_key("v"));
        assert!(!x.is_deterministic());
    }

    #[test]
    fn other_endpoints() {
        let e1: EmbeddingRequest = serde_json::from_str(r#"{"model":"m","input":"a"}"#).unwrap();
        let e2: EmbeddingRequest =
            serde_json::from_str(r#"{"model":"m","input":"a","encoding_format":"float"}"#).unwrap();
        let e3: EmbeddingRequest = serde_json::from_str(r#"{"model":"m","input":["a"]}"#).unwrap();
        assert_eq!(e1.cache_key("v"), e2.cache_key("v"));
        assert_ne!(e1.cache_key("v"), e3.cache_key("v"));
        let p1: CompletionRequest = serde_json::from_str(r#"{"model":"m","prompt":"a"}"#).unwrap();
        let p2: CompletionRequest =
            serde_json::from_str(r#"{"model":"m","prompt":["a"]}"#).unwrap();
        assert_ne!(p1.cache_key("v"), p2.cache_key("v"));
        // The same text on two endpoints is two keys.
        let c: ClassifyRequest = serde_json::from_str(r#"{"model":"m","input":"a"}"#).unwrap();
        assert_ne!(c.cache_key("v"), e1.cache_key("v"));
        assert_eq!(c.cache_key("v").to_string().len(), 64);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The key depends on what the request says, not on how its JSON is ordered.
            #[test]
            fn field_order_does_not_matter(
                order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
                text in "[a-z ]{0,20}",
                seed in any::<i64>(),
                max_tokens in 1..100u32,
            ) {
                let fields = [
                    r#""model":"m""#.to_string(),
                    format!(r#""messages":[{{"role":"user","content":{text:?}}}]"#),
                    format!(r#""seed":{seed}"#),
                    format!(r#""max_tokens":{max_tokens}"#),
                    r#""stop":["\n"]"#.to_string(),
                    r#""user":"someone""#.to_string(),
                ];
                let canonical = format!("{{{}}}", fields.join(","));
                let shuffled: Vec<&str> = order.iter().map(|&i| fields[i].as_str()).collect();
                let shuffled = format!("{{{}}}", shuffled.join(","));
                let a = chat(&canonical);
                let b = chat(&shuffled);
                prop_assert_eq!(a.cache_key("v"), b.cache_key("v"));
                prop_assert!(b.is_deterministic());
            }
        }
    }
}
