//! Frames over QUIC streams, with the codec of `windflow_protocol`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use windflow_protocol::codec::{self, CodecError, HEADER_LEN};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads one frame; `Ok(None)` when the peer finished the stream between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut payload = vec![0u8; codec::decode_len(header)?];
    recv.read_exact(&mut payload).await?;
    Ok(Some(codec::decode_payload(&payload)?))
}

pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), FrameError> {
    send.write_all(&codec::encode(msg)?).await?;
    Ok(())
}
