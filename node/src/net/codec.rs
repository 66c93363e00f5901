//! The request-response codec: length-prefixed bincode frames with a per-service cap.
//!
//! The 8-byte length prefix is read first and checked against the cap before a buffer is
//! allocated; the body is then decoded by [`flotilla_protocol::codec::decode`], which applies
//! bincode's `with_limit` and rejects trailing bytes. Any failure is an `InvalidData` I/O error,
//! which makes request-response drop the stream and report the failure for that peer.

use std::io;
use std::marker::PhantomData;

use flotilla_protocol::codec::{self as wire, LEN_PREFIX_BYTES};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{de::DeserializeOwned, Serialize};

/// A codec for one service whose requests and responses are at most `CAP` bytes.
#[derive(Debug)]
pub struct FrameCodec<Req, Resp, const CAP: usize> {
    service: &'static str,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp, const CAP: usize> Clone for FrameCodec<Req, Resp, CAP> {
    fn clone(&self) -> Self {
        Self { service: self.service, _types: PhantomData }
    }
}

impl<Req, Resp, const CAP: usize> FrameCodec<Req, Resp, CAP> {
    /// A codec for the service named `service` (used in errors).
    pub fn new(service: &'static str) -> Self {
        Self { service, _types: PhantomData }
    }
}

fn invalid(e: flotilla_protocol::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads one frame and decodes it, never allocating more than `CAP` bytes.
pub async fn read_frame<T, R, const CAP: usize>(service: &'static str, io: &mut R) -> io::Result<T>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; LEN_PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    let len = wire::check_frame_len(service, wire::parse_len_prefix(prefix), CAP).map_err(invalid)?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    wire::decode::<T, CAP>(service, &body).map_err(invalid)
}

/// Encodes and writes one frame, refusing values over `CAP` bytes.
pub async fn write_frame<T, W, const CAP: usize>(service: &'static str, io: &mut W, value: &T) -> io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin + Send,
{
    let frame = wire::encode_frame::<T, CAP>(service, value).map_err(invalid)?;
    io.write_all(&frame).await?;
    io.flush().await
}

impl<Req, Resp, const CAP: usize> libp2p::request_response::Codec for FrameCodec<Req, Resp, CAP>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame::<Req, T, CAP>(self.service, io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame::<Resp, T, CAP>(self.service, io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame::<Req, T, CAP>(self.service, io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame::<Resp, T, CAP>(self.service, io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn huge_length_prefix_fails_without_allocating() {
        let mut bytes = (1u64 << 60).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"garbage");
        let err = read_frame::<Vec<u8>, _, 1024>("t", &mut Cursor::new(bytes)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn frames_round_trip_through_io() {
        let mut buf = Vec::new();
        write_frame::<_, _, 1024>("t", &mut Cursor::new(&mut buf), &("x".to_string(), 9u8)).await.unwrap();
        let v: (String, u8) = read_frame::<_, _, 1024>("t", &mut Cursor::new(buf)).await.unwrap();
        assert_eq!(v, ("x".to_string(), 9));
    }

    #[tokio::test]
    async fn short_body_is_an_error() {
        let mut bytes = 100u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 10]);
        assert!(read_frame::<Vec<u8>, _, 1024>("t", &mut Cursor::new(bytes)).await.is_err());
    }
}
