//! The one canonical encoding: bincode 2.0.1 with fixed-width little-endian
//! integers, an explicit byte limit on every decode, no trailing bytes, and a
//! re-encoding check so that every accepted input has exactly one byte form.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian, NoLimit};
use bincode::{Decode, Encode};

/// Why a byte string is not a valid encoding of the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the format allows; it was not parsed at all.
    #[error("input is {len} bytes, more than the {max} bytes this format allows; it was not read")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// Largest length the format allows.
        max: usize,
    },
    /// The input ends before the value is complete.
    #[error("input is truncated: it ends in the middle of a value (was the file or message cut short?)")]
    Truncated,
    /// A length field claims more data than the format's limit allows.
    #[error("a length field claims more than the {max}-byte limit; the input is corrupt or hostile")]
    LengthOverLimit {
        /// The limit in force.
        max: usize,
    },
    /// The bytes do not form a value of the expected type.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// Bytes remain after a complete value.
    #[error("{extra} unexpected bytes after the end of the value; the input is corrupt or was concatenated")]
    TrailingBytes {
        /// How many bytes remain.
        extra: usize,
    },
    /// The bytes decode, but not from the one canonical encoding.
    #[error("input is not in canonical form (it does not re-encode to the same bytes)")]
    NonCanonical,
    /// The value decodes but breaks a rule of the format.
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// The encoding configuration, without a limit (encoding our own values).
type EncodeConfig = Configuration<LittleEndian, Fixint, NoLimit>;

const fn encode_config() -> EncodeConfig {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

const fn decode_config<const MAX: usize>() -> Configuration<LittleEndian, Fixint, Limit<MAX>> {
    encode_config().with_limit::<MAX>()
}

/// Encodes a value in the canonical form.
pub(crate) fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec can fail only through a custom Encode impl or a
    // writer error; Herald's wire types have neither.
    match bincode::encode_to_vec(value, encode_config()) {
        Ok(bytes) => bytes,
        Err(error) => unreachable!("encoding a Herald wire type into memory failed: {error}"),
    }
}

/// Decodes `bytes` as one `T`, allowing at most `MAX` bytes of input and
/// `CLAIM` bytes of claimed allocation, rejecting trailing bytes and
/// non-canonical input.
///
/// bincode claims a list's in-memory size (length times element size) before
/// decoding it, which can exceed the list's wire size; `CLAIM` bounds that, and
/// is a small multiple of `MAX`.
pub(crate) fn decode_canonical<T, const MAX: usize, const CLAIM: usize>(
    bytes: &[u8],
) -> Result<T, DecodeError>
where
    T: Decode<()> + Encode,
{
    let value = decode_prefix::<T, MAX, CLAIM>(bytes)?;
    if encode(&value) != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes `bytes` as one `T` with limits as in [`decode_canonical`], rejecting
/// trailing bytes, without the re-encoding check (for containers whose
/// canonical form follows from their parts).
pub(crate) fn decode_prefix<T, const MAX: usize, const CLAIM: usize>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Decode<()>,
{
    if bytes.len() > MAX {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX,
        });
    }
    let (value, used) =
        bincode::decode_from_slice::<T, _>(bytes, decode_config::<CLAIM>()).map_err(|e| map_error(e, MAX))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

fn map_error(error: bincode::error::DecodeError, max: usize) -> DecodeError {
    use bincode::error::DecodeError as E;
    match error {
        E::UnexpectedEnd { .. } => DecodeError::Truncated,
        E::LimitExceeded => DecodeError::LengthOverLimit { max },
        E::UnexpectedVariant { type_name, found, .. } => {
            DecodeError::Malformed(format!("unknown variant {found} for {type_name}"))
        }
        E::InvalidBooleanValue(v) => DecodeError::Malformed(format!("invalid boolean byte {v}")),
        E::Utf8 { .. } => DecodeError::Malformed("text is not valid UTF-8".into()),
        E::OutsideUsizeRange(_) => DecodeError::LengthOverLimit { max },
        other => DecodeError::Malformed(other.to_string()),
    }
}

/// Checks the input size, then reads the leading u16 format number before
/// anything else, so that a body in a newer format gets "upgrade" rather than
/// a confusing decode error.
pub(crate) fn check_size_and_format(
    bytes: &[u8],
    max: usize,
    supported: u16,
    what: &str,
) -> Result<(), DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    match bytes {
        [a, b, ..] if u16::from_le_bytes([*a, *b]) > supported => Err(DecodeError::Invalid(format!(
            "{what} format {} is not supported (this node reads format {supported}); upgrade Herald",
            u16::from_le_bytes([*a, *b])
        ))),
        _ => Ok(()),
    }
}
