//! Gzip of the exposition in pieces: each segment of the per-agent block is
//! deflated on its own (sync flushed, byte aligned, not final) when its text
//! is new, and kept with it, so a segment that did not change between
//! snapshots is neither compressed again nor held twice. One gzip member is
//! the header, the segments' deflate bytes in order, and the small tail
//! compressed per format with the trailer.
//!
//! Owns too which segments keep their text: one rendered afresh keeps only
//! its deflate bytes until its text stops changing ([`Segment::next`]), and
//! the plain body is read back through [`PlainText`], which inflates such a
//! segment a bounded chunk at a time.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The gzip header: deflate, no name, no time, unknown OS.
const HEADER: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// One piece of text and its deflate bytes, which open (or continue) a
/// deflate stream at a byte boundary without ending it, and the
/// [`Fingerprint`] of what the text was rendered from. A segment rendered
/// afresh (its place is new, or what it is rendered from changed since the
/// previous snapshot) is held compressed only: its text is the deflate
/// bytes' and is inflated when a plain body is served; except that one at a
/// new place of a family whose values stay put keeps its text
/// ([`Segment::with_text`]). One whose fingerprint did not change is shared
/// with the previous snapshot, and not rendered at all; one held compressed
/// only gets its text back once its fingerprint has stayed the same over
/// [`TEXT_BACK_AFTER`] snapshots (it stopped changing).
#[derive(Debug, Clone, Default)]
pub(crate) struct Segment {
    /// The text (empty when held compressed only, or when there is none).
    plain: Bytes,
    /// Raw deflate blocks of the text, sync flushed (empty when it is).
    pub(crate) deflated: Bytes,
    /// CRC-32 of the text.
    crc: u32,
    /// Bytes of text.
    len: usize,
    /// What the text was rendered from.
    fingerprint: Fingerprint,
    /// Snapshots in a row after the one that rendered it whose fingerprint
    /// at its place was the same (while held compressed only).
    unchanged: u8,
}

/// Snapshots in a row with the same text after which a segment held
/// compressed only gets its text back. Two, not one: the heartbeat timestamp
/// family changes every other cycle (at each info refresh), and given its
/// text back at every state-only cycle it would be copied out again each
/// time, beside the body being served (about 15 MB at 100k agents).
const TEXT_BACK_AFTER: u8 = 2;

/// What a segment's text is rendered from (its family, its agents' label
/// sets and values), hashed with SipHash-1-3 under a key drawn at random
/// when the process starts. Equal inputs render equal text, so a segment
/// whose fingerprint did not change is neither rendered nor compared nor
/// compressed again. Different inputs share a fingerprint with a chance of
/// about 2^-64 per comparison, and text chosen to collide (labels come from
/// CMDB and GSE) cannot be found without the key, which never leaves the
/// process; a segment wrongly taken for unchanged would serve its previous
/// text until its inputs change again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    /// A hasher under the process's key; [`Fingerprint::of`] finishes it.
    pub(crate) fn hasher() -> std::hash::DefaultHasher {
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        std::hash::BuildHasher::build_hasher(KEY.get_or_init(std::hash::RandomState::new))
    }

    /// The fingerprint of what `hasher` was fed.
    pub(crate) fn of(hasher: &impl std::hash::Hasher) -> Fingerprint {
        Fingerprint(hasher.finish())
    }
}

/// The buffers segments are rendered and compressed into, reused from one
/// segment to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    text: Vec<u8>,
    deflated: Vec<u8>,
}

impl Segment {
    /// The segment at a place the previous snapshot did not have, of a
    /// family whose values stay put: `render` writes its text (into an empty
    /// buffer), kept beside its deflate bytes. (Held compressed only, such a
    /// segment of the first render got its text back two snapshots later by
    /// being rendered again: cycle 3 took 0.30 CPU-s at 100k agents, 0.28
    /// without that, medians of three runs.)
    pub(crate) fn with_text(
        fingerprint: Fingerprint,
        render: impl FnOnce(&mut Vec<u8>),
        scratch: &mut Scratch,
    ) -> Segment {
        let segment = Segment::new(fingerprint, render, scratch);
        Segment {
            plain: held(&scratch.text),
            ..segment
        }
    }

    /// The segment at a place the previous snapshot did not have: `render`
    /// writes its text (into an empty buffer), held compressed only.
    pub(crate) fn new(
        fingerprint: Fingerprint,
        render: impl FnOnce(&mut Vec<u8>),
        scratch: &mut Scratch,
    ) -> Segment {
        scratch.text.clear();
        render(&mut scratch.text);
        Segment::compressed(fingerprint, scratch)
    }

