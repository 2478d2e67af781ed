//! Field values that frames carry: the tag registry, UTF-8 [`Text`] and request
//! [`Metadata`], all backed by `Bytes` slices of the read buffer (no copies on decode).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Field tags (docs/PROTOCOL.md, "Fields"). Each field is `tag u8, len u16 BE, value`.
pub mod tag {
    /// App id, text, 1..=128 bytes.
    pub const APP: u8 = 0x01;
    /// Device id, text, 1..=128 bytes.
    pub const DEVICE: u8 = 0x02;
    /// Login or refresh token, opaque bytes, 1..=2048 bytes.
    pub const TOKEN: u8 = 0x03;
    /// Business id, `u32` big-endian.
    pub const BUSINESS: u8 = 0x04;
    /// Request metadata, a list of key/value entries (see [`super::Metadata`]).
    pub const META: u8 = 0x05;
    /// Group id, text, 1..=128 bytes.
    pub const GROUP: u8 = 0x06;
    /// Group sequence number (the offset of a push in its group's log within its
    /// epoch), `u64` big-endian.
    pub const SEQ: u8 = 0x07;
    /// Wire code, `u16` big-endian.
    pub const CODE: u8 = 0x08;
    /// Human-readable message, text, 0..=1024 bytes.
    pub const MESSAGE: u8 = 0x09;
    /// Reconnect hint in milliseconds, `u32` big-endian.
    pub const RETRY_AFTER_MS: u8 = 0x0A;
    /// Heartbeat interval in milliseconds, `u32` big-endian.
    pub const HEARTBEAT_MS: u8 = 0x0B;
    /// Connection id, `u64` big-endian.
    pub const CONN_ID: u8 = 0x0C;
    /// Unix time in milliseconds, `u64` big-endian.
    pub const EXPIRES_AT_MS: u8 = 0x0D;
    /// Epoch of a group's log, `u64` big-endian: `SEQ` values compare only within one
    /// epoch.
    pub const EPOCH: u8 = 0x0E;
    /// Whether a rejoin was recovered (`JoinAck` only), `u8`: 1 recovered, 0 not.
    pub const RECOVERED: u8 = 0x0F;
    /// The client's network type in a `QualityReport`, `u8`: 0 unknown, 1 wifi,
    /// 2 cellular, 3 wired.
    pub const NETWORK: u8 = 0x10;
}

/// Largest `NETWORK` value (3, wired).
pub const MAX_NETWORK: u8 = 3;

