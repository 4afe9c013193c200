//! Frames over QUIC streams, with the codec of `windflow_protocol`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use windflow_protocol::codec::{self, HEADER_LEN};

use crate::AgentError;

/// Reads one frame; `Ok(None)` when the server finished the stream between frames.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<T>, AgentError> {
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
) -> Result<(), AgentError> {
    send.write_all(&codec::encode(msg)?).await?;
    Ok(())
}
