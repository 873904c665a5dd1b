//! Format detection by magic number.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::parse::ebml;

/// How many leading bytes [`detect`] looks at.
pub const SNIFF_LEN: usize = 4096;

/// A detected file format. Its [`grammar_id`](Format::grammar_id) is the name the
/// original Python chunker wrote into `metadata.json` and `manifest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// PNG image.
    Png,
    /// JPEG image (JFIF, Exif or raw).
    Jpeg,
    /// GIF, version 87a.
    Gif87,
    /// GIF, version 89a.
    Gif89,
    /// PDF document.
    Pdf,
    /// ZIP archive.
    Zip,
    /// gzip stream.
    Gzip,
    /// Windows bitmap.
    Bmp,
    /// ISO BMFF with an MP4 brand.
    Mp4,
    /// QuickTime movie (`qt  ` brand, or a bare `moov`/`mdat`/`wide` first atom).
    Mov,
    /// WebM (EBML with DocType `webm`).
    Webm,
    /// Matroska (EBML with any other DocType).
    Mkv,
    /// RIFF `AVI `.
    Avi,
    /// RIFF `WAVE`.
    Wav,
    /// RIFF `WEBP`.
    Webp,
    /// Text (UTF-8 without control characters in the first bytes).
    Text,
    /// Anything else.
    Binary,
}

impl Format {
    /// Every format, for tests and tables.
    pub const ALL: [Format; 17] = [
        Format::Png,
        Format::Jpeg,
        Format::Gif87,
        Format::Gif89,
        Format::Pdf,
        Format::Zip,
        Format::Gzip,
        Format::Bmp,
        Format::Mp4,
        Format::Mov,
        Format::Webm,
        Format::Mkv,
        Format::Avi,
        Format::Wav,
        Format::Webp,
        Format::Text,
        Format::Binary,
    ];

    /// The `grammar_id` written to the chunk tree (`png_v1`, `riff_wav`, …).
    pub fn grammar_id(self) -> &'static str {
        match self {
            Format::Png => "png_v1",
            Format::Jpeg => "jpeg_v1",
            Format::Gif87 => "gif87_v1",
            Format::Gif89 => "gif89_v1",
            Format::Pdf => "pdf_v1",
            Format::Zip => "zip_v1",
            Format::Gzip => "gzip_v1",
            Format::Bmp => "bmp_v1",
            Format::Mp4 => "mp4_v1",
            Format::Mov => "mov_v1",
            Format::Webm => "webm_v1",
            Format::Mkv => "mkv_v1",
            Format::Avi => "avi_v1",
            Format::Wav => "riff_wav",
            Format::Webp => "riff_webp",
            Format::Text => "text_generic",
            Format::Binary => "binary_generic",
        }
    }

    /// The format of a `grammar_id`, including `generic_binary_v1`, which the Python
    /// chunker wrote for binary data when it did not try to detect a format.
    pub fn from_grammar_id(id: &str) -> Option<Format> {
        if id == "generic_binary_v1" {
            return Some(Format::Binary);
        }
        Format::ALL.into_iter().find(|f| f.grammar_id() == id)
    }

    /// The short name written to `manifest.json`'s `format` (`png`, `mp4`, `text`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Gif87 | Format::Gif89 => "gif",
            Format::Pdf => "pdf",
            Format::Zip => "zip",
            Format::Gzip => "gzip",
            Format::Bmp => "bmp",
            Format::Mp4 => "mp4",
            Format::Mov => "mov",
            Format::Webm => "webm",
            Format::Mkv => "mkv",
            Format::Avi => "avi",
            Format::Wav => "wav",
            Format::Webp => "webp",
            Format::Text => "text",
            Format::Binary => "binary",
        }
    }

    /// Whether the chunker splits this format along its structure. The others (GIF,
    /// ZIP, gzip, BMP, text, binary) are detected but cut by size.
    pub fn is_structured(self) -> bool {
        matches!(
            self,
            Format::Png
                | Format::Jpeg
                | Format::Pdf
                | Format::Mp4
                | Format::Mov
                | Format::Webm
                | Format::Mkv
                | Format::Avi
                | Format::Wav
                | Format::Webp
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Detects the format from the first bytes of a file (up to [`SNIFF_LEN`]).
pub fn detect(head: &[u8]) -> Format {
    let at = |range: std::ops::Range<usize>| head.get(range);
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Format::Jpeg
    } else if head.starts_with(b"GIF87a") {
        Format::Gif87
    } else if head.starts_with(b"GIF89a") {
        Format::Gif89
    } else if head.starts_with(b"%PDF-") {
        Format::Pdf
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Format::Zip
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Format::Gzip
    } else if head.starts_with(b"BM") && at(6..10) == Some(&[0, 0, 0, 0]) {
        // The two reserved words after the file size are zero in every real bitmap;
        // checking them keeps text that starts with "BM" from being taken for one.
        Format::Bmp
    } else if at(4..8) == Some(b"ftyp") {
        match at(8..12) {
            Some(b"qt  ") => Format::Mov,
            _ => Format::Mp4,
        }
    } else if matches!(at(4..8), Some(b"moov" | b"mdat" | b"wide")) {
        Format::Mov
    } else if head.starts_with(&ebml::EBML_MAGIC) {
        match ebml::doc_type(head) {
            Some(doc_type) if doc_type == b"webm" => Format::Webm,
            _ => Format::Mkv,
        }
    } else if head.starts_with(b"RIFF") {
        match at(8..12) {
            Some(b"AVI ") => Format::Avi,
            Some(b"WAVE") => Format::Wav,
            Some(b"WEBP") => Format::Webp,
            _ => Format::Binary,
        }
    } else if looks_like_text(head) {
        Format::Text
    } else {
        Format::Binary
    }
}

fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut off by the end of the sniffed bytes is fine.
        Err(e) => e.error_len().is_none(),
    };
    valid
        && !head.is_empty()
        && head
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_ids_round_trip_and_are_unique() {
        for format in Format::ALL {
            assert_eq!(Format::from_grammar_id(format.grammar_id()), Some(format));
        }
        assert_eq!(
            Format::from_grammar_id("generic_binary_v1"),
            Some(Format::Binary)
        );
        assert_eq!(Format::from_grammar_id("nope"), None);
    }

    #[test]
    fn magic_numbers() {
        let cases: [(&[u8], Format); 17] = [
            (b"\x89PNG\r\n\x1a\n\0\0", Format::Png),
            (b"\xFF\xD8\xFF\xE0", Format::Jpeg),
            (b"GIF87a..", Format::Gif87),
            (b"GIF89a..", Format::Gif89),
            (b"%PDF-1.7\n", Format::Pdf),
            (b"PK\x03\x04....", Format::Zip),
            (b"\x1F\x8B\x08\0", Format::Gzip),
            (b"BM\x36\0\x0C\0\0\0\0\0\x36\0", Format::Bmp),
            (b"\0\0\0\x20ftypisom", Format::Mp4),
            (b"\0\0\0\x14ftypqt  ", Format::Mov),
            (b"\0\0\0\x08wide", Format::Mov),
            (b"RIFF\0\0\0\0AVI LIST", Format::Avi),
            (b"RIFF\0\0\0\0WAVEfmt ", Format::Wav),
            (b"RIFF\0\0\0\0WEBPVP8 ", Format::Webp),
            (b"BMW is a car\n", Format::Text),
            ("grüße\tà tous\r\n".as_bytes(), Format::Text),
            (b"\0\x01\x02binary", Format::Binary),
        ];
        for (head, want) in cases {
            assert_eq!(detect(head), want, "{head:x?}");
        }
    }
}