    /// The segment at this one's place in the next snapshot, rendered from
    /// what hashes to `fingerprint`: this one, shared, when that did not
    /// change (given its text back, exactly sized, when held compressed
    /// only for long enough; `render` is called then, and only then); else
    /// the text `render` writes, held compressed only.
    pub(crate) fn next(
        &self,
        fingerprint: Fingerprint,
        render: impl FnOnce(&mut Vec<u8>),
        scratch: &mut Scratch,
    ) -> Segment {
        if fingerprint != self.fingerprint {
            return Segment::new(fingerprint, render, scratch);
        }
        if !self.compressed_only() {
            return self.clone();
        }
        let unchanged = self.unchanged + 1;
        if unchanged < TEXT_BACK_AFTER {
            return Segment {
                unchanged,
                ..self.clone()
            };
        }
        scratch.text.clear();
        render(&mut scratch.text);
        let text = &scratch.text[..];
        if text.len() != self.len || crc32fast::hash(text) != self.crc {
            // Not the text it was: a fingerprint that left out something
            // the text is made of. Serve the text, compressed anew.
            return Segment::compressed(fingerprint, scratch);
        }
        Segment {
            plain: held(text),
            unchanged: 0,
            ..self.clone()
        }
    }

    /// Whether it has text held only as its deflate bytes.
    fn compressed_only(&self) -> bool {
        self.len > 0 && self.plain.is_empty()
    }

    /// The text in `scratch`: its deflate bytes, CRC and length, without it.
    fn compressed(fingerprint: Fingerprint, scratch: &mut Scratch) -> Segment {
        let text = &scratch.text[..];
        if text.is_empty() {
            return Segment {
                fingerprint,
                ..Segment::default()
            };
        }
        scratch.deflated.clear();
        deflate(text, FlushCompress::Sync, &mut scratch.deflated);
        Segment {
            plain: Bytes::new(),
            deflated: held(&scratch.deflated),
            crc: crc32fast::hash(text),
            len: text.len(),
            fingerprint,
            unchanged: 0,
        }
    }

    /// The segment as a piece of the plain body (None when it has no text).
    pub(crate) fn piece(&self) -> Option<Piece> {
        match (self.len, self.plain.is_empty()) {
            (0, _) => None,
            (_, false) => Some(Piece::Text(self.plain.clone())),
            (len, true) => Some(Piece::Deflated {
                deflated: self.deflated.clone(),
                len,
            }),
        }
    }
}

/// A piece of a plain body: text as held, or deflate bytes (of a segment
/// held compressed only) to inflate when served.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// Text.
    Text(Bytes),
    /// Raw deflate bytes (sync flushed, as a segment's) of `len` bytes of text.
    Deflated {
        /// The deflate bytes, shared with the gzip body.
        deflated: Bytes,
        /// Bytes of text they inflate to.
        len: usize,
    },
}

impl Piece {
    /// Bytes of text.
    pub(crate) fn len(&self) -> usize {
        match self {
            Piece::Text(text) => text.len(),
            Piece::Deflated { len, .. } => *len,
        }
    }
}

/// Inflated text a call at most, so a response holds this much of a piece
/// held compressed at a time however slowly its client reads.
const INFLATE_CHUNK: usize = 64 * 1024;

/// The text of a body's pieces in order, a chunk at a time: text pieces as
/// they are (shared), deflated ones inflated [`INFLATE_CHUNK`] bytes at a
/// time when the next chunk is asked for.
pub struct PlainText {
    pieces: std::collections::VecDeque<Piece>,
    /// The piece being inflated: its deflate bytes and how much is consumed.
    inflating: Option<(Bytes, usize)>,
    /// Text still owed by the piece being inflated.
    owed: usize,
    decompress: Option<Decompress>,
}

/// A piece held compressed did not inflate to its text (a defect: the
/// exporter deflated it itself).
#[derive(Debug, thiserror::Error)]
#[error("a compressed piece of the body did not inflate to its {expected} bytes of text")]
pub struct InflateError {
    expected: usize,
}

impl PlainText {
    pub(crate) fn new(pieces: Vec<Piece>) -> PlainText {
        PlainText {
            pieces: pieces.into_iter().filter(|p| p.len() > 0).collect(),
            inflating: None,
            owed: 0,
            decompress: None,
        }
    }

