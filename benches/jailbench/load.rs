//! Load generators: a file's lines over TCP connections (LF or octet-counted framing, optionally
//! paced) and as UDP datagrams at a rate (sendmmsg batches, so the sender is not the limit).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::corpus::read_lines;

/// `tcp --addr HOST:PORT --file PATH [--connections N] [--octet] [--rate N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// Where to send.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The lines to send (e.g. a corpus.pri).
    #[arg(long)]
    pub file: PathBuf,
    /// TCP connections to spread the lines over.
    #[arg(long, default_value = "1", value_parser = super::count)]
    pub connections: usize,
    /// Octet-counted framing (RFC 6587) instead of LF.
    #[arg(long)]
    pub octet: bool,
    /// Messages a second overall (0: as fast as possible).
    #[arg(long, default_value = "0", value_parser = super::count)]
    pub rate: usize,
}

/// `udp --addr HOST:PORT --file PATH [--count N] [--rate N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct UdpArgs {
    /// Where to send.
    #[arg(long)]
    pub addr: SocketAddr,
    /// The lines to send, cycled (e.g. a corpus.pri).
    #[arg(long)]
    pub file: PathBuf,
    /// Datagrams to send (0: each line once).
    #[arg(long, default_value = "0", value_parser = super::count)]
    pub count: usize,
    /// Datagrams a second.
    #[arg(long, default_value = "100000", value_parser = super::count)]
    pub rate: usize,
}

/// The `tcp` job: sends and prints what went out.
pub fn tcp(args: &TcpArgs) -> Result<(), String> {
    let sent = send_tcp(
        args.addr,
        &read_lines(&args.file)?,
        args.connections,
        args.octet,
        args.rate,
    )?;
    println!("sent={} seconds={:.3}", sent.messages, sent.seconds);
    Ok(())
}

/// The `udp` job: sends and prints what went out.
pub fn udp(args: &UdpArgs) -> Result<(), String> {
    let sent = send_udp(args.addr, &read_lines(&args.file)?, args.count, args.rate)?;
    println!("sent={} seconds={:.3}", sent.messages, sent.seconds);
    Ok(())
}

/// What a load generator sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Seconds from the first byte to the last.
    pub seconds: f64,
    /// When the first byte could go: the streams open and every payload framed. A receiver's
    /// time is measured from here, so the harness's own copying of the lines into framed
    /// buffers (0.05-0.1 s per million lines here, one thread) and a TLS handshake
    /// are not counted as the receiver's.
    pub started: Instant,
    /// CPU seconds the sending threads used (user + system, all connections; 0 where not
    /// measured): on loopback the kernel's receive path up to the receiver's socket queue
    /// runs here too, so this is what the sender takes from the cores the receiver shares.
    pub cpu_seconds: f64,
}

/// CPU seconds the calling thread has used so far (user + system).
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Sends every line once, spread over `connections` TCP connections (octet-counted or LF
/// framed), at `rate` messages/s overall (0: as fast as possible).
pub fn send_tcp(
    addr: SocketAddr,
    lines: &[Vec<u8>],
    connections: usize,
    octet: bool,
    rate: usize,
) -> Result<Sent, String> {
    send_tcp_from(addr, lines, connections, octet, rate, || {})
}

/// As [`send_tcp`], calling `opened` once every stream is open, right before the first byte
/// (see [`send_framed_from`]).
pub fn send_tcp_from(
    addr: SocketAddr,
    lines: &[Vec<u8>],
    connections: usize,
    octet: bool,
    rate: usize,
    opened: impl FnOnce(),
) -> Result<Sent, String> {
    send_framed_from(
        lines,
        connections,
        octet,
        rate,
        || TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}")),
        opened,
    )
}

/// As [`send_tcp`], over streams `connect` opens (all opened before the clock starts: a TLS
/// stream has finished its handshake).
pub fn send_framed<S: Write + Send + 'static>(
    lines: &[Vec<u8>],
    connections: usize,
    octet: bool,
    rate: usize,
    connect: impl FnMut() -> Result<S, String>,
) -> Result<Sent, String> {
    send_framed_from(lines, connections, octet, rate, connect, || {})
}

