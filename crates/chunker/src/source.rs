//! Positioned reads over a `Read + Seek` source, for the parsers.
//!
//! Parsers read headers at known offsets and scan forward for markers; none of them
//! ever holds more than one scan window (plus the few headers it needs) in memory.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// Why a parser stopped before the end of the file.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Reading failed: the whole plan fails.
    Io(io::Error),
    /// The structure is truncated or corrupt from here on: the rest of the file is cut
    /// by size, with a warning naming the reason.
    Corrupt(String),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        Stop::Io(error)
    }
}

/// A parser's result: `Ok` when it recognized the structure up to where it stopped.
pub(crate) type Parsed = Result<(), Stop>;

/// Shorthand for a corrupt-structure stop.
pub(crate) fn corrupt<T>(reason: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Corrupt(reason.into()))
}

/// Bytes of one scan window.
const WINDOW: usize = 1 << 20;

/// A file being parsed.
pub(crate) struct Source<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
    window: Vec<u8>,
}

impl<R: Read + Seek> Source<R> {
    pub(crate) fn new(reader: R, len: u64) -> io::Result<Self> {
        let mut inner = BufReader::with_capacity(64 * 1024, reader);
        inner.seek(SeekFrom::Start(0))?;
        Ok(Self {
            inner,
            pos: 0,
            len,
            window: Vec::new(),
        })
    }

    /// The file's length as given to the planner.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn seek(&mut self, offset: u64) -> io::Result<()> {
        if offset != self.pos {
            // Relative seeks keep BufReader's buffer when the target lies inside it,
            // which makes walking many small headers cheap.
            let delta = i64::try_from(offset).unwrap_or(i64::MAX)
                - i64::try_from(self.pos).unwrap_or(i64::MAX);
            self.inner.seek_relative(delta)?;
            self.pos = offset;
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a read past the end is corruption.
    pub(crate) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Parsed {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return corrupt(format!(
                "truncated: {} bytes needed at offset {offset}",
                buf.len()
            ));
        }
        self.seek(offset)?;
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.pos = u64::MAX; // unknown; force a real seek next time
                Err(Stop::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file shorter than {} bytes (it changed while being read?)",
                        self.len
                    ),
                )))
            }
            Err(e) => {
                self.pos = u64::MAX;
                Err(Stop::Io(e))
            }
        }
    }

    /// Reads up to `n` bytes at `offset` (fewer at the end of the file).
    pub(crate) fn read_upto(&mut self, offset: u64, n: usize) -> Result<Vec<u8>, Stop> {
        let n = n.min(self.len.saturating_sub(offset) as usize);
        let mut buf = vec![0; n];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Scans forward from `from` in windows that overlap by `overlap` bytes; `find`
    /// gets each window and its offset and returns the index of a match it found
    /// entirely inside the window. Returns the match's absolute offset, or `None` at
    /// the end of the file.
    pub(crate) fn scan(
        &mut self,
        from: u64,
        overlap: usize,
        mut find: impl FnMut(&[u8], u64) -> Option<usize>,
    ) -> Result<Option<u64>, Stop> {
        let mut at = from;
        let mut window = std::mem::take(&mut self.window);
        let result = loop {
            if at >= self.len {
                break Ok(None);
            }
            let n = WINDOW.min((self.len - at) as usize);
            window.resize(n, 0);
            if let Err(stop) = self.read_at(at, &mut window) {
                break Err(stop);
            }
            if let Some(i) = find(&window, at) {
                break Ok(Some(at + i as u64));
            }
            if at + n as u64 >= self.len {
                break Ok(None);
            }
            at += (n - overlap.min(n - 1)) as u64;
        };
        self.window = window;
        result
    }
}