    /// Whether every chunk has been returned.
    pub fn is_done(&self) -> bool {
        self.inflating.is_none() && self.pieces.is_empty()
    }

    /// Inflates up to [`INFLATE_CHUNK`] more bytes of the current piece.
    fn inflate(&mut self) -> Result<Bytes, InflateError> {
        let Some((deflated, consumed)) = &mut self.inflating else {
            return Ok(Bytes::new());
        };
        let expected = self.owed;
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new(false));
        let mut out = Vec::with_capacity(INFLATE_CHUNK.min(self.owed));
        while out.len() < out.capacity() {
            let before = (decompress.total_in(), decompress.total_out());
            let status =
                decompress.decompress_vec(&deflated[*consumed..], &mut out, FlushDecompress::Sync);
            *consumed += (decompress.total_in() - before.0) as usize;
            let progress = decompress.total_in() != before.0 || decompress.total_out() != before.1;
            if status.is_err() || !progress {
                return Err(InflateError { expected });
            }
        }
        self.owed -= out.len();
        if self.owed == 0 {
            self.inflating = None;
        }
        Ok(Bytes::from(out))
    }
}

impl Iterator for PlainText {
    type Item = Result<Bytes, InflateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.inflating.is_some() {
            return Some(self.inflate());
        }
        match self.pieces.pop_front()? {
            Piece::Text(text) => Some(Ok(text)),
            Piece::Deflated { deflated, len } => {
                if let Some(decompress) = &mut self.decompress {
                    decompress.reset(false);
                }
                self.inflating = Some((deflated, 0));
                self.owed = len;
                Some(self.inflate())
            }
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
            let one = crc32fast::Hasher::new_with_initial_len(segment.crc, segment.len as u64);
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

    /// The fingerprint of a text, for segments rendered from it alone.
    fn fingerprint(text: &[u8]) -> Fingerprint {
        let mut hasher = Fingerprint::hasher();
        std::hash::Hasher::write(&mut hasher, text);
        Fingerprint::of(&hasher)
    }

    /// A new segment of `text`.
    fn segment(text: &[u8], scratch: &mut Scratch) -> Segment {
        Segment::new(
            fingerprint(text),
            |out| out.extend_from_slice(text),
            scratch,
        )
    }

    /// The segment after `old` whose text is `text`.
    fn next(old: &Segment, text: &[u8], scratch: &mut Scratch) -> Segment {
        old.next(
            fingerprint(text),
            |out| out.extend_from_slice(text),
            scratch,
        )
    }

    /// A segment of `text` rendered where other text was: held compressed only.
    fn changed(text: &[u8], scratch: &mut Scratch) -> Segment {
        next(&segment(b"other text\n", scratch), text, scratch)
    }

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
        let mut scratch = Scratch::default();
        let segments: Vec<Segment> = [&text[..70_000], &[][..], &text[70_000..]]
            .iter()
            .map(|part| segment(part, &mut scratch))
            .collect();
        let checksum = Checksum::of(&segments);
        for tail in [&b""[..], b"# EOF\n", b"tail with more text\n"] {
            let plain = gunzip(&gzip(&segments, &checksum, tail));
            assert_eq!(plain.len(), text.len() + tail.len());
            assert!(plain.starts_with(&text) && plain.ends_with(tail));
        }
    }