/// As [`send_framed`], calling `opened` once every stream is open and every payload framed,
/// right before the first byte goes (where [`Sent::started`] is taken): where the live
/// benchmarks start a receiver's CPU figure, the same point for every receiver, so what a
/// receiver still does after it began listening (start-up work, the harness's readiness
/// checks) is not counted as the run's.
pub fn send_framed_from<S: Write + Send + 'static>(
    lines: &[Vec<u8>],
    connections: usize,
    octet: bool,
    rate: usize,
    mut connect: impl FnMut() -> Result<S, String>,
    opened: impl FnOnce(),
) -> Result<Sent, String> {
    let connections = connections.max(1);
    let per = lines.len().div_ceil(connections);
    let payloads: Vec<(Vec<u8>, Vec<usize>)> = lines
        .chunks(per.max(1))
        .map(|chunk| {
            let mut buf = Vec::with_capacity(chunk.iter().map(|l| l.len() + 8).sum());
            let mut ends = Vec::with_capacity(chunk.len());
            for l in chunk {
                if octet {
                    buf.extend_from_slice(format!("{} ", l.len()).as_bytes());
                    buf.extend_from_slice(l);
                } else {
                    buf.extend_from_slice(l);
                    buf.push(b'\n');
                }
                ends.push(buf.len());
            }
            (buf, ends)
        })
        .collect();
    let streams: Vec<S> = payloads
        .iter()
        .map(|_| connect())
        .collect::<Result<_, _>>()?;
    let per_conn_rate = rate as f64 / payloads.len() as f64;
    opened();
    let start = Instant::now();
    let threads: Vec<_> = payloads
        .into_iter()
        .zip(streams)
        .map(|((buf, ends), mut stream)| {
            std::thread::spawn(move || -> std::io::Result<(u64, u64, f64)> {
                let cpu_start = thread_cpu_seconds();
                if per_conn_rate <= 0.0 {
                    stream.write_all(&buf)?;
                } else {
                    // Paced in slices of ~1 ms worth of messages.
                    let slice = ((per_conn_rate / 1000.0).ceil() as usize).max(1);
                    let begun = Instant::now();
                    let mut from = 0;
                    for (i, chunk) in ends.chunks(slice).enumerate() {
                        let to = *chunk.last().unwrap_or(&from);
                        stream.write_all(&buf[from..to])?;
                        from = to;
                        let due =
                            Duration::from_secs_f64((i + 1) as f64 * slice as f64 / per_conn_rate);
                        if let Some(wait) = due.checked_sub(begun.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                stream.flush()?;
                let cpu = thread_cpu_seconds() - cpu_start;
                Ok((ends.len() as u64, buf.len() as u64, cpu))
            })
        })
        .collect();
    let (mut messages, mut bytes, mut cpu_seconds) = (0, 0, 0.0);
    for t in threads {
        let (m, b, c) = t
            .join()
            .map_err(|_| "sender thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        messages += m;
        bytes += b;
        cpu_seconds += c;
    }
    Ok(Sent {
        messages,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds,
        started: start,
    })
}

/// Sends `count` datagrams (cycling through `lines`) at `rate` per second, with sendmmsg in
/// batches so the generator is not the bottleneck.
pub fn send_udp(
    addr: SocketAddr,
    lines: &[Vec<u8>],
    count: usize,
    rate: usize,
) -> Result<Sent, String> {
    if lines.is_empty() {
        return Err("no lines to send".into());
    }
    let count = if count == 0 { lines.len() } else { count };
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    const BATCH: usize = 32;
    let start = Instant::now();
    let (mut sent, mut bytes) = (0usize, 0u64);
    let rate = rate.max(1) as f64;
    while sent < count {
        let n = BATCH.min(count - sent);
        let mut iovs: Vec<libc::iovec> = (0..n)
            .map(|i| {
                let l = &lines[(sent + i) % lines.len()];
                libc::iovec {
                    iov_base: l.as_ptr() as *mut libc::c_void,
                    iov_len: l.len(),
                }
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: fd is our connected socket; msgs holds n valid headers.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r <= 0 {
            // The local socket buffer is full: wait a little (this is the sender's own limit).
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        bytes += iovs[..r as usize]
            .iter()
            .map(|v| v.iov_len as u64)
            .sum::<u64>();
        sent += r as usize;
        let due = Duration::from_secs_f64(sent as f64 / rate);
        let elapsed = start.elapsed();
        if due > elapsed + Duration::from_micros(200) {
            std::thread::sleep(due - elapsed);
        }
    }
    Ok(Sent {
        messages: sent as u64,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: 0.0,
        started: start,
    })
}