/// Longest app, device or group id in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest token in bytes.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest message in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Longest value of any one field (the `len` field is a `u16`).
pub const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// A UTF-8 string backed by `Bytes`, so decoding can hand out slices of the read buffer.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// The empty text.
    pub const fn new() -> Text {
        Text(Bytes::new())
    }

    /// A text from a static string, without copying.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes the caller has already checked to be UTF-8.
    pub(crate) fn from_validated(bytes: Bytes) -> Text {
        Text(bytes)
    }

    /// Wraps bytes after checking they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text as `&str`.
    pub fn as_str(&self) -> &str {
        // Every constructor validated the bytes; this re-check is cheap for ids and never
        // fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy in its own allocation. Decoded texts are slices of the read buffer and keep
    /// all of it alive; detach ids that outlive the frame (hub keys, group names).
    pub fn detach(&self) -> Text {
        Text(Bytes::copy_from_slice(&self.0))
    }

    /// The underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Request metadata: an ordered list of `(key, value)` entries, kept in its wire form.
///
/// Wire form of the `META` field value: zero or more entries, each
/// `key_len u8 (1..=255), key (UTF-8), value_len u16 BE, value (bytes)`.
/// Decoding validates the whole list once; iteration then never fails.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Bytes);

impl Metadata {
    /// Metadata with no entries.
    pub const fn new() -> Metadata {
        Metadata(Bytes::new())
    }

    /// Builds metadata from pairs. Fails if a key is empty or longer than 255 bytes, a value
    /// is longer than 65,535 bytes, or the whole list does not fit in one field.
    pub fn from_pairs<'a, I, V>(pairs: I) -> Result<Metadata, EncodeError>
    where
        I: IntoIterator<Item = (&'a str, V)>,
        V: AsRef<[u8]>,
    {
        let mut buf = BytesMut::new();
        for (key, value) in pairs {
            let value = value.as_ref();
            if key.is_empty() || key.len() > u8::MAX as usize {
                return Err(EncodeError::InvalidValue {
                    what: "metadata key",
                    reason: "must be 1..=255 bytes",
                });
            }
            if value.len() > u16::MAX as usize {
                return Err(EncodeError::InvalidValue {
                    what: "metadata value",
                    reason: "must be at most 65535 bytes",
                });
            }
            buf.put_u8(key.len() as u8);
            buf.put_slice(key.as_bytes());
            buf.put_u16(value.len() as u16);
            buf.put_slice(value);
        }
        if buf.len() > MAX_FIELD_LEN {
            return Err(EncodeError::InvalidValue {
                what: "metadata",
                reason: "encoded entries exceed 65535 bytes",
            });
        }
        Ok(Metadata(buf.freeze()))
    }

    /// Wraps a `META` field value that [`Metadata::validate_wire`] accepted.
    pub(crate) fn from_validated_wire(bytes: Bytes) -> Metadata {
        Metadata(bytes)
    }

    /// Checks every entry of a `META` field value.
    pub(crate) fn validate_wire(bytes: &[u8]) -> Result<(), DecodeError> {
        let mut rest: &[u8] = bytes;
        while !rest.is_empty() {
            let (key, value, tail) = split_entry(rest).ok_or(DecodeError::MalformedField {
                tag: tag::META,
                reason: "metadata entry overruns the field",
            })?;
            if key.is_empty() {
                return Err(DecodeError::MalformedField {
                    tag: tag::META,
                    reason: "empty metadata key",
                });
            }
            if std::str::from_utf8(key).is_err() {
                return Err(DecodeError::InvalidUtf8 { tag: tag::META });
            }
            let _ = value;
            rest = tail;
        }
        Ok(())
    }

    /// The wire form of the entries.
    pub fn as_wire(&self) -> &Bytes {
        &self.0
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in wire order.
    pub fn iter(&self) -> MetadataIter<'_> {
        MetadataIter { rest: &self.0 }
    }

    /// The value of the first entry named `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// Iterator over [`Metadata`] entries.
#[derive(Debug, Clone)]
pub struct MetadataIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value, tail) = split_entry(self.rest)?;
        self.rest = tail;
        // Validated by `validate_wire` / built from `&str` in `from_pairs`.
        Some((std::str::from_utf8(key).unwrap_or_default(), value))
    }
}

/// Splits one metadata entry off the front: `(key, value, rest)`.
fn split_entry(buf: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&key_len, rest) = buf.split_first()?;
    let key_len = key_len as usize;
    if rest.len() < key_len + 2 {
        return None;
    }
    let (key, rest) = rest.split_at(key_len);
    let value_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < value_len {
        return None;
    }
    let (value, rest) = rest.split_at(value_len);
    Some((key, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_rejects_overruns() {
        let meta = Metadata::from_pairs([("os", b"ios".as_slice()), ("v", b"")]).unwrap();
        let pairs: Vec<_> = meta.iter().collect();
        assert_eq!(
            pairs,
            vec![("os", b"ios".as_slice()), ("v", b"".as_slice())]
        );
        assert_eq!(meta.get("os"), Some(b"ios".as_slice()));
        assert_eq!(meta.get("missing"), None);

        let wire = meta.as_wire().clone();
        assert!(Metadata::validate_wire(&wire).is_ok());
        assert_eq!(Metadata::from_validated_wire(wire.clone()), meta);
        let cut = wire.slice(..wire.len() - 1);
        assert!(matches!(
            Metadata::validate_wire(&cut),
            Err(DecodeError::MalformedField { tag: tag::META, .. })
        ));
        assert!(Metadata::from_pairs([("", b"x")]).is_err());
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        assert!(Text::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_err());
        assert_eq!(Text::from_utf8(Bytes::from_static(b"d1")).unwrap(), "d1");
    }
}
