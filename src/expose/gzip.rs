//! Gzip of the exposition in pieces: each segment of the per-agent block is
//! deflated on its own (sync flushed, byte aligned, not final) when its text
//! is new, and kept with it, so a segment that did not change between
//! snapshots is neither compressed again nor held twice. One gzip member is
//! the header, the segments' deflate bytes in order, and the small tail
//! compressed per format with the trailer.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// The gzip header: deflate, no name, no time, unknown OS.
const HEADER: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One piece of text and its deflate bytes, which open (or continue) a
/// deflate stream at a byte boundary without ending it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Segment {
    /// The text.
    pub(crate) plain: Bytes,
    /// Raw deflate blocks of `plain`, sync flushed (empty when `plain` is).
    pub(crate) deflated: Bytes,
    /// CRC-32 of `plain`.
    crc: u32,
}

impl Segment {
    /// Keeps a copy of `text`, exactly sized, and its deflate bytes;
    /// `scratch` is reused between calls.
    pub(crate) fn new(text: &[u8], scratch: &mut Vec<u8>) -> Segment {
        if text.is_empty() {
            return Segment::default();
        }
        scratch.clear();
        deflate(text, FlushCompress::Sync, scratch);
        Segment {
            plain: held(text),
            deflated: held(scratch),
            crc: crc32fast::hash(text),
        }
    }
}

/// Bytes from this size on are held in a memory mapping of their own.
const MAPPED_FROM: usize = 16 * 1024;

/// A copy of `bytes`, exactly sized; a large one in its own anonymous memory
/// mapping, which goes back to the system the moment its last holder drops
/// it, on whatever thread. From the allocator, a block of this size shares
/// its pages with others and, freed on a thread other than the (often
/// exited) one that rendered it, stayed resident: segments outlive the cycle
/// that rendered them, so this held about 50 MiB more at 100k agents.
fn held(bytes: &[u8]) -> Bytes {
    if bytes.len() >= MAPPED_FROM
        && let Ok(mut map) = memmap2::MmapMut::map_anon(bytes.len())
    {
        map.copy_from_slice(bytes);
        return Bytes::from_owner(map);
    }
    Bytes::copy_from_slice(bytes)
}

/// The CRC and length of segments in a row, for the trailer of a gzip
/// member that opens with them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checksum(crc32fast::Hasher);

impl Checksum {
    /// Combines the segments' CRCs (no pass over their text).
    pub(crate) fn of<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> Checksum {
        let mut all = crc32fast::Hasher::new();
        for segment in segments {
            let one =
                crc32fast::Hasher::new_with_initial_len(segment.crc, segment.plain.len() as u64);
            all.combine(&one);
        }
        Checksum(all)
    }
}

/// A complete gzip member: the header, `segments` (shared, not copied),
/// then `tail` compressed now, and the trailer. `checksum` is of `segments`.
pub(crate) fn gzip<'a>(
    segments: impl IntoIterator<Item = &'a Segment>,
    checksum: &Checksum,
    tail: &[u8],
) -> Vec<Bytes> {
    let mut out = vec![Bytes::from_static(HEADER)];
    out.extend(
        segments
            .into_iter()
            .filter(|s| !s.deflated.is_empty())
            .map(|s| s.deflated.clone()),
    );
    let mut end = Vec::with_capacity(tail.len() / 4 + 64);
    deflate(tail, FlushCompress::Finish, &mut end);
    let mut crc = checksum.0.clone();
    crc.update(tail);
    let len = crc.total_len();
    end.extend_from_slice(&crc.finalize().to_le_bytes());
    end.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(Bytes::from(end));
    out
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

    fn gunzip(chunks: &[Bytes]) -> Vec<u8> {
        let gz = chunks.concat();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }

    #[test]
    fn segments_deflated_apart_make_one_valid_gzip_member_with_any_tail() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i: u32| format!("line {i}\n").into_bytes())
            .collect();
        let mut scratch = Vec::new();
        let segments: Vec<Segment> = [&text[..70_000], &[][..], &text[70_000..]]
            .iter()
            .map(|part| Segment::new(part, &mut scratch))
            .collect();
        let checksum = Checksum::of(&segments);
        for tail in [&b""[..], b"# EOF\n", b"tail with more text\n"] {
            let plain = gunzip(&gzip(&segments, &checksum, tail));
            assert_eq!(plain.len(), text.len() + tail.len());
            assert!(plain.starts_with(&text) && plain.ends_with(tail));
        }
    }

    #[test]
    fn no_segments_make_a_gzip_of_the_tail_alone() {
        let checksum = Checksum::of(&[]);
        assert_eq!(gunzip(&gzip(&[], &checksum, b"only\n")), b"only\n");
        assert_eq!(gunzip(&gzip(&[], &checksum, b"")), b"");
    }
}
