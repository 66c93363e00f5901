//! Checks the fuzz targets share.
//!
//! A peer's frame reaches a node as an 8-byte big-endian length and a bincode body: the node's
//! codec (`node/src/net/codec.rs`) checks the length against the service's cap with
//! [`codec::check_frame_len`] before allocating, then decodes the body with [`codec::decode`].
//! [`codec::decode_frame`] is the same two steps over a frame held in memory, so the targets
//! fuzz exactly the functions the node runs on every inbound request and response.

//!
//! The checkpoint loader's format code (`kernels/src/checkpoint/manifest.rs`, `tensor.rs` and
//! the `error.rs` they use) is compiled into this crate from its source files: the kernels
//! crate as a whole does not build with the nightly toolchain libFuzzer needs (dfdx 0.13 turns
//! on nightly-only code when it sees a nightly compiler, and that code no longer compiles), and
//! these three files depend on nothing else in it.

use flotilla_protocol::codec::{self, LEN_PREFIX_BYTES};

/// `kernels/src/error.rs`.
#[path = "../../../kernels/src/error.rs"]
#[allow(dead_code, unreachable_pub)]
pub mod error;

/// `kernels/src/checkpoint/manifest.rs`.
#[path = "../../../kernels/src/checkpoint/manifest.rs"]
#[allow(dead_code, unreachable_pub)]
mod manifest;
/// `kernels/src/checkpoint/tensor.rs`.
#[path = "../../../kernels/src/checkpoint/tensor.rs"]
#[allow(dead_code, unreachable_pub)]
mod tensor;

/// The checkpoint format of `kernels/src/checkpoint/`: manifest and safetensors tensors.
pub mod checkpoint {
    use crate::{manifest, tensor};

    pub use manifest::{FileEntry, Manifest, MANIFEST_FILE};
    pub use tensor::{DType, Tensor};

    /// The loader's parse of `manifest.json` bytes.
    pub fn parse_manifest(bytes: &[u8]) -> crate::error::Result<Manifest> {
        manifest::parse(bytes)
    }

    /// The loader's decode of a safetensors file.
    pub fn decode_tensors(
        file: &str,
        bytes: &[u8],
    ) -> crate::error::Result<std::collections::BTreeMap<String, Tensor>> {
        tensor::deserialize(file, bytes)
    }

    /// The saver's encoding of tensors as safetensors.
    pub fn encode_tensors(
        tensors: &std::collections::BTreeMap<String, Tensor>,
    ) -> crate::error::Result<Vec<u8>> {
        tensor::serialize(tensors)
    }
}
use flotilla_protocol::Error;
use serde::{de::DeserializeOwned, Serialize};

/// `data` as a body of `T` under the cap `CAP`: never a panic; what is accepted encodes to a
/// body that decodes and encodes again to the same bytes (a frame is never read two ways).
/// Returns whether `data` decoded.
pub fn body<T: Serialize + DeserializeOwned, const CAP: usize>(
    service: &'static str,
    data: &[u8],
) -> bool {
    let Ok(value) = codec::decode::<T, CAP>(service, data) else {
        return false;
    };
    let Ok(once) = codec::encode::<T, CAP>(service, &value) else {
        panic!(
            "{service}: an accepted body of {} bytes does not encode",
            data.len()
        );
    };
    assert!(
        once.len() <= data.len(),
        "{service}: re-encoding grew from {} to {} bytes",
        data.len(),
        once.len()
    );
    let again: T = match codec::decode::<T, CAP>(service, &once) {
        Ok(v) => v,
        Err(e) => panic!("{service}: the re-encoding of an accepted body is refused: {e}"),
    };
    let twice = codec::encode::<T, CAP>(service, &again)
        .unwrap_or_else(|e| panic!("{service}: a decoded re-encoding does not encode: {e}"));
    assert_eq!(
        once, twice,
        "{service}: encode(decode(encode(x))) != encode(x)"
    );
    true
}

/// `data` as whole frames of `T`: as it comes (length prefix included); with a prefix that
/// announces its exact length, which must read as the body alone does; and with a prefix over
/// the cap, which must be refused as too large whatever follows.
pub fn frames<T: Serialize + DeserializeOwned, const CAP: usize>(
    service: &'static str,
    data: &[u8],
) {
    let raw = codec::decode_frame::<T, CAP>(service, data);
    if let Some(prefix) = data.first_chunk::<LEN_PREFIX_BYTES>() {
        let announced = codec::parse_len_prefix(*prefix);
        if announced > CAP as u64 {
            assert!(
                matches!(raw, Err(Error::FrameTooLarge { len, .. }) if len == announced),
                "{service}: a frame announcing {announced} bytes over the cap {CAP} was not refused as too large"
            );
        } else if announced != (data.len() - LEN_PREFIX_BYTES) as u64 {
            assert!(
                raw.is_err(),
                "{service}: a frame whose length prefix lies was accepted"
            );
        }
    } else {
        assert!(
            raw.is_err(),
            "{service}: a frame without a length prefix was accepted"
        );
    }

    if data.len() <= CAP {
        let mut framed = Vec::with_capacity(LEN_PREFIX_BYTES + data.len());
        framed.extend_from_slice(&(data.len() as u64).to_be_bytes());
        framed.extend_from_slice(data);
        let as_frame = codec::decode_frame::<T, CAP>(service, &framed).is_ok();
        let as_body = codec::decode::<T, CAP>(service, data).is_ok();
        assert_eq!(
            as_frame, as_body,
            "{service}: a framed body reads unlike the body alone"
        );
    }

    // Over the cap: refused before anything is allocated for it.
    let seed = data
        .iter()
        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    let over = (CAP as u64 + 1).saturating_add(seed % (u64::MAX - CAP as u64));
    let mut huge = over.to_be_bytes().to_vec();
    huge.extend_from_slice(&data[..data.len().min(64)]);
    assert!(
        matches!(codec::decode_frame::<T, CAP>(service, &huge), Err(Error::FrameTooLarge { len, .. }) if len == over),
        "{service}: a frame announcing {over} bytes was not refused as too large"
    );
}

/// A request-response service: its requests and its responses, as bodies and as frames.
pub fn service<Req, Resp, const CAP: usize>(service: &'static str, data: &[u8])
where
    Req: Serialize + DeserializeOwned,
    Resp: Serialize + DeserializeOwned,
{
    body::<Req, CAP>(service, data);
    body::<Resp, CAP>(service, data);
    frames::<Req, CAP>(service, data);
    frames::<Resp, CAP>(service, data);
}

/// A few records for operation chains to run on: text with PII-like content, duplicates,
/// near-duplicates, labels, HTML, odd Unicode and an empty field.
pub fn sample_records() -> Vec<flotilla_actors::data::Record> {
    use flotilla_actors::data::Record;
    let texts = [
        "Hello world, my email is a.b@example.com",
        "Hello world, my email is a.b@example.com",
        "hello  world, my e-mail is a.b@example.com!",
        "<b>Caf\u{e9}</b> &amp; cr\u{e8}me br\u{fb}l\u{e9}e \u{200b}\u{fb01}",
        "call +1 (555) 010-9999 or 4111 1111 1111 1111",
        "",
        "\u{202e}RTL \u{1F600} emoji \u{0000} nul",
        "the quick brown fox jumps over the lazy dog the quick brown fox",
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = Record::text(i as u64, *t);
            r.fields
                .insert("label".into(), ["a", "b", ""][i % 3].into());
            r.fields.insert("n".into(), i.to_string());
            r
        })
        .collect()
}
