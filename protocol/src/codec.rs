//! The bincode codec every service uses, with hard size caps.
//!
//! A frame on a stream is an 8-byte big-endian length followed by that many bytes of bincode
//! (standard configuration). The length is checked against the service's cap *before* anything
//! is allocated, bincode decodes with `with_limit` so no inner length can claim more, and a frame
//! with bytes left over after its message is rejected. A 64-bit prefix lets a hostile peer
//! announce absurd sizes (2^60); the cap check turns them into an error, not an allocation.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// Bytes in a frame's length prefix.
pub const LEN_PREFIX_BYTES: usize = 8;

/// Checks a length prefix against a service's cap and returns it as a `usize`.
pub fn check_frame_len(service: &'static str, announced: u64, cap: usize) -> Result<usize> {
    if announced > cap as u64 {
        return Err(Error::FrameTooLarge {
            service,
            len: announced,
            cap: cap as u64,
        });
    }
    // Cannot fail: announced <= cap, which is a usize.
    Ok(announced as usize)
}

/// Reads a length prefix from its 8 bytes.
pub fn parse_len_prefix(bytes: [u8; LEN_PREFIX_BYTES]) -> u64 {
    u64::from_be_bytes(bytes)
}

/// The encoded size of `value` in bytes, computed without allocating the encoding, so callers
/// can refuse an oversized message before any work is done for it.
pub fn encoded_len<T: Serialize>(service: &'static str, value: &T) -> Result<usize> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, bincode::config::standard()).map_err(
        |e| Error::Encode {
            service,
            reason: e.to_string(),
        },
    )?;
    Ok(counter.bytes_written)
}

/// Encodes `value` as a frame body, refusing bodies over `CAP` bytes.
pub fn encode<T: Serialize, const CAP: usize>(service: &'static str, value: &T) -> Result<Vec<u8>> {
    let config = bincode::config::standard().with_limit::<CAP>();
    let body = bincode::serde::encode_to_vec(value, config).map_err(|e| Error::Encode {
        service,
        reason: e.to_string(),
    })?;
    check_frame_len(service, body.len() as u64, CAP)?;
    Ok(body)
}

/// Decodes a frame body of exactly one `T`, with every inner length bounded by `CAP`.
pub fn decode<T: DeserializeOwned, const CAP: usize>(
    service: &'static str,
    body: &[u8],
) -> Result<T> {
    check_frame_len(service, body.len() as u64, CAP)?;
    let config = bincode::config::standard().with_limit::<CAP>();
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config).map_err(|e| Error::Malformed {
            service,
            reason: e.to_string(),
        })?;
    if used != body.len() {
        return Err(Error::TrailingBytes {
            service,
            extra: body.len() - used,
        });
    }
    Ok(value)
}

/// Encodes `value` as a whole frame: length prefix then body.
pub fn encode_frame<T: Serialize, const CAP: usize>(
    service: &'static str,
    value: &T,
) -> Result<Vec<u8>> {
    let body = encode::<T, CAP>(service, value)?;
    let mut frame = Vec::with_capacity(LEN_PREFIX_BYTES + body.len());
    frame.extend_from_slice(&(body.len() as u64).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a whole frame (length prefix then body) held in memory.
pub fn decode_frame<T: DeserializeOwned, const CAP: usize>(
    service: &'static str,
    frame: &[u8],
) -> Result<T> {
    let Some((prefix, body)) = frame.split_first_chunk::<LEN_PREFIX_BYTES>() else {
        return Err(Error::Malformed {
            service,
            reason: format!("frame of {} bytes has no length prefix", frame.len()),
        });
    };
    let len = check_frame_len(service, parse_len_prefix(*prefix), CAP)?;
    if body.len() < len {
        return Err(Error::Malformed {
            service,
            reason: format!("frame announces {len} bytes but holds {}", body.len()),
        });
    }
    if body.len() > len {
        return Err(Error::TrailingBytes {
            service,
            extra: body.len() - len,
        });
    }
    decode::<T, CAP>(service, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1024;

    #[test]
    fn round_trip() {
        let v = (7u32, "hello".to_string(), vec![1u8, 2, 3]);
        let f = encode_frame::<_, CAP>("t", &v).unwrap();
        assert_eq!(
            decode_frame::<(u32, String, Vec<u8>), CAP>("t", &f).unwrap(),
            v
        );
    }

    #[test]
    fn huge_prefix_is_refused_before_allocating() {
        let mut f = (1u64 << 60).to_be_bytes().to_vec();
        f.extend_from_slice(&[0; 16]);
        let err = decode_frame::<Vec<u8>, CAP>("t", &f).unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { len, .. } if len == 1 << 60));
    }

    #[test]
    fn inner_length_over_cap_is_refused() {
        // A body that claims a Vec of 2^40 elements in its own (varint) length.
        let mut body = vec![253u8];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode::<Vec<u8>, CAP>("t", &body).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = encode::<_, CAP>("t", &5u32).unwrap();
        body.push(0);
        assert!(matches!(
            decode::<u32, CAP>("t", &body),
            Err(Error::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn encoded_len_matches_the_encoding() {
        let v = (1u64 << 40, "héllo".to_string(), vec![7u8; 300]);
        assert_eq!(
            encoded_len("t", &v).unwrap(),
            encode::<_, CAP>("t", &v).unwrap().len()
        );
    }

    #[test]
    fn oversized_value_is_not_encoded() {
        let big = vec![0u8; CAP * 2];
        assert!(encode::<_, CAP>("t", &big).is_err());
    }
}
