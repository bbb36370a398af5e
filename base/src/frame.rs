//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes (at least one). The one
//! framing of the recorder's control socket, the arbiter's operator socket and the arbiters'
//! heartbeats (`docs/control.md`, `docs/failover.md`); the reader bounds what it accepts before it
//! allocates.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why no frame was read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection ended before a whole length was read: no frame began.
    #[error("connection closed")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u32, max: u32 },
    #[error("empty frame")]
    Empty,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// As an I/O error: `Closed` is an unexpected end of file, a bad length invalid data.
impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            FrameError::Closed => std::io::ErrorKind::UnexpectedEof.into(),
            e => std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }
    }
}

/// Reads one frame of 1 to `max` bytes.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin), max: u32) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one frame and flushes.
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(data.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(data).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").await.expect("write");
        write_frame(&mut wire, &[7; 11]).await.expect("write");
        assert_eq!(&wire[..4], &[0, 0, 0, 5]);
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r, 5).await.expect("first"), b"hello");
        assert!(matches!(
            read_frame(&mut r, 10).await,
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        assert!(matches!(
            read_frame(&mut [].as_slice(), 10).await,
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut [0u8, 0, 0, 0].as_slice(), 10).await,
            Err(FrameError::Empty)
        ));
        // Cut inside the length: no frame began. Cut inside the payload: an I/O error.
        assert!(matches!(
            read_frame(&mut [0u8, 0].as_slice(), 10).await,
            Err(FrameError::Closed)
        ));
        match read_frame(&mut [0u8, 0, 0, 3, 1].as_slice(), 10).await {
            Err(FrameError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
