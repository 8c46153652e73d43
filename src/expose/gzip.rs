//! Gzip of the exposition: the per-agent block deflated once per snapshot and
//! reused as the head of every gzip body, with only the small tail compressed
//! per format.

use std::io::Write as _;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// A deflate stream cut at a byte boundary (sync flush, not final), so that
/// the same compressed bytes (held once) can open several gzip bodies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Deflated {
    /// The gzip header and the raw deflate blocks.
    pub(crate) bytes: Bytes,
    /// CRC-32 of the uncompressed input.
    pub(crate) crc: u32,
    /// Length of the uncompressed input.
    pub(crate) len: usize,
}

impl Deflated {
    /// Compresses `input` as the head of one or more gzip bodies.
    pub(crate) fn head(input: &[u8]) -> Deflated {
        let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        deflate(input, FlushCompress::Sync, &mut bytes);
        Deflated {
            bytes: Bytes::from(bytes),
            crc: crc32fast::hash(input),
            len: input.len(),
        }
    }

    /// A complete gzip member in two chunks: this head (shared, not copied)
    /// followed by `tail`.
    pub(crate) fn gzip_with(&self, tail: &[u8]) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(tail.len() / 4 + 64);
        deflate(tail, FlushCompress::Finish, &mut out);
        let mut crc = crc32fast::Hasher::new_with_initial_len(self.crc, self.len as u64);
        crc.update(tail);
        let _ = out.write_all(&crc.finalize().to_le_bytes());
        let _ = out.write_all(&((self.len + tail.len()) as u32).to_le_bytes());
        vec![self.bytes.clone(), Bytes::from(out)]
    }
}

/// Appends the raw deflate stream of `input` to `out`.
fn deflate(input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
    let mut compress = Compress::new(Compression::fast(), false);
    out.reserve(input.len() / 5 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = compress.compress_vec(&input[consumed..], out, flush);
        let done = compress.total_in() as usize == input.len() && out.len() < out.capacity();
        match status {
            Ok(Status::StreamEnd) => return,
            Ok(_) if done && flush != FlushCompress::Finish => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_shared_head_makes_valid_gzip_bodies_with_different_tails() {
        let head: Vec<u8> = (0..200_000)
            .flat_map(|i: u32| format!("line {i}\n").into_bytes())
            .collect();
        let deflated = Deflated::head(&head);
        for tail in [&b""[..], b"# EOF\n", b"tail with more text\n"] {
            let gz = deflated.gzip_with(tail).concat();
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain.len(), head.len() + tail.len());
            assert!(plain.starts_with(&head) && plain.ends_with(tail));
        }
    }
}
