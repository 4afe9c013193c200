//! Protocol frames over the QUIC streams these configs secure: one place that reads and
//! writes `windflow_protocol`'s codec on quinn streams, for agents, the gateway and raft.

use serde::Serialize;
use serde::de::DeserializeOwned;
use windflow_protocol::codec::{self, CodecError, HEADER_LEN};

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads one frame; `Ok(None)` when the peer finished the stream between frames. The
/// length is checked against the codec's limit before anything is allocated for it.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, WireError> {
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

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), WireError> {
    send.write_all(&codec::encode(msg)?).await?;
    Ok(())
}
