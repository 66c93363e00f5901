//! The request-response codec: length-prefixed bincode frames with a per-service cap.
//!
//! The 8-byte length prefix is read first and checked against the cap; the frame's bytes are
//! then paid for from the inbound byte budgets ([`super::budget`]) before a buffer is
//! allocated. The body is decoded by [`flotilla_protocol::codec::decode`], which applies
//! bincode's `with_limit` and rejects trailing bytes.
//!
//! A frame that fails these checks is not an I/O error: request-response would only log that,
//! without saying which peer sent it. Instead the codec yields [`Frame::Rejected`], which reaches
//! the bridge with the peer's id, so the bridge can count it and close that peer's connections.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use flotilla_protocol::codec::{self as wire, LEN_PREFIX_BYTES};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{de::DeserializeOwned, Serialize};

use super::budget::{ConnectionBudget, InboundBudget, BUDGET_WAIT};

/// A codec for one service whose requests and responses are at most `CAP` bytes.
#[derive(Debug)]
pub struct FrameCodec<Req, Resp, const CAP: usize> {
    service: &'static str,
    budget: Option<Arc<InboundBudget>>,
    /// The connection's budget; `None` in the behaviour's own copy.
    connection: Option<ConnectionBudget>,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

/// request-response clones its codec once per connection (from the behaviour's copy, which has
/// no connection budget) and then once per stream (from the connection's copy): a clone of the
/// behaviour's copy starts a new connection budget, a clone of a connection's copy shares it.
impl<Req, Resp, const CAP: usize> Clone for FrameCodec<Req, Resp, CAP> {
    fn clone(&self) -> Self {
        let connection = match (&self.connection, &self.budget) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(b)) => Some(b.connection()),
            (None, None) => None,
        };
        Self {
            service: self.service,
            budget: self.budget.clone(),
            connection,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp, const CAP: usize> FrameCodec<Req, Resp, CAP> {
    /// A codec for the service named `service` (used in errors), without byte budgets.
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            budget: None,
            connection: None,
            _types: PhantomData,
        }
    }

    /// A codec whose frames are paid for from `budget`.
    pub fn with_budget(service: &'static str, budget: Arc<InboundBudget>) -> Self {
        Self {
            budget: Some(budget),
            ..Self::new(service)
        }
    }
}

fn invalid(e: flotilla_protocol::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What came off the wire: a valid message, or the reason the frame was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<T> {
    Valid(T),
    Rejected(String),
}

/// Reads one frame and decodes it, never allocating more than `CAP` bytes. Oversized,
/// malformed, truncated or over-long frames come back as [`Frame::Rejected`]; only transport
/// failures are errors.
pub async fn read_frame<T, R, const CAP: usize>(
    service: &'static str,
    io: &mut R,
    budget: Option<&ConnectionBudget>,
) -> io::Result<Frame<T>>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + Send,
{
    let truncated = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => Ok(Frame::Rejected(format!("truncated {service} frame"))),
        _ => Err(e),
    };
    let mut prefix = [0u8; LEN_PREFIX_BYTES];
    if let Err(e) = io.read_exact(&mut prefix).await {
        return truncated(e);
    }
    let len = match wire::check_frame_len(service, wire::parse_len_prefix(prefix), CAP) {
        Ok(len) => len,
        Err(e) => return Ok(Frame::Rejected(e.to_string())),
    };
    // Held until the frame is decoded: the buffer and the decoded value are about its size.
    let _charge = match budget {
        Some(b) => Some(b.charge(service, len, BUDGET_WAIT).await?),
        None => None,
    };
    let mut body = vec![0u8; len];
    if let Err(e) = io.read_exact(&mut body).await {
        return truncated(e);
    }
    // A sender that keeps writing after its announced frame is misbehaving too.
    let mut extra = [0u8; 1];
    if io.read(&mut extra).await.unwrap_or(0) > 0 {
        return Ok(Frame::Rejected(format!(
            "{service} frame followed by extra bytes"
        )));
    }
    Ok(match wire::decode::<T, CAP>(service, &body) {
        Ok(v) => Frame::Valid(v),
        Err(e) => Frame::Rejected(e.to_string()),
    })
}

/// Encodes and writes one frame, refusing values over `CAP` bytes.
pub async fn write_frame<T, W, const CAP: usize>(
    service: &'static str,
    io: &mut W,
    value: &T,
) -> io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin + Send,
{
    let frame = wire::encode_frame::<T, CAP>(service, value).map_err(invalid)?;
    io.write_all(&frame).await?;
    io.flush().await
}

fn write_rejected() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a rejected frame cannot be sent",
    )
}

impl<Req, Resp, const CAP: usize> libp2p::request_response::Codec for FrameCodec<Req, Resp, CAP>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Frame<Req>;
    type Response = Frame<Resp>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame::<Req, T, CAP>(self.service, io, self.connection.as_ref()).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame<Resp>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame::<Resp, T, CAP>(self.service, io, self.connection.as_ref()).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Frame::Valid(req) => write_frame::<Req, T, CAP>(self.service, io, &req).await,
            Frame::Rejected(_) => Err(write_rejected()),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Frame<Resp>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match res {
            Frame::Valid(res) => write_frame::<Resp, T, CAP>(self.service, io, &res).await,
            Frame::Rejected(_) => Err(write_rejected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn huge_length_prefix_is_rejected_without_allocating() {
        let mut bytes = (1u64 << 60).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"garbage");
        let f = read_frame::<Vec<u8>, _, 1024>("t", &mut Cursor::new(bytes), None)
            .await
            .unwrap();
        assert!(matches!(f, Frame::Rejected(r) if r.contains("exceeds")));
    }

    #[tokio::test]
    async fn frames_round_trip_through_io() {
        let mut buf = Vec::new();
        write_frame::<_, _, 1024>("t", &mut Cursor::new(&mut buf), &("x".to_string(), 9u8))
            .await
            .unwrap();
        let v = read_frame::<(String, u8), _, 1024>("t", &mut Cursor::new(buf), None)
            .await
            .unwrap();
        assert_eq!(v, Frame::Valid(("x".to_string(), 9)));
    }

    #[tokio::test]
    async fn short_body_and_extra_bytes_are_rejected() {
        let mut bytes = 100u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 10]);
        assert!(matches!(
            read_frame::<Vec<u8>, _, 1024>("t", &mut Cursor::new(bytes), None)
                .await
                .unwrap(),
            Frame::Rejected(_)
        ));
        let mut buf = Vec::new();
        write_frame::<_, _, 1024>("t", &mut Cursor::new(&mut buf), &7u32)
            .await
            .unwrap();
        buf.push(0);
        assert!(matches!(
            read_frame::<u32, _, 1024>("t", &mut Cursor::new(buf), None)
                .await
                .unwrap(),
            Frame::Rejected(_)
        ));
    }

    #[tokio::test]
    async fn garbage_body_is_rejected() {
        let mut bytes = 4u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 4]);
        assert!(matches!(
            read_frame::<String, _, 1024>("t", &mut Cursor::new(bytes), None)
                .await
                .unwrap(),
            Frame::Rejected(_)
        ));
    }
}