    /// A slow reader's share: each chunk of a piece held compressed is
    /// inflated only when asked for, and none is larger than the bound.
    #[test]
    fn a_compressed_piece_is_inflated_a_bounded_chunk_at_a_time_on_demand() {
        let text: Vec<u8> = (0..100_000)
            .flat_map(|i: u32| {
                format!("gse_agent_heartbeat_age_seconds{{n=\"{i}\"}} {i}\n").into_bytes()
            })
            .collect();
        let mut scratch = Scratch::default();
        let Some(piece @ Piece::Deflated { .. }) = changed(&text, &mut scratch).piece() else {
            panic!("a changed segment is held compressed only");
        };
        let tail = Piece::Text(Bytes::from_static(b"tail\n"));
        let mut plain = PlainText::new(vec![piece.clone(), tail, piece]);
        let chunk = plain.next().unwrap().unwrap();
        assert_eq!(chunk.len(), INFLATE_CHUNK);
        assert_eq!(
            plain.owed,
            text.len() - INFLATE_CHUNK,
            "nothing inflated ahead"
        );
        let mut all = chunk.to_vec();
        for chunk in plain.by_ref() {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= INFLATE_CHUNK);
            all.extend_from_slice(&chunk);
        }
        assert!(plain.is_done());
        assert_eq!(all, [&text[..], b"tail\n", &text[..]].concat());
    }

    #[test]
    fn a_segment_is_held_compressed_until_its_text_stays_the_same_twice() {
        let mut scratch = Scratch::default();
        let compressed = |s: &Segment| matches!(s.piece(), Some(Piece::Deflated { len: 4, .. }));
        let text = |s: &Segment| match s.piece() {
            Some(Piece::Text(t)) if t == "a 1\n" => Some(t.as_ptr()),
            _ => None,
        };
        let a = changed(b"a 1\n", &mut scratch);
        let once = next(&a, b"a 1\n", &mut scratch);
        assert!(
            compressed(&a) && compressed(&once),
            "changed, then the same once"
        );
        assert_eq!(once.deflated.as_ptr(), a.deflated.as_ptr());
        let twice = next(&once, b"a 1\n", &mut scratch);
        assert!(text(&twice).is_some(), "the same twice: text back");
        assert_eq!(twice.deflated.as_ptr(), a.deflated.as_ptr());
        let shared = next(&twice, b"a 1\n", &mut scratch);
        assert_eq!(text(&shared), text(&twice));
        let changed = next(&shared, b"a 2\n", &mut scratch);
        assert!(compressed(&changed), "held compressed once changed");
        let back = next(&changed, b"a 1\n", &mut scratch);
        assert!(compressed(&back) && back.deflated.as_ptr() != a.deflated.as_ptr());
        assert!(next(&changed, b"", &mut scratch).piece().is_none());
    }

    #[test]
    fn a_segment_whose_fingerprint_did_not_change_is_not_rendered_again() {
        let mut scratch = Scratch::default();
        let fp = fingerprint(b"x");
        let renders = std::cell::Cell::new(0);
        let render = |out: &mut Vec<u8>| {
            renders.set(renders.get() + 1);
            out.extend_from_slice(b"a 1\n");
        };
        let first = segment(b"a 0\n", &mut scratch);
        let a = first.next(fp, render, &mut scratch);
        let once = a.next(fp, render, &mut scratch);
        let twice = once.next(fp, render, &mut scratch);
        let shared = twice.next(fp, render, &mut scratch);
        assert!(matches!(shared.piece(), Some(Piece::Text(_))));
        assert_eq!(
            renders.get(),
            2,
            "rendered changed, and once more to get its text back"
        );
        let kept = Segment::with_text(fp, render, &mut scratch);
        let shared = kept.next(fp, render, &mut scratch);
        let Some(Piece::Text(text)) = shared.piece() else {
            panic!("a segment made with its text keeps it");
        };
        assert_eq!(
            (&text[..], renders.get()),
            (&b"a 1\n"[..], 3),
            "rendered once"
        );
        let empty = Segment::new(fp, |_| {}, &mut scratch);
        let still = empty.next(fp, |_| panic!("not rendered again"), &mut scratch);
        assert!(still.piece().is_none());
    }

    /// A fingerprint that left out something the text is made of shows at
    /// the latest when the text comes back: the text is served, not the old.
    #[test]
    fn text_that_differs_under_the_same_fingerprint_is_compressed_anew() {
        let mut scratch = Scratch::default();
        let fp = fingerprint(b"x");
        let first = segment(b"a 0\n", &mut scratch);
        let old = first.next(fp, |out| out.extend_from_slice(b"a 1\n"), &mut scratch);
        let once = old.next(fp, |_| panic!("not rendered"), &mut scratch);
        let back = once.next(fp, |out| out.extend_from_slice(b"a 2\n"), &mut scratch);
        let Some(piece @ Piece::Deflated { .. }) = back.piece() else {
            panic!("compressed anew");
        };
        let text: Result<Vec<Bytes>, _> = PlainText::new(vec![piece]).collect();
        assert_eq!(text.unwrap().concat(), b"a 2\n");
    }

    #[test]
    fn no_segments_make_a_gzip_of_the_tail_alone() {
        let checksum = Checksum::of(&[]);
        assert_eq!(gunzip(&gzip(&[], &checksum, b"only\n")), b"only\n");
        assert_eq!(gunzip(&gzip(&[], &checksum, b"")), b"");
    }
}
