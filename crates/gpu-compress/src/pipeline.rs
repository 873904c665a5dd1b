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
const QUEUE: usize = 4;

/// The compressing thread's ends of the channels of [`stream`]. Dropping them (when the
/// compressing step returns, whatever happened) lets both I/O stages end: the reader sees
/// its receiver gone, the writer the end of its input.
pub(crate) struct Stages {
    /// Full input segments, in order.
    pub(crate) segments: mpsc::Receiver<Vec<u8>>,
    /// Emptied segments, back to the reader for reuse.
    pub(crate) free_segments: mpsc::Sender<Vec<u8>>,
    /// Output pieces, in order, to the writer.
    pub(crate) pieces: mpsc::SyncSender<Vec<u8>>,
    /// Written pieces, back for reuse.
    pub(crate) free_pieces: mpsc::Receiver<Vec<u8>>,
}

/// Runs a streamed compression of `len` bytes from `input` to `output`: a reader thread
/// fills `segment_len`-byte segments, `compress` turns them into output pieces on this
/// thread, and a writer thread writes them. Returns the bytes written.
///
/// An input that ends early or runs on is [`CompressError::InputLength`] (the output
/// written so far must then be discarded); `compress` may stop early on extra input and
/// leave that error to this check. A writer failure makes the pieces channel close,
/// which `compress` may take as a reason to stop; the writer's error is reported.
pub(crate) fn stream<R, W>(
    input: R,
    len: u64,
    segment_len: usize,
    output: W,
    compress: impl FnOnce(Stages) -> Result<(), CompressError>,
) -> Result<u64, CompressError>
where
    R: Read + Send,
    W: Write + Send,
{
    // One byte past `len` is enough to tell that the input runs on.
    let input = input.take(len.saturating_add(1));
    let (full_tx, segments) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let (free_segments, free_in_rx) = mpsc::channel::<Vec<u8>>();
    let (pieces, pieces_rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let (free_out_tx, free_pieces) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let reader = s.spawn(move || read_segments(input, segment_len, &full_tx, &free_in_rx));
        let writer = s.spawn(move || write_pieces(output, &pieces_rx, &free_out_tx));
        let compressed = compress(Stages {
            segments,
            free_segments,
            pieces,
            free_pieces,
        });
        let read = reader.join().expect("reader thread does not panic")?;
        let written = writer.join().expect("writer thread does not panic")?;
        if read != len {
            return Err(CompressError::InputLength {
                expected: len,
                read,
            });
        }
        compressed?;
        Ok(written)
    })
}

/// The reader stage: fills `segment_len`-byte buffers from `input` until its end and returns
/// how many bytes it read.
fn read_segments<R: Read>(
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
fn write_pieces<W: Write>(
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
