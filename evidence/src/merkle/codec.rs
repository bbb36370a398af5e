//! The canonical binary encoding shared by leaves and tree heads: fixed-width big-endian integers,
//! raw 32-byte hashes and UTF-8 strings with a `u32` big-endian byte-length prefix.

use super::{DecodeError, Hash, MAX_FIELD_LEN};

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Fields longer than MAX_FIELD_LEN are rejected by `Reader::string`; such values never come
    // out of a successful decode. The prefix saturates rather than wrapping for absurd lengths.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn hash(&mut self, field: &'static str) -> Result<Hash, DecodeError> {
        self.array(field)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = u32::from_be_bytes(self.array(field)?);
        let len = usize::try_from(len).map_err(|_| DecodeError::FieldTooLong { field })?;
        if len > MAX_FIELD_LEN {
            return Err(DecodeError::FieldTooLong { field });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// Strictness: the whole input must have been consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}
