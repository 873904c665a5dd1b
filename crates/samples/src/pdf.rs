//! PDF: header with a binary comment, a catalog, a page tree, pages with content
//! streams and image XObjects, a classic `xref` table, trailer, `startxref`, `%%EOF`.

use rand::RngCore;

use crate::{Builder, Sample, rng};

/// What [`pdf`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfSpec {
    /// Number of pages; each has a content stream and one image.
    pub pages: u32,
    /// Bytes of each page's image stream (random, as a DCT-encoded image looks).
    pub image_bytes: usize,
    /// Seed of the image data.
    pub seed: u64,
}

/// Generates a PDF. Parts: `header`, each `obj` (from `N 0 obj` through `endobj` and
/// its line end), `xref` (the table, trailer, `startxref` and `%%EOF`).
pub fn pdf(spec: &PdfSpec) -> Sample {
    let mut rng = rng(spec.seed);
    let pages = spec.pages.max(1);
    let mut out = Builder::with_capacity(pages as usize * (spec.image_bytes + 600) + 1024);
    out.part("header", b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
    let mut offsets = Vec::new();
    let mut object = |out: &mut Builder, body: &[u8]| {
        let number = offsets.len() + 1;
        offsets.push(out.pos());
        let mut bytes = format!("{number} 0 obj\n").into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"\nendobj\n");
        out.part("obj", &bytes);
    };
    // Objects: 1 catalog, 2 page tree, then per page: page, content, image.
    object(&mut out, b"<< /Type /Catalog /Pages 2 0 R >>");
    let kids: Vec<String> = (0..pages).map(|p| format!("{} 0 R", 3 + p * 3)).collect();
    object(
        &mut out,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        )
        .as_bytes(),
    );
    for p in 0..pages {
        let page = 3 + p * 3;
        object(
            &mut out,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
                 /Resources << /XObject << /Im0 {} 0 R >> >> >>",
                page + 1,
                page + 2
            )
            .as_bytes(),
        );
        let content = format!(
            "q 612 0 0 792 0 0 cm /Im0 Do Q\nBT /F1 12 Tf 72 720 Td (Page {}) Tj ET",
            p + 1
        );
        object(&mut out, &stream(b"", content.as_bytes()));
        let mut image = vec![0u8; spec.image_bytes];
        rng.fill_bytes(&mut image);
        object(
            &mut out,
            &stream(b"/Type /XObject /Subtype /Image /Width 640 /Height 480 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /DCTDecode ", &image),
        );
    }
    let xref_at = out.pos();
    let mut xref = format!("xref\n0 {}\n0000000000 65535 f \n", offsets.len() + 1);
    for offset in &offsets {
        xref.push_str(&format!("{offset:010} 00000 n \n"));
    }
    xref.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n",
        offsets.len() + 1
    ));
    out.part("xref", xref.as_bytes());
    out.finish(Vec::new())
}

fn stream(dict: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = b"<< ".to_vec();
    out.extend_from_slice(dict);
    out.extend_from_slice(format!("/Length {} >>\nstream\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xref_offsets_point_at_objects() {
        let s = pdf(&PdfSpec {
            pages: 3,
            image_bytes: 5000,
            seed: 4,
        });
        let text = String::from_utf8_lossy(&s.bytes);
        let objects: Vec<_> = s.parts_named("obj").collect();
        assert_eq!(objects.len(), 2 + 3 * 3);
        for (i, obj) in objects.iter().enumerate() {
            assert!(text.contains(&format!("{:010} 00000 n", obj.offset)));
            assert!(
                s.bytes[obj.offset as usize..].starts_with(format!("{} 0 obj", i + 1).as_bytes())
            );
        }
        assert!(s.bytes.ends_with(b"%%EOF\n"));
        let total: u64 = s.parts.iter().map(|p| p.size).sum();
        assert_eq!(total, s.bytes.len() as u64);
    }
}
