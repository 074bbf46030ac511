//! RFC 6587 framing for syslog over TCP: octet counting (`LEN SP MSG`) and trailer framing
//! (LF; CRLF and NUL accepted), in one small state machine.
//!
//! The framing is read at the start of every frame, as rsyslog does: `DIGITS SP` means octet
//! counting, anything else a trailer-framed line. A real sender uses one framing for its whole
//! connection, so this decides per connection for every real sender, and it also reads the
//! captured mixed stream of util-linux logger connections. A partial frame is not an error
//! (`Ok(None)`); an oversized frame is discarded to its end and reported once; only a malformed
//! or absurd octet count is an error, and it ends the connection, since the stream can no longer
//! be trusted to resynchronise.

use bytes::{Buf, Bytes, BytesMut};

/// An octet count with this many digits (a gigabyte or more) is absurd.
const MAX_COUNT_DIGITS: usize = 9;
/// Longest run of digits at a frame's start that is still waited on to tell an (absurd,
/// refused) octet count from a line: a u64's 20 digits.
const MAX_DIGIT_RUN: usize = 20;

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One message, without its octet count or trailer.
    Message(Bytes),
    /// A frame over the limit; its bytes are being discarded.
    Oversized,
}

/// A framing error after which the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// `0 ` or a count too long to be real.
    #[error("malformed or absurd octet count")]
    BadOctetCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a frame boundary.
    Start,
    /// Inside an octet-counted frame of this length.
    Counted(usize),
    /// Inside a trailer-framed line; this many bytes already searched.
    Line(usize),
    /// Throwing away this many bytes of an oversized counted frame.
    SkipCount(usize),
    /// Throwing away an oversized line up to its trailer.
    SkipLine,
}

/// Splits a TCP byte stream into syslog frames.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    state: State,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            state: State::Start,
        }
    }

    /// Takes the next frame out of `buf`; `Ok(None)` means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let mut at = 0;
        let found = self.next_in(buf, &mut at);
        let frame = match found {
            Ok(Some(Found::Message(range))) => {
                buf.advance(range.start);
                let message = buf.split_to(range.len()).freeze();
                buf.advance(at - range.end);
                return Ok(Some(Frame::Message(message)));
            }
            Ok(Some(Found::Oversized)) => Ok(Some(Frame::Oversized)),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        buf.advance(at);
        if let (Ok(None), State::Counted(len)) = (&frame, self.state) {
            buf.reserve(len.saturating_sub(buf.len()));
        }
        frame
    }

    /// The next frame of `buf[*at..]`, found without taking anything out of `buf`: `*at`
    /// moves past what it used (a message and its trailer, skipped bytes), never past the
    /// start of a frame that is not complete yet, so the caller can split off `buf[..*at]`
    /// once for many frames. `Ok(None)` means more bytes are needed after `buf[*at..]`, which
    /// the next call must see at the front of its buffer.
    pub fn next_in(&mut self, buf: &[u8], at: &mut usize) -> Result<Option<Found>, FramingError> {
        loop {
            let rest = &buf[*at..];
            match self.state {
                State::Start => {
                    let Some(&first) = rest.first() else {
                        return Ok(None);
                    };
                    if matches!(first, b'\n' | b'\r' | b'\0') {
                        *at += 1;
                        continue;
                    }
                    if !first.is_ascii_digit() {
                        self.state = State::Line(0);
                        continue;
                    }
                    match read_count(rest)? {
                        Count::NeedMore => return Ok(None),
                        Count::Line => self.state = State::Line(0),
                        Count::Len(header, len) => {
                            *at += header;
                            if len > self.max {
                                self.state = State::SkipCount(len);
                                return Ok(Some(Found::Oversized));
                            }
                            self.state = State::Counted(len);
                        }
                    }
                }
                State::Counted(len) => {
                    if rest.len() < len {
                        return Ok(None);
                    }
                    self.state = State::Start;
                    let start = *at;
                    *at += len;
                    return Ok(Some(Found::Message(start..start + len)));
                }
                State::Line(searched) => match memchr::memchr2(b'\n', b'\0', &rest[searched..]) {
                    Some(found) => {
                        let end = searched + found;
                        self.state = State::Start;
                        let start = *at;
                        *at += end + 1;
                        if end > self.max {
                            return Ok(Some(Found::Oversized));
                        }
                        return Ok(Some(Found::Message(start..start + end)));
                    }
                    None if rest.len() > self.max => {
                        *at = buf.len();
                        self.state = State::SkipLine;
                        return Ok(Some(Found::Oversized));
                    }
                    None => {
                        self.state = State::Line(rest.len());
                        return Ok(None);
                    }
                },
                State::SkipCount(left) => {
                    let take = left.min(rest.len());
                    *at += take;
                    if take < left {
                        self.state = State::SkipCount(left - take);
                        return Ok(None);
                    }
                    self.state = State::Start;
                }
                State::SkipLine => match memchr::memchr2(b'\n', b'\0', rest) {
                    Some(found) => {
                        *at += found + 1;
                        self.state = State::Start;
                    }
                    None => {
                        *at = buf.len();
                        return Ok(None);
                    }
                },
            }
        }
    }

    /// At end of stream: a last line without its trailer is still a message (logger sends
    /// none); a partial counted frame is lost with the connection.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let range = self.finish_in(buf, 0)?;
        buf.advance(range.start);
        Some(Frame::Message(buf.split().freeze()))
    }

    /// [`FrameDecoder::finish`] for the bytes `buf[at..]` that [`FrameDecoder::next_in`] left:
    /// where the last message is, if they hold one.
    pub fn finish_in(&mut self, buf: &[u8], at: usize) -> Option<std::ops::Range<usize>> {
        let state = std::mem::replace(&mut self.state, State::Start);
        let left = buf.len() - at;
        match state {
            State::Line(_) | State::Start if left > 0 && left <= self.max => Some(at..buf.len()),
            _ => None,
        }
    }

    /// Whether the stream ending here loses a frame begun but not finished: an octet-counted
    /// frame short of its length, or (for an end other than the stream's own, where
    /// [`FrameDecoder::finish_in`] takes it) a line without its trailer; `rest` are the bytes
    /// not yet taken as frames. A frame being skipped as oversized was counted when found.
    pub fn cuts_a_frame(&self, rest: &[u8]) -> bool {
        match self.state {
            State::Counted(_) => true,
            State::Start | State::Line(_) => !rest.is_empty(),
            State::SkipCount(_) | State::SkipLine => false,
        }
    }
}

