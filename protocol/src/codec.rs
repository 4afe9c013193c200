//! The frame codec: a `u32` big-endian payload length, then the payload in bincode 2
//! (serde, standard config). Frames longer than [`MAX_FRAME_LEN`] are refused before
//! anything is allocated for them, and decoding never panics on hostile input.
//!
//! Stream readers use [`decode_len`] on the 4-byte header, read exactly that many bytes,
//! then [`decode_payload`]; [`decode_frame`] does the same on a buffer.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// The largest payload accepted: 16 MiB (a context is at most 1 MiB).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The header announces more than [`MAX_FRAME_LEN`] bytes.
    TooLarge { len: usize, max: usize },
    /// The buffer ends before the frame does.
    Truncated { needed: usize, available: usize },
    /// The payload is not a valid message.
    Malformed(String),
    /// The payload decoded but left bytes over.
    TrailingBytes { extra: usize },
    /// The message could not be encoded.
    Encode(String),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            CodecError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated frame: needed {needed} bytes, have {available}"
                )
            }
            CodecError::Malformed(why) => write!(f, "malformed frame: {why}"),
            CodecError::TrailingBytes { extra } => {
                write!(f, "malformed frame: {extra} bytes after the message")
            }
            CodecError::Encode(why) => write!(f, "cannot encode message: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes `msg` as one frame: header and payload.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = frame.len() - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// The payload length a header announces, refused when over the limit.
pub fn decode_len(header: [u8; HEADER_LEN]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes one message from exactly one payload.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::TrailingBytes {
            extra: payload.len() - used,
        });
    }
    Ok(msg)
}

/// Decodes the frame at the start of `buf`; returns the message and the bytes it used.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<(T, usize), CodecError> {
    let header: [u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(CodecError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        })?;
    let len = decode_len(header)?;
    let payload = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(CodecError::Truncated {
            needed: HEADER_LEN + len,
            available: buf.len(),
        })?;
    Ok((decode_payload(payload)?, HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, RunId};
    use crate::job::{DriverConfig, ExecConfig, JobSpec, RetryPolicy, TaskSpec};
    use crate::messages::*;
    use crate::run::RunOutcome;
    use crate::time::{HumanDuration, Timestamp};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn task(command: String, env: BTreeMap<String, String>, timeout_ms: Option<u64>) -> TaskSpec {
        TaskSpec {
            name: "t".into(),
            driver: DriverConfig::Exec(ExecConfig {
                command,
                workdir: Some("/tmp".into()),
            }),
            env,
            secret_env: BTreeMap::new(),
            timeout: timeout_ms.map(HumanDuration::from_millis),
            retry: RetryPolicy::default(),
            resources: crate::Resources::TASK_DEFAULT,
        }
    }

    fn server_message() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                ".*",
                proptest::collection::btree_map(".*", ".*", 0..4),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(run, job, cmd, env, t)| ServerMessage::RunTask(RunTask {
                    run: RunId(run),
                    job: JobId(job),
                    task: task(cmd, env, t),
                })),
            any::<u64>().prop_map(|seq| ServerMessage::HeartbeatAck { seq }),
            ".*".prop_map(|reason| ServerMessage::Refused { reason }),
        ]
    }

    fn agent_message() -> impl Strategy<Value = AgentMessage> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..512)
            )
                .prop_map(|(run, attempt, data)| AgentMessage::Output(OutputChunk {
                    run: RunId(run),
                    attempt,
                    stream: OutputStream::Stderr,
                    data,
                })),
            (
                any::<u64>(),
                any::<Option<i32>>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..512),
                proptest::option::of(".*")
            )
                .prop_map(|(run, exit_code, attempts, stdout, error)| {
                    AgentMessage::Finished(TaskFinished {
                        run: RunId(run),
                        outcome: RunOutcome::Failed,
                        exit_code,
                        attempts,
                        started_at: Timestamp(run),
                        duration: HumanDuration::from_millis(u64::from(attempts)),
                        stdout,
                        stdout_truncated: false,
                        stderr_tail: vec![],
                        error,
                    })
                }),
            (".*", ".*").prop_map(|(hostname, agent_version)| AgentMessage::Hello(Hello {
                versions: VersionRange::SUPPORTED,
                hostname: hostname.clone(),
                agent_version,
                drivers: vec![crate::DriverKind::Exec],
                fingerprint: crate::Fingerprint {
                    resources: crate::Resources::TASK_DEFAULT,
                    attributes: [("os".to_owned(), hostname)].into(),
                },
                alloc_index: 0,
            })),
        ]
    }

    proptest! {
        #[test]
        fn server_messages_round_trip(msg in server_message()) {
            let frame = encode(&msg).unwrap();
            let (back, used) = decode_frame::<ServerMessage>(&frame).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn agent_messages_round_trip(msg in agent_message()) {
            let frame = encode(&msg).unwrap();
            let (back, _) = decode_frame::<AgentMessage>(&frame).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn every_truncation_is_an_error(msg in agent_message(), cut in any::<prop::sample::Index>()) {
            let frame = encode(&msg).unwrap();
            let cut = cut.index(frame.len());
            let err = decode_frame::<AgentMessage>(&frame[..cut]).unwrap_err();
            let is_truncated = matches!(err, CodecError::Truncated { .. });
            prop_assert!(is_truncated);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_frame::<AgentMessage>(&bytes);
            let _ = decode_frame::<ServerMessage>(&bytes);
            let _ = decode_payload::<AgentMessage>(&bytes);
        }
    }

    #[test]
    fn oversized_header_is_refused_without_allocating() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_len(header),
            Err(CodecError::TooLarge { .. })
        ));
        let mut buf = header.to_vec();
        buf.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode_frame::<AgentMessage>(&buf),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_length_inside_payload_is_refused() {
        // A Vec<u8> claiming u64::MAX elements: variant 3 (Output), then fields.
        let mut payload = vec![3u8, 1, 1, 1];
        payload.extend_from_slice(&[0xFF; 9]);
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        assert!(decode_frame::<AgentMessage>(&frame).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode(&ServerMessage::HeartbeatAck { seq: 1 }).unwrap();
        frame.push(0);
        let len = (frame.len() - HEADER_LEN) as u32;
        frame[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_frame::<ServerMessage>(&frame),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn shorthand_job_round_trips_through_json() {
        let spec = JobSpec::exec(
            "backup",
            task("echo hi".into(), BTreeMap::new(), Some(30_000)),
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["type"], "batch");
        assert_eq!(json["groups"][0]["tasks"][0]["timeout"], "30s");
        let back: JobSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }
}

/// Serde for `Vec<u8>` fields as one byte string instead of a sequence of `u8`s: on the
/// wire that is a length and a copy rather than a loop over every byte.
/// Use with `#[serde(with = "crate::codec::bytes")]`.
pub mod bytes {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Formats without byte strings (JSON) write a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
