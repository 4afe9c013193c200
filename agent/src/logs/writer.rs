//! Writing a task stream's log: each line as one record `<ms> <flag><bytes>\n`, where `ms`
//! is when the line was read (ms since the epoch), and the flag says whether the task's
//! line ends there (`|`) or goes on in the next record (`+`: output without a newline yet,
//! or a piece of a very long line). Files are rotated by size, the oldest removed past the
//! count.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use windflow_protocol::Timestamp;
use windflow_protocol::messages::OutputStream;

use super::{LogPolicy, LogTarget, stream_file, stream_files};

/// The longest piece of a line in one record; longer lines take several.
pub(super) const FRAGMENT_MAX: usize = 32 * 1024;
/// Flag of a record that ends a line.
pub(super) const LINE_END: u8 = b'|';
/// Flag of a record whose line goes on in the next one.
pub(super) const LINE_GOES_ON: u8 = b'+';

/// Appends one stream's output to its rotated files.
pub struct LogWriter {
    dir: PathBuf,
    stream: OutputStream,
    policy: LogPolicy,
    index: u64,
    file: File,
    len: u64,
}

impl LogWriter {
    /// Opens the stream's newest file in `target.dir` (created owner-only), to go on where
    /// an earlier writer of the same task stopped.
    pub fn open(target: &LogTarget, stream: OutputStream) -> io::Result<LogWriter> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target.dir)?;
        let index = stream_files(&target.dir, stream)
            .last()
            .map_or(0, |(k, _)| *k);
        let file = open_file(&target.dir, stream, index)?;
        let len = file.metadata()?.len();
        Ok(LogWriter {
            dir: target.dir.clone(),
            stream,
            policy: target.policy,
            index,
            file,
            len,
        })
    }

    /// Writes `data`, read at `at`, as records: one per line or piece of a line. The
    /// records of one call go to the file in one write per file they land in.
    pub fn write(&mut self, at: Timestamp, data: &[u8]) -> io::Result<()> {
        let stamp = format!("{} ", at.0);
        let mut batch = Vec::with_capacity(data.len() + 32);
        for line in data.split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match line.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (line, false),
            };
            if body.is_empty() {
                // An empty line still ends.
                self.record(&mut batch, &stamp, b"", LINE_END)?;
                continue;
            }
            let mut pieces = body.chunks(FRAGMENT_MAX).peekable();
            while let Some(piece) = pieces.next() {
                let flag = if ends && pieces.peek().is_none() {
                    LINE_END
                } else {
                    LINE_GOES_ON
                };
                self.record(&mut batch, &stamp, piece, flag)?;
            }
        }
        self.flush(&mut batch)
    }

    /// Adds one record to `batch`, first writing out what would not fit in the current
    /// file and rotating.
    fn record(
        &mut self,
        batch: &mut Vec<u8>,
        stamp: &str,
        body: &[u8],
        flag: u8,
    ) -> io::Result<()> {
        let len = (stamp.len() + 2 + body.len()) as u64;
        let in_file = self.len + batch.len() as u64;
        if in_file > 0 && in_file + len > self.policy.max_file_bytes {
            self.flush(batch)?;
            self.rotate()?;
        }
        batch.extend_from_slice(stamp.as_bytes());
        batch.push(flag);
        batch.extend_from_slice(body);
        batch.push(b'\n');
        Ok(())
    }

    /// Writes `batch` to the current file and empties it.
    fn flush(&mut self, batch: &mut Vec<u8>) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.file.write_all(batch)?;
        self.len += batch.len() as u64;
        batch.clear();
        Ok(())
    }

    /// Starts the next file and removes those past the count.
    fn rotate(&mut self) -> io::Result<()> {
        self.index += 1;
        self.file = open_file(&self.dir, self.stream, self.index)?;
        self.len = 0;
        let keep_from = (self.index + 1).saturating_sub(u64::from(self.policy.max_files.max(1)));
        for (k, path) in stream_files(&self.dir, self.stream) {
            if k < keep_from {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }
}

fn open_file(dir: &std::path::Path, stream: OutputStream, k: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(stream_file(dir, stream, k))
}
