//! The one error type of the crate.

use chunk_model::Codec;

/// Everything that can go wrong while compressing, decompressing or setting up an engine.
///
/// Decoding errors carry the byte offset inside the frame where the problem was found, so a
/// caller can say exactly which part of which object is damaged.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The frame ends before a field that must be there.
    #[error(
        "{codec} frame is truncated: {what} at byte {offset} needs {needed} bytes, {available} left"
    )]
    Truncated {
        /// Codec of the frame.
        codec: Codec,
        /// The field that was cut off.
        what: &'static str,
        /// Offset of that field in the frame.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The frame does not start with the codec's magic number.
    #[error("not a {codec} frame: magic number {found:#010x} at byte {offset}")]
    BadMagic {
        /// Codec the caller asked for.
        codec: Codec,
        /// The four bytes found, little endian.
        found: u32,
        /// Offset of the magic number in the input.
        offset: usize,
    },
    /// A frame or block header field holds a value the format does not allow.
    #[error("corrupt {codec} frame: {what} at byte {offset}")]
    Corrupt {
        /// Codec of the frame.
        codec: Codec,
        /// What is wrong.
        what: String,
        /// Offset of the bad field or block.
        offset: usize,
    },
    /// A valid frame uses a feature this crate does not decode (e.g. an LZ4 dictionary).
    #[error("unsupported {codec} frame: {what} at byte {offset}")]
    Unsupported {
        /// Codec of the frame.
        codec: Codec,
        /// The feature.
        what: &'static str,
        /// Offset of the header that asks for it.
        offset: usize,
    },
    /// The frame decodes to more bytes than the caller allowed (the size the chunk is
    /// known to have): decoding stopped at the first byte beyond the limit, with no more
    /// memory taken than the limit.
    #[error(
        "{codec} frame decodes to more than {limit} bytes, the most expected; decoding stopped there"
    )]
    OutputLimit {
        /// Codec of the frame.
        codec: Codec,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A checksum stored in the frame does not match the data.
    #[error(
        "{codec} {what} checksum mismatch at byte {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    ChecksumMismatch {
        /// Codec of the frame.
        codec: Codec,
        /// Which checksum (header, block, content).
        what: &'static str,
        /// Offset of the stored checksum.
        offset: usize,
        /// Value stored in the frame.
        stored: u32,
        /// Value computed from the data.
        computed: u32,
    },
    /// The zstd library rejected the input or failed to compress.
    #[error("zstd {operation} failed: {source}")]
    Zstd {
        /// `compress` or `decompress`.
        operation: &'static str,
        /// The library's error.
        #[source]
        source: std::io::Error,
    },
    /// The LZ4 block encoder failed (it only does when its output buffer is too small, which
    /// would be a bug here).
    #[error("LZ4 block encoder failed: {0}")]
    Lz4Encode(String),
    /// No usable OpenCL device, or the crate was built without the `opencl` feature.
    #[error("OpenCL engine unavailable: {0}")]
    OpenClUnavailable(String),
    /// An OpenCL call failed after the engine was set up.
    #[error("OpenCL {operation} failed: {message}")]
    OpenCl {
        /// What was being done (build program, write buffer, run kernel, ...).
        operation: &'static str,
        /// The driver's message.
        message: String,
    },
    /// `verify` was on and the frame did not decode to the input.
    #[error(
        "verification failed: the {codec} frame decodes to {decoded_len} bytes that differ from the {input_len}-byte input"
    )]
    VerifyMismatch {
        /// Codec of the frame.
        codec: Codec,
        /// Length of the input.
        input_len: usize,
        /// Length of what the frame decoded to.
        decoded_len: usize,
    },
    /// Reading the input or writing the output of a streamed compression failed.
    #[error("{operation} failed: {source}")]
    Io {
        /// `reading the input` or `writing the output`.
        operation: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A streamed input held a different number of bytes than announced: it changed while
    /// being read. The output written so far is not a valid frame of it.
    #[error("input length changed while compressing: announced {expected} bytes, read {read}")]
    InputLength {
        /// Bytes announced (and written into the frame header).
        expected: u64,
        /// Bytes actually read (reading stops once past `expected`).
        read: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid compressor configuration: {0}")]
    InvalidConfig(String),
}
