//! The I/O stages of a streamed compression: a reader thread that fills segments from the
//! input and a writer thread that writes finished pieces to the output, joined to the
//! compressing thread by bounded channels, so reading and writing overlap compression and
//! memory stays bounded. Emptied buffers travel back, so after the first few segments
//! nothing is allocated (nor page-faulted) again.

use std::io::{self, Read, Write};
use std::sync::mpsc;

use crate::CompressError;

/// Segments or pieces queued between two stages: enough to ride out a stall of one stage,
/// few enough that memory stays bounded.
pub(crate) const QUEUE: usize = 4;

/// The reader stage: fills `segment_len`-byte buffers from `input` until its end and returns
/// how many bytes it read.
pub(crate) fn read_segments<R: Read>(
    mut input: R,
    segment_len: usize,
    full: &mpsc::SyncSender<Vec<u8>>,
    free: &mpsc::Receiver<Vec<u8>>,
) -> Result<u64, CompressError> {
    let mut total = 0u64;
    loop {
        let mut buf = free.try_recv().unwrap_or_default();
        buf.resize(segment_len, 0);
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CompressError::Io {
                        operation: "reading the input",
                        source,
                    });
                }
            }
        }
        total += filled as u64;
        buf.truncate(filled);
        // A closed channel: the compressor stopped on an error it reports itself.
        if filled == 0 || full.send(buf).is_err() {
            return Ok(total);
        }
        if filled < segment_len {
            return Ok(total);
        }
    }
}

/// The writer stage: writes every piece in order, hands the buffers back, flushes, and
/// returns the bytes written.
pub(crate) fn write_pieces<W: Write>(
    mut output: W,
    pieces: &mpsc::Receiver<Vec<u8>>,
    free: &mpsc::Sender<Vec<u8>>,
) -> Result<u64, CompressError> {
    let err = |source| CompressError::Io {
        operation: "writing the output",
        source,
    };
    let mut total = 0u64;
    for piece in pieces {
        output.write_all(&piece).map_err(err)?;
        total += piece.len() as u64;
        let _ = free.send(piece);
    }
    output.flush().map_err(err)?;
    Ok(total)
}

/// A [`Write`] for the compressing thread that gathers bytes into pieces of about
/// `piece_len` bytes and hands them to [`write_pieces`] on another thread.
pub(crate) struct PipeWriter {
    piece: Vec<u8>,
    piece_len: usize,
    pieces: mpsc::SyncSender<Vec<u8>>,
    free: mpsc::Receiver<Vec<u8>>,
}

impl PipeWriter {
    pub(crate) fn new(
        piece_len: usize,
        pieces: mpsc::SyncSender<Vec<u8>>,
        free: mpsc::Receiver<Vec<u8>>,
    ) -> Self {
        PipeWriter {
            piece: Vec::with_capacity(piece_len),
            piece_len,
            pieces,
            free,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.piece_len));
        let full = std::mem::replace(&mut self.piece, next);
        self.piece.clear();
        // The writer thread only stops early on an error, which its join reports.
        self.pieces
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the output writer stopped"))
    }

    /// Hands over the last, partial piece.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if self.piece.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.piece.extend_from_slice(buf);
        if self.piece.len() >= self.piece_len {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Pieces go out when full or at `finish`; the writer thread flushes the output.
        Ok(())
    }
}
