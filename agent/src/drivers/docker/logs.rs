//! A container's output, read from the engine: followed live while it runs, the head of
//! stdout and the tail of stderr kept for the run's result (as the exec driver keeps them);
//! and, for people, one stream's lines with the engine's timestamps (`alloc logs`).

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use windflow_protocol::STDERR_TAIL_BYTES;
use windflow_protocol::messages::OutputStream;

use super::{Container, DockerDriver, DockerError};

/// What a run keeps of a container's output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: Vec<u8>,
}

impl Captured {
    fn take(&mut self, stream: OutputStream, data: &[u8], stdout_cap: usize) {
        match stream {
            OutputStream::Stdout => {
                let room = stdout_cap.saturating_sub(self.stdout.len());
                if data.len() > room {
                    self.stdout_truncated = true;
                }
                self.stdout.extend_from_slice(&data[..data.len().min(room)]);
            }
            OutputStream::Stderr => {
                self.stderr_tail.extend_from_slice(data);
                let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL_BYTES);
                self.stderr_tail.drain(..excess);
            }
        }
    }
}

impl DockerDriver {
    /// Follows the container's output from its start until it stops, handing each chunk to
    /// `live` (until `live_cap` bytes have gone by) and keeping what a result keeps.
    pub async fn follow_output(
        &self,
        c: &Container,
        stdout_cap: usize,
        live_cap: u64,
        mut live: impl FnMut(OutputStream, Vec<u8>),
    ) -> Result<Captured, DockerError> {
        let docker = self.client().await?;
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(&c.id, Some(options));
        let mut captured = Captured::default();
        let mut sent = 0u64;
        while let Some(item) = logs.next().await {
            let (stream, message) = match item.map_err(DockerError::engine("read the logs"))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (OutputStream::Stdout, message)
                }
                LogOutput::StdErr { message } => (OutputStream::Stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            captured.take(stream, &message, stdout_cap);
            if sent < live_cap {
                sent = sent.saturating_add(message.len() as u64);
                live(stream, message.to_vec());
            }
        }
        Ok(captured)
    }
}

/// One line of a container's log as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the engine got it, in ns since the epoch.
    pub at_ns: u128,
    /// The line as the task wrote it, its newline included.
    pub bytes: Vec<u8>,
}

/// What to ask the engine for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    pub stream: OutputStream,
    pub follow: bool,
    /// Whole seconds since the epoch (the engine's API takes no finer cut).
    pub since_secs: Option<u64>,
    /// The engine's own tail (`None`: all).
    pub tail: Option<u32>,
}

impl DockerDriver {
    /// One stream of a container's log, each line with the engine's timestamp.
    pub async fn log_lines(
        &self,
        c: &Container,
        q: LogQuery,
    ) -> Result<BoxStream<'static, Result<LogLine, DockerError>>, DockerError> {
        let docker = self.client().await?.clone();
        let tail = q.tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
        let since = q
            .since_secs
            .map_or(0, |s| i32::try_from(s).unwrap_or(i32::MAX));
        let options = LogsOptionsBuilder::default()
            .follow(q.follow)
            .stdout(q.stream == OutputStream::Stdout)
            .stderr(q.stream == OutputStream::Stderr)
            .timestamps(true)
            .since(since)
            .tail(&tail)
            .build();
        let lines = docker
            .logs(&c.id, Some(options))
            .filter_map(|item| async move {
                let message = match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message })
                    | Ok(LogOutput::StdErr { message }) => message,
                    Ok(LogOutput::StdIn { .. }) => return None,
                    Err(e) => return Some(Err(DockerError::engine("read the logs")(e))),
                };
                Some(Ok(split_timestamp(&message)))
            });
        Ok(lines.boxed())
    }
}

/// `2026-12-02T17:06:28.123456789Z rest` → the instant in ns and `rest`; a line without
/// a readable timestamp is taken as written at 0.
fn split_timestamp(message: &[u8]) -> LogLine {
    let parsed = message
        .iter()
        .position(|b| *b == b' ')
        .and_then(|sp| Some((parse_ns(std::str::from_utf8(&message[..sp]).ok()?)?, sp)));
    match parsed {
        Some((at_ns, sp)) => LogLine {
            at_ns,
            bytes: message[sp + 1..].to_vec(),
        },
        None => LogLine {
            at_ns: 0,
            bytes: message.to_vec(),
        },
    }
}

/// An RFC 3339 UTC instant with up to 9 fraction digits, in ns since the epoch.
fn parse_ns(s: &str) -> Option<u128> {
    let body = s.strip_suffix('Z')?;
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: windflow_protocol::Timestamp = format!("{whole}Z").parse().ok()?;
    let nanos: u128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(u128::from(secs.0 / 1000) * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_timestamps_are_read_to_the_nanosecond() {
        let line = split_timestamp(b"2026-12-02T17:06:28.000000123Z hello\n");
        assert_eq!(line.bytes, b"hello\n");
        let base = parse_ns("2026-12-02T17:06:28Z").unwrap();
        assert_eq!(line.at_ns, base + 123);
        assert_eq!(parse_ns("2026-12-02T17:06:28.5Z"), Some(base + 500_000_000));
        assert!(parse_ns("2026-12-02T17:06:28.5").is_none());
        let bare = split_timestamp(b"no stamp");
        assert_eq!((bare.at_ns, bare.bytes.as_slice()), (0, &b"no stamp"[..]));
    }

    #[test]
    fn stdout_keeps_its_head_and_stderr_its_tail() {
        let mut c = Captured::default();
        c.take(OutputStream::Stdout, b"hello ", 8);
        c.take(OutputStream::Stdout, b"world", 8);
        assert_eq!(c.stdout, b"hello wo");
        assert!(c.stdout_truncated);
        let big = vec![b'x'; STDERR_TAIL_BYTES];
        c.take(OutputStream::Stderr, &big, 8);
        c.take(OutputStream::Stderr, b"end", 8);
        assert_eq!(c.stderr_tail.len(), STDERR_TAIL_BYTES);
        assert!(c.stderr_tail.ends_with(b"end"));
    }
}
