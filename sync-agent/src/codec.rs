//! Body compression of push batches: zstd (what the agent sends) or gzip (for hand-written
//! clients), decompressed under a hard size bound so a small body cannot expand without limit.

use std::io::Read;

/// A `Content-Encoding` the relay accepts on `POST /v1/ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// Zstandard (RFC 8878).
    Zstd,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value (absent means identity).
    pub fn from_header(value: Option<&str>) -> Result<Self, CodecError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(Self::Identity),
            Some("zstd") => Ok(Self::Zstd),
            Some("gzip") | Some("x-gzip") => Ok(Self::Gzip),
            Some(other) => Err(CodecError::Unsupported(other.chars().take(32).collect())),
        }
    }

    /// The header value.
    pub fn as_header(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The encoding is not one we speak.
    #[error("Content-Encoding `{0}` is not supported; send zstd, gzip or identity")]
    Unsupported(String),
    /// The body is not valid data of its encoding.
    #[error("the body is not valid {encoding} data: {reason}")]
    Corrupt {
        /// The encoding named by the header.
        encoding: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The body expands past the limit.
    #[error("the body decompresses to more than {limit} bytes; send smaller batches")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Compresses `data` (level 3 for zstd: fast, and most of the ratio on JSON).
pub fn encode(data: &[u8], encoding: Encoding) -> std::io::Result<Vec<u8>> {
    match encoding {
        Encoding::Identity => Ok(data.to_vec()),
        Encoding::Zstd => zstd::bulk::compress(data, 3),
        Encoding::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data)?;
            enc.finish()
        }
    }
}

/// Decompresses `body`, refusing to produce more than `limit` bytes.
pub fn decode(body: &[u8], encoding: Encoding, limit: usize) -> Result<Vec<u8>, CodecError> {
    let corrupt = |encoding: &'static str, e: std::io::Error| CodecError::Corrupt {
        encoding,
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    let bound = limit as u64 + 1;
    match encoding {
        Encoding::Identity => out.extend_from_slice(body),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| corrupt("zstd", e))?;
            decoder
                .take(bound)
                .read_to_end(&mut out)
                .map_err(|e| corrupt("zstd", e))?;
        }
        Encoding::Gzip => {
            flate2::read::GzDecoder::new(body)
                .take(bound)
                .read_to_end(&mut out)
                .map_err(|e| corrupt("gzip", e))?;
        }
    }
    if out.len() > limit {
        return Err(CodecError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_every_encoding() {
        let data = br#"{"ops":[]}"#.repeat(100);
        for e in [Encoding::Identity, Encoding::Zstd, Encoding::Gzip] {
            let packed = encode(&data, e).expect("encodes");
            assert_eq!(
                decode(&packed, e, data.len()).expect("decodes"),
                data,
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        for e in [Encoding::Zstd, Encoding::Gzip] {
            let packed = encode(&zeros, e).expect("encodes");
            assert!(packed.len() < 64 * 1024);
            assert!(matches!(
                decode(&packed, e, 1024 * 1024),
                Err(CodecError::TooLarge { limit: 1048576 })
            ));
        }
    }

    #[test]
    fn garbage_is_named_corrupt() {
        let err = decode(b"definitely not zstd", Encoding::Zstd, 1024).expect_err("corrupt");
        assert!(err.to_string().contains("not valid zstd"), "{err}");
        let err = decode(b"nor gzip", Encoding::Gzip, 1024).expect_err("corrupt");
        assert!(err.to_string().contains("not valid gzip"), "{err}");
    }

    #[test]
    fn unknown_encodings_are_refused_by_name() {
        let err = Encoding::from_header(Some("br")).expect_err("unsupported");
        assert!(err.to_string().contains("`br`"));
        assert_eq!(Encoding::from_header(None).ok(), Some(Encoding::Identity));
    }
}