/// Where [`FrameDecoder::next_in`] found a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// One message, at this range of the buffer, without its octet count or trailer.
    Message(std::ops::Range<usize>),
    /// A frame over the limit; its bytes are being discarded.
    Oversized,
}

enum Count {
    NeedMore,
    Line,
    /// Header length including the space, and the message length.
    Len(usize, usize),
}

fn read_count(buf: &[u8]) -> Result<Count, FramingError> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    // Only `DIGITS SP` with at most MAX_COUNT_DIGITS digits is a count: a line that starts
    // with digits, however many (an epoch timestamp, `1733512345.123 host ...` or
    // `1733512345 host ...`), is a line, whatever pieces it arrives in (no count has ten
    // digits: a frame of a gigabyte).
    match (buf.get(digits), digits > MAX_COUNT_DIGITS) {
        (Some(_), true) => Ok(Count::Line),
        (Some(b' '), false) => {
            // At most MAX_COUNT_DIGITS digits: read in place, no overflow.
            let len = buf[..digits]
                .iter()
                .fold(0usize, |n, &c| n * 10 + usize::from(c - b'0'));
            if len == 0 {
                return Err(FramingError::BadOctetCount);
            }
            Ok(Count::Len(digits + 1, len))
        }
        (Some(_), _) => Ok(Count::Line),
        // No end in sight after a run longer than any number: a line (its length limit
        // applies), so waiting for the run's end never grows the buffer without bound.
        (None, _) if digits > MAX_DIGIT_RUN => Ok(Count::Line),
        (None, _) => Ok(Count::NeedMore),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `chunk` bytes and returns every frame (and the error, if any).
    fn run(stream: &[u8], chunk: usize, max: usize) -> (Vec<Frame>, Option<FramingError>) {
        let mut decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        frames.extend(decoder.finish(&mut buf));
        (frames, None)
    }

    /// As [`run`], through [`FrameDecoder::next_in`] as a connection uses it: frames found in
    /// place, the used bytes split off once per `batch` frames and at the end of each piece.
    fn run_in_place(
        stream: &[u8],
        chunk: usize,
        max: usize,
        batch: usize,
    ) -> (Vec<Frame>, Option<FramingError>) {
        let mut decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            let mut at = 0;
            let mut ranges = Vec::new();
            loop {
                match decoder.next_in(&buf, &mut at) {
                    Ok(Some(Found::Message(r))) => ranges.push(Some(r)),
                    Ok(Some(Found::Oversized)) => ranges.push(None),
                    Ok(None) => break,
                    Err(e) => {
                        // What came before the error is still handed over.
                        let used = buf.split_to(at).freeze();
                        frames.extend(ranges.drain(..).map(|r| match r {
                            Some(r) => Frame::Message(used.slice(r)),
                            None => Frame::Oversized,
                        }));
                        return (frames, Some(e));
                    }
                }
                if ranges.len() == batch {
                    let used = buf.split_to(at).freeze();
                    frames.extend(ranges.drain(..).map(|r| match r {
                        Some(r) => Frame::Message(used.slice(r)),
                        None => Frame::Oversized,
                    }));
                    at = 0;
                }
            }
            let used = buf.split_to(at).freeze();
            frames.extend(ranges.drain(..).map(|r| match r {
                Some(r) => Frame::Message(used.slice(r)),
                None => Frame::Oversized,
            }));
        }
        if let Some(r) = decoder.finish_in(&buf, 0) {
            frames.push(Frame::Message(buf.split().freeze().slice(r)));
        }
        (frames, None)
    }

    /// Frames found in place are the frames `decode` takes out, in every framing, split at
    /// every point, batched or not; errors come at the same frame.
    #[test]
    fn frames_found_in_place_are_the_frames_taken_out() {
        let mut oversized = Vec::new();
        oversized.extend_from_slice(b"20 <13>aaaaaaaaaaaaaaaa<13>");
        oversized.extend_from_slice(&[b'b'; 40]);
        oversized.extend_from_slice(b"\n<13>ok\n6 <13>ok\n\n\0<13>last");
        let streams: [&[u8]; 5] = [
            b"<13>one\n5 <13>2<13>three\r\n\n11 <13>fourxxx<13>five\0<13>six",
            &oversized,
            b"3 abc0 <13>x",
            b"\n\n12 <13>counted\n<13>tail",
            b"",
        ];
        for stream in streams {
            for chunk in 1..=stream.len().max(1) {
                let want = run(stream, chunk, 10);
                for batch in [1, 2, 256] {
                    assert_eq!(
                        run_in_place(stream, chunk, 10, batch),
                        want,
                        "{:?} in chunks of {chunk}, batches of {batch}",
                        String::from_utf8_lossy(stream)
                    );
                }
            }
        }
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "bin") {
                continue;
            }
            let stream = std::fs::read(&path).unwrap();
            for chunk in [1, 7, 100, 4096] {
                assert_eq!(
                    run_in_place(&stream, chunk, 65536, 3),
                    run(&stream, chunk, 65536),
                    "{path:?}"
                );
            }
        }
    }

    fn messages(frames: &[Frame]) -> Vec<&[u8]> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Message(b) => Some(b.as_ref()),
                Frame::Oversized => None,
            })
            .collect()
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let stream = b"<13>one\n5 <13>2<13>three\r\n\n11 <13>fourxxx<13>five\0<13>six";
        let (whole, _) = run(stream, stream.len(), 1024);
        let want: Vec<&[u8]> = vec![
            b"<13>one",
            b"<13>2",
            b"<13>three\r",
            b"<13>fourxxx",
            b"<13>five",
            b"<13>six",
        ];
        assert_eq!(messages(&whole), want);
        for chunk in 1..stream.len() {
            let (frames, error) = run(stream, chunk, 1024);
            assert_eq!(error, None);
            assert_eq!(frames, whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversized_frames_are_skipped_and_the_stream_goes_on() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"20 <13>aaaaaaaaaaaaaaaa");
        stream.extend_from_slice(b"<13>");
        stream.extend_from_slice(&[b'b'; 40]);
        stream.extend_from_slice(b"\n<13>ok\n6 <13>ok");
        for chunk in [1, 3, 7, 64] {
            let (frames, error) = run(&stream, chunk, 10);
            assert_eq!(error, None);
            assert_eq!(
                frames.iter().filter(|f| **f == Frame::Oversized).count(),
                2,
                "chunk {chunk}"
            );
            assert_eq!(
                messages(&frames),
                vec![&b"<13>ok"[..], b"<13>ok"],
                "chunk {chunk}"
            );
        }
    }

    /// An octet count read in place is the count `str::parse` reads, up to the longest
    /// count taken; zero and an empty count are refused, and a longer run of digits is a
    /// line.
    #[test]
    fn octet_counts_are_read_as_parsed() {
        let mut x = 7u64;
        let counts = (1..=MAX_COUNT_DIGITS)
            .flat_map(|d| {
                let top = 10u64.pow(d as u32);
                [
                    top / 10,
                    top - 1,
                    (top / 10) + super::super::next_random(&mut x) % (top - top / 10),
                ]
            })
            .map(|n| n.to_string())
            .chain(["007", "0000000001"].map(String::from));
        for count in counts {
            let frame = format!("{count} x");
            let want = count.parse::<usize>().unwrap();
            match read_count(frame.as_bytes()) {
                Ok(Count::Len(header, len)) => {
                    assert_eq!((header, len), (count.len() + 1, want), "{count}")
                }
                Ok(Count::Line) => assert!(count.len() > MAX_COUNT_DIGITS, "{count} a line"),
                Ok(Count::NeedMore) => panic!("{count}: not read as a count"),
                Err(_) => panic!("{count} refused"),
            }
        }
        for bad in ["0 x", " x", "00 x"] {
            assert!(read_count(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(read_count(b"1234567890 x"), Ok(Count::Line)));
    }

    #[test]
    fn a_frame_cut_by_the_end_of_the_stream_is_known() {
        let cut = |stream: &[u8]| {
            let mut decoder = FrameDecoder::new(100);
            let mut at = 0;
            while let Ok(Some(_)) = decoder.next_in(stream, &mut at) {}
            decoder.cuts_a_frame(&stream[at..])
        };
        assert!(
            cut(b"20 <13>host app: x"),
            "a counted frame short of its length"
        );
        assert!(cut(b"5 <13>a\n3 "), "a count with nothing of its frame");
        assert!(
            cut(b"<13>host app: no trailer"),
            "a line without its trailer"
        );
        assert!(!cut(b"<13>host app: x\n"));
        assert!(!cut(b"5 <13>a"));
        assert!(!cut(b""));
    }

    #[test]
    fn garbage_octet_counts_end_the_connection() {
        assert_eq!(
            run(b"0 <13>x", 64, 100).1,
            Some(FramingError::BadOctetCount)
        );
        // Digits that are not followed by a space are a line, not a count.
        let (frames, error) = run(b"2026-11-29 text\n", 64, 100);
        assert_eq!(error, None);
        assert_eq!(messages(&frames), vec![&b"2026-11-29 text"[..]]);
        // However many digits, followed by a space or not: an epoch timestamp opening a line,
        // then the next frame, read in any pieces.
        for first in [
            &b"1733512345.123 web1 app: x"[..],
            b"1733512345 web1 app: x",
            b"123456789012345678901 web1 app: x",
        ] {
            let stream = [first, b"\n<13>host sshd[1]: ok\n"].concat();
            for chunk in 1..=stream.len() {
                let (frames, error) = run(&stream, chunk, 100);
                assert_eq!(error, None, "pieces of {chunk}");
                assert_eq!(
                    messages(&frames),
                    vec![first, &b"<13>host sshd[1]: ok"[..]],
                    "pieces of {chunk}"
                );
            }
        }
        // A run of digits past any number is a line, in any pieces.
        for chunk in [1, 3, 64] {
            let digits = [b'7'; 40];
            let (frames, error) = run(&[&digits[..], b"\n"].concat(), chunk, 100);
            assert_eq!((messages(&frames), error), (vec![&digits[..]], None));
        }
    }

    #[test]
    fn captured_streams_split_into_the_expected_frames() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog");
        let streams: [(&str, usize); 7] = include!("../../tests/fixtures/syslog/stream_frames.rs");
        for (name, count) in streams {
            let stream = std::fs::read(dir.join(name)).unwrap();
            for chunk in [1, 100, 4096, stream.len()] {
                let (frames, error) = run(&stream, chunk, 65536);
                assert_eq!(error, None, "{name}");
                assert_eq!(
                    messages(&frames).len(),
                    count,
                    "{name} in chunks of {chunk}"
                );
            }
        }
    }
}
