//! A container's output, read from the engine: followed live while it runs, the head of
//! stdout and the tail of stderr kept for the run's result (as the exec driver keeps them).

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
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

#[cfg(test)]
mod tests {
    use super::*;

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
