//! Reading a task stream's log back: [`Follower`] reads the records in order across the
//! rotated files (and goes on as they grow and rotate), [`Cut`] keeps what `since` and
//! `tail` ask for and renders it as the task wrote it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use windflow_protocol::Timestamp;
use windflow_protocol::messages::OutputStream;

use super::stream_files;
use super::writer::{LINE_END, LINE_GOES_ON};

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the task's line (this piece of it) was read.
    pub at: Timestamp,
    /// The task's line ends after `body`.
    pub ends_line: bool,
    pub body: Vec<u8>,
}

impl Record {
    /// Parses `<ms> <flag><body>` (without its newline); `None` for anything else.
    fn parse(raw: &[u8]) -> Option<Record> {
        let space = raw.iter().position(|b| *b == b' ')?;
        let ms = std::str::from_utf8(&raw[..space]).ok()?.parse().ok()?;
        let flag = *raw.get(space + 1)?;
        let ends_line = match flag {
            LINE_END => true,
            LINE_GOES_ON => false,
            _ => return None,
        };
        Some(Record {
            at: Timestamp(ms),
            ends_line,
            body: raw[space + 2..].to_vec(),
        })
    }

    /// The bytes as the task wrote them.
    fn render_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body);
        if self.ends_line {
            out.push(b'\n');
        }
    }
}

/// Reads one stream's records in order, from its oldest file on, following the files as
/// they grow and rotate. A file rotated away while being read is read to its end (it is
/// held open); files rotated away before they were reached are skipped.
pub struct Follower {
    dir: PathBuf,
    stream: OutputStream,
    /// The file being read, by its number.
    at: Option<(u64, File)>,
    /// Bytes read past the last whole record.
    pending: Vec<u8>,
    /// The first file to read.
    pub(super) from: u64,
}

impl Follower {
    pub fn new(dir: impl Into<PathBuf>, stream: OutputStream) -> Follower {
        Follower {
            dir: dir.into(),
            stream,
            at: None,
            pending: Vec::new(),
            from: 0,
        }
    }

    /// A follower for what a request keeps: with `tail` and no `since`, it starts at the
    /// newest file from which on at least `tail` whole lines are kept (plus one, which a
    /// line begun in the file before may cut short), instead of reading every file.
    pub fn for_cut(
        dir: impl Into<PathBuf>,
        stream: OutputStream,
        since: Option<Timestamp>,
        tail: Option<usize>,
    ) -> Follower {
        let mut follower = Follower::new(dir, stream);
        let (None, Some(tail)) = (since, tail) else {
            return follower;
        };
        let mut lines = 0usize;
        for (k, path) in stream_files(&follower.dir, stream).into_iter().rev() {
            follower.from = k;
            lines += std::fs::read(&path).map_or(0, |bytes| line_ends(&bytes));
            if lines > tail {
                break;
            }
        }
        follower
    }

    /// The records written since the last call, about `max` bytes of them at most, and
    /// whether that is all there is for now.
    pub fn poll(&mut self, max: usize) -> (Vec<Record>, bool) {
        let mut records = Vec::new();
        let mut taken = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if taken >= max {
                return (records, false);
            }
            let Some((k, file)) = &mut self.at else {
                let from = self.from;
                let first = stream_files(&self.dir, self.stream)
                    .into_iter()
                    .find(|(k, _)| *k >= from);
                match first.and_then(|(k, p)| Some((k, File::open(p).ok()?))) {
                    Some(opened) => {
                        self.at = Some(opened);
                        continue;
                    }
                    None => return (records, true),
                }
            };
            let n = file.read(&mut buf).unwrap_or(0);
            if n > 0 {
                taken += n;
                self.pending.extend_from_slice(&buf[..n]);
                self.take_records(&mut records);
                continue;
            }
            // At the end of file k: the writer has moved on once a later file exists, so
            // what k holds now is all it will ever hold.
            let current = *k;
            let next = stream_files(&self.dir, self.stream)
                .into_iter()
                .find(|(j, _)| *j > current);
            let Some((j, path)) = next else {
                return (records, true);
            };
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
            self.take_records(&mut records);
            self.pending.clear();
            self.at = File::open(path).ok().map(|f| (j, f));
        }
    }

    fn take_records(&mut self, records: &mut Vec<Record>) {
        let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = self.pending.drain(..=last_newline).collect();
        records.extend(
            whole
                .split(|b| *b == b'\n')
                .filter(|r| !r.is_empty())
                .filter_map(Record::parse),
        );
    }
}

/// How many records of `bytes` end a line (flag `|`).
fn line_ends(bytes: &[u8]) -> usize {
    bytes
        .split(|b| *b == b'\n')
        .filter(|r| {
            r.iter()
                .position(|b| *b == b' ')
                .is_some_and(|sp| r.get(sp + 1) == Some(&LINE_END))
        })
        .count()
}

/// What a request keeps of the records: lines from `since` on, the last `tail` of them.
/// A line is kept or dropped whole, by when its first piece was read.
pub struct Cut {
    since: Option<Timestamp>,
    tail: Option<usize>,
    /// Inside a line that goes on: whether it is kept.
    in_line: Option<bool>,
    /// With `tail`: the last lines, the unfinished one last.
    lines: VecDeque<Vec<u8>>,
    open_line: Vec<u8>,
}

impl Cut {
    pub fn new(since: Option<Timestamp>, tail: Option<usize>) -> Cut {
        Cut {
            since,
            tail,
            in_line: None,
            lines: VecDeque::new(),
            open_line: Vec::new(),
        }
    }

    /// Takes records of the history; what may be sent now (nothing yet with `tail`).
    pub fn take(&mut self, records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            let keep = *self
                .in_line
                .get_or_insert_with(|| self.since.is_none_or(|s| r.at >= s));
            self.in_line = if r.ends_line { None } else { Some(keep) };
            if !keep {
                continue;
            }
            match self.tail {
                None => r.render_into(&mut out),
                Some(n) => {
                    r.render_into(&mut self.open_line);
                    if r.ends_line {
                        self.lines.push_back(std::mem::take(&mut self.open_line));
                        if self.lines.len() > n {
                            self.lines.pop_front();
                        }
                    }
                }
            }
        }
        out
    }

    /// The end of the history: what is left to send (with `tail`, the last lines). Records
    /// after this are new lines, sent as they are ([`render`]).
    pub fn finish(&mut self) -> Vec<u8> {
        let Some(n) = self.tail else {
            return Vec::new();
        };
        if !self.open_line.is_empty() {
            self.lines.push_back(std::mem::take(&mut self.open_line));
        }
        while self.lines.len() > n {
            self.lines.pop_front();
        }
        self.lines.drain(..).flatten().collect()
    }
}

/// Records as the task wrote them.
pub fn render(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.render_into(&mut out);
    }
    out
}

/// The whole history of a stream cut by `since` and `tail`, as the task wrote it.
pub fn history(
    dir: impl Into<PathBuf>,
    stream: OutputStream,
    since: Option<Timestamp>,
    tail: Option<usize>,
) -> Vec<u8> {
    let mut follower = Follower::for_cut(dir, stream, since, tail);
    let mut cut = Cut::new(since, tail);
    let mut out = Vec::new();
    loop {
        let (records, caught_up) = follower.poll(1 << 20);
        out.extend(cut.take(&records));
        if caught_up {
            break;
        }
    }
    out.extend(cut.finish());
    out
}
