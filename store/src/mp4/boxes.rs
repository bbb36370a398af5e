//! Minimal ISO BMFF box writer: big-endian field appenders over a `Vec<u8>` plus nested boxes whose
//! 32-bit size field is written as a placeholder at [`BoxWriter::start`] and patched at
//! [`BoxWriter::end`].
//!
//! A box is `size: u32, type: [u8; 4], body`; a "full box" adds `version: u8, flags: u24` before the
//! body. Everything the writer builds (the init segment and each `moof`) is far below 4 GiB, so only
//! the 32-bit size form is produced here; `mdat` headers are written by the fragment builder, which
//! switches to the 64-bit `largesize` form when needed.

/// Appends boxes to a byte buffer.
#[derive(Default)]
pub(crate) struct BoxWriter {
    buf: Vec<u8>,
}

/// The buffer offset of an open box's size field, returned by [`BoxWriter::start`].
#[must_use = "every started box must be ended"]
pub(crate) struct OpenBox(usize);

impl BoxWriter {
    pub(crate) fn with_capacity(capacity_bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity_bytes),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Opens a plain box; its size is filled in by [`Self::end`].
    pub(crate) fn start(&mut self, box_type: &[u8; 4]) -> OpenBox {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(box_type);
        OpenBox(at)
    }

    /// Opens a full box (version and 24-bit flags after the type).
    pub(crate) fn start_full(&mut self, box_type: &[u8; 4], version: u8, flags: u32) -> OpenBox {
        debug_assert!(flags < 1 << 24);
        let b = self.start(box_type);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        b
    }

    /// Closes a box by writing its final size.
    pub(crate) fn end(&mut self, b: OpenBox) {
        let size = self.buf.len() - b.0;
        let size = u32::try_from(size).expect("boxes built here are far below 4 GiB");
        self.buf[b.0..b.0 + 4].copy_from_slice(&size.to_be_bytes());
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    pub(crate) fn zeros(&mut self, n_bytes: usize) {
        self.buf.resize(self.buf.len() + n_bytes, 0);
    }

    /// Overwrites 4 bytes at `at` (used for `trun` data offsets known only after the `moof` is built).
    pub(crate) fn patch_i32(&mut self, at: usize, v: i32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// The unity transformation matrix used by `mvhd` and `tkhd`.
    pub(crate) fn unity_matrix(&mut self) {
        for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
            self.u32(v);
        }
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sizes_are_patched() {
        let mut w = BoxWriter::default();
        let outer = w.start(b"moov");
        let inner = w.start_full(b"mvhd", 1, 0x0203);
        w.u16(7);
        w.end(inner);
        w.end(outer);
        assert_eq!(
            w.into_inner(),
            [
                0, 0, 0, 22, b'm', b'o', b'o', b'v', 0, 0, 0, 14, b'm', b'v', b'h', b'd', 1, 0, 2,
                3, 0, 7
            ]
        );
    }
}
