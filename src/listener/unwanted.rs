//! Messages no jail can want, passed over for the price of their header.
//!
//! Most of a central sink's traffic comes from programs no jail reads (cron, systemd, the
//! kernel, nginx: two thirds of the benchmark corpus). For a frame in the common RFC 3164
//! shape the program is known from the header's ASCII bytes, before the frame is checked as
//! UTF-8 or its message trimmed; when the program's route holds no jail, the full path would
//! parse it, find nothing, count nothing and publish nothing, so the frame is passed over.
//! Anything else (another shape, an impossible date, a program some jail takes) goes the full
//! way, so what is found stays exactly what the full path finds (tested below on every
//! fixture frame and a generated corpus).

use super::{Pipeline, Receipt};
use crate::parse;

impl Pipeline {
    /// True when `frame` needs no further work: its header is the common 3164 shape (so it
    /// parses; nothing to count as unparseable) and names a program no jail takes.
    #[cfg(test)]
    pub(super) fn unwanted(&self, frame: &[u8], receipt: Receipt) -> bool {
        matches!(self.header(frame, receipt), Header::Unwanted)
    }

    /// What the shortcut makes of `frame`'s header: passed over, or wanted with the header
    /// read ([`parse::parse_read`] takes it on from there), or another shape.
    pub(super) fn header(&self, frame: &[u8], receipt: Receipt) -> Header {
        match parse::read_3164(frame, &self.zone, receipt.wall) {
            Some(read) if self.router.wants(Some(read.program(frame))) => Header::Wanted(read),
            Some(_) => Header::Unwanted,
            None => Header::Unread,
        }
    }
}

/// A frame's header as [`Pipeline::header`] found it.
#[derive(Debug)]
pub(super) enum Header {
    /// The common 3164 shape, naming a program no jail takes: nothing more to do.
    Unwanted,
    /// The common 3164 shape, naming a program some jail takes: the header, read once.
    Wanted(parse::Read3164),
    /// Another shape: the frame is parsed from the start.
    Unread,
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::super::framing::{Frame, FrameDecoder};
    use super::super::{Origin, Pipeline, Receipt};
    use crate::filter::router::{JailRoute, Router};
    use crate::filter::{Filter, FilterSource, JailFilter};
    use crate::parse::{self, Zone};

    /// sshd and sendmail jails, each for its program (the benchmark's shipped shape), or with
    /// `catch_all` a second jail that reads every program.
    pub(in crate::listener) fn pipeline(zone: Zone, catch_all: bool) -> Pipeline {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d/sshd.toml");
        let source = crate::config::filter_file::read_native(&path, None).unwrap();
        let sshd = JailRoute {
            name: Arc::from("sshd"),
            filter: JailFilter::Native(Arc::new(Filter::compile(&source).unwrap())),
            programs: vec!["sshd".into()],
            hosts: vec![],
        };
        let smtp = JailRoute {
            name: Arc::from("smtp"),
            filter: JailFilter::Native(Arc::new(
                Filter::compile(&FilterSource {
                    failregex: vec![r"AUTH failure \(\w+\): .*relay=.*\[<HOST>\]".into()],
                    ..Default::default()
                })
                .unwrap(),
            )),
            programs: if catch_all {
                vec![]
            } else {
                vec!["sendmail".into()]
            },
            hosts: vec![],
        };
        Pipeline::new(
            Arc::new(Router::new(vec![sshd, smtp]).unwrap()),
            zone,
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            8192,
            4096,
        )
    }

