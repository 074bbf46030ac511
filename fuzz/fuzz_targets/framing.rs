//! RFC 6587 framing: any bytes, split anywhere, never panic, never grow past the limit.
#![no_main]

use bytes::BytesMut;
use jailsink::listener::framing::{Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 512;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so every split point gets exercised.
    let Some((&split, stream)) = data.split_first() else { return };
    let chunk = usize::from(split).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => assert!(m.len() <= MAX),
                Ok(Some(Frame::Oversized)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // A partial frame may be buffered, but never more than the limit plus a read.
        assert!(buf.len() <= MAX + chunk + 16, "buffer grew to {}", buf.len());
    }
    if let Some(Frame::Message(m)) = decoder.finish(&mut buf) {
        assert!(m.len() <= MAX);
    }
});