    /// Every frame of the syslog fixtures.
    pub(in crate::listener) fn fixture_frames() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syslog");
        let mut frames = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "bin") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buf = bytes::BytesMut::from(&bytes[..]);
            let mut all = Vec::new();
            while let Ok(Some(f)) = decoder.decode(&mut buf) {
                all.push(f);
            }
            all.extend(decoder.finish(&mut buf));
            frames.extend(all.into_iter().filter_map(|f| match f {
                Frame::Message(m) => Some(m.to_vec()),
                Frame::Oversized => None,
            }));
        }
        frames
    }

    /// Lines in the shapes the shortcut reads and around its edges: programs jails take and
    /// do not, impossible dates, fractions, odd pids, invalid UTF-8 and NUL in the message,
    /// a BOM, trailing CR/LF/NUL, a tag right before the end.
    pub(in crate::listener) fn generated() -> Vec<Vec<u8>> {
        let programs = [
            "sshd",
            "sendmail",
            "cron",
            "CRON",
            "systemd",
            "kernel",
            "nginx",
            "postfix/smtpd",
            "sshd2",
            "ssh",
            "Sshd",
            "sudo",
            "dovecot",
        ];
        let messages: [&[u8]; 8] = [
            b"Failed password for root from 192.0.2.7 port 22 ssh2",
            b"s1: AUTH failure (LOGIN): x, relay=[192.0.2.9]",
            b"Started session-4.scope",
            b"message repeated 3 times: [ Failed password for root from 192.0.2.8 port 22 ssh2]",
            b"bad \xff\xfe utf-8 from 192.0.2.1",
            b"caf\xc3\xa9 \x00 nul",
            b"",
            b"   ",
        ];
        let stamps = [
            "Nov 20 00:00:00",
            "Nov  2 07:01:09",
            "Feb 30 12:00:00",
            "Nov 20 25:00:00",
            "Dec 31 23:59:59",
            "Jan  1 00:00:00",
            "Nov 20 00:00:00.123",
            "Mar 29 02:30:00",
        ];
        let pids = [
            "[1234]",
            "",
            "[abc]",
            "[]",
            "[99999999999]",
            "[2147483648]",
            "[0001]",
        ];
        let ends: [&[u8]; 5] = [b"", b"\n", b"\r\n", b"\0", b" \r"];
        let mut out = Vec::new();
        let mut x: u64 = 99;
        for i in 0..40_000usize {
            let r = (crate::listener::next_random(&mut x) >> 20) as usize;
            let mut line = Vec::new();
            if r % 29 == 0 {
                line.extend_from_slice("\u{feff}".as_bytes());
            }
            match r % 7 {
                0 => {}
                1 => line.extend_from_slice(b"<999>"),
                _ => line.extend_from_slice(format!("<{}>", r % 192).as_bytes()),
            }
            line.extend_from_slice(stamps[(r / 7) % stamps.len()].as_bytes());
            line.extend_from_slice(if r % 31 == 0 { b"  " } else { b" " });
            line.extend_from_slice(["mail1", "gw", "h_1.example", "b@d"][(r / 11) % 4].as_bytes());
            line.push(b' ');
            line.extend_from_slice(programs[(r / 13) % programs.len()].as_bytes());
            line.extend_from_slice(pids[(r / 17) % pids.len()].as_bytes());
            line.extend_from_slice([&b": "[..], b":", b" ", b": "][(r / 19) % 4]);
            line.extend_from_slice(messages[(r / 23) % messages.len()]);
            line.extend_from_slice(ends[(r / 37) % ends.len()]);
            if i % 1000 == 0 {
                // Cut anywhere, down to nothing.
                line.truncate(r % (line.len() + 1));
            }
            out.push(line);
        }
        out
    }

    /// When the shortcut passes a frame over, the full path parses it (nothing counted as
    /// unparseable), names the same program and finds nothing; wherever it does not, the two
    /// are the same path. Checked on every fixture frame and the generated lines, in two
    /// zones and across a new year.
    #[test]
    fn passing_over_unwanted_frames_finds_what_the_full_path_finds() {
        let frames: Vec<Vec<u8>> = fixture_frames().into_iter().chain(generated()).collect();
        assert!(frames.len() > 40_000);
        let times = [
            Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 30).unwrap(),
        ];
        let peer = Origin::Peer("192.0.2.200".parse().unwrap());
        for zone in [Zone::Utc, Zone::parse("Europe/Berlin").unwrap()] {
            let shipped = pipeline(zone, false);
            let every = pipeline(zone, true);
            for wall in times {
                let receipt = Receipt {
                    at: tokio::time::Instant::now(),
                    wall,
                };
                let mut passed = 0;
                let mut found = 0;
                for frame in &frames {
                    let fast = parse::program_3164(frame, &zone, wall);
                    if let Some(program) = fast {
                        let text = parse::decode(frame);
                        let event = parse::parse(&text, &zone, wall);
                        // The header read once is the header parsed again, timestamp and all.
                        let read = parse::read_3164(frame, &zone, wall).unwrap();
                        assert_eq!(
                            parse::parse_read(&text, &read, &zone, wall),
                            event,
                            "{:?}",
                            String::from_utf8_lossy(frame)
                        );
                        assert_eq!(
                            event.map(|e| e.program.map(str::as_bytes)),
                            Ok(Some(program)),
                            "{:?}",
                            String::from_utf8_lossy(frame)
                        );
                    }
                    let unwanted = shipped.unwanted(frame, receipt);
                    assert_eq!(
                        unwanted,
                        fast.is_some_and(|p| p != b"sshd" && p != b"sendmail")
                    );
                    passed += usize::from(unwanted);
                    let mut full_verdicts = Vec::new();
                    let full = shipped.matches_fully(frame, receipt, peer, &mut full_verdicts);
                    found += usize::from(full.is_some());
                    let mut verdicts = Vec::new();
                    let shortcut = shipped.matches(frame, receipt, peer, &mut verdicts);
                    assert_eq!(
                        format!("{:?}", (shortcut, verdicts)),
                        format!("{:?}", (full, full_verdicts)),
                        "{:?}",
                        String::from_utf8_lossy(frame)
                    );
                    // A jail that reads every program: nothing is unwanted.
                    assert!(!every.unwanted(frame, receipt));
                }
                assert!(passed > 2_000, "only {passed} frames passed over");
                assert!(found > 300, "only {found} frames found anything");
            }
        }
    }
}
