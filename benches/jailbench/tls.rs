//! TLS ingest next to plain TCP in one run: the corpus pushed octet-counted (RFC 5425 framing)
//! over N TLS connections and over N plain TCP connections into the same kind of daemon, msg/s
//! until every message is counted; then full TLS handshakes a second (no session resumption).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

use super::corpus::read_lines;
use super::load::send_framed;
use super::support;
use super::{LIVE_JAILS, POLL};

/// `live-tls --corpus DIR --jailsink BIN [--connections 1,4] [--handshakes N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A directory `corpus` wrote (its corpus.pri is sent).
    #[arg(long, default_value = "bench/out/corpus")]
    pub corpus: PathBuf,
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// Connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4", value_parser = super::count)]
    pub connections: Vec<usize>,
    /// Full handshakes to time (spread over 4 client threads).
    #[arg(long, default_value = "2000", value_parser = super::count)]
    pub handshakes: usize,
    /// Seconds to wait for the daemon to count everything.
    #[arg(long, default_value = "300", value_parser = super::count)]
    pub timeout: usize,
}

/// A self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI.
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509"])
        .args(support::OPENSSL_EC_KEY)
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // An end-entity certificate: webpki refuses a CA as the server's own.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .map_err(|e| format!("openssl (apt-get install openssl): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok((crt, key))
}

/// A client trusting only `crt`, resuming no session (every handshake is a full one).
fn client_config(crt: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(crt).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    #[allow(deprecated)] // the daemon's provider (see src/config/tls.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A TLS client stream that closes gracefully when dropped: close_notify, then the server's
/// remaining records (TLS 1.3 session tickets) read to the end. Closing a socket with unread
/// data would send a reset, and the kernel would throw away what the server had not yet read.
pub struct Tls(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        self.0.conn.send_close_notify();
        let _ = self.0.flush();
        let _ = self.0.sock.shutdown(std::net::Shutdown::Write);
        let _ = self.0.sock.set_read_timeout(Some(Duration::from_secs(30)));
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut self.0.sock, &mut sink);
    }
}

/// Connects and finishes the handshake.
fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Result<Tls, String> {
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(Tls(rustls::StreamOwned::new(conn, sock)))
}

/// One measurement: transport, connections, messages, msg/s.
#[derive(Debug, Clone)]
pub struct Row {
    /// tcp or tls.
    pub transport: &'static str,
    /// Connections.
    pub connections: usize,
    /// Messages sent and counted.
    pub messages: u64,
    /// Messages/s from the first byte until every message was counted.
    pub rate: f64,
}

/// Plain TCP then TLS for each connection count, on fresh daemons; then the handshake rate.
pub fn live_tls(args: &Args) -> Result<Vec<Row>, String> {
    let lines = read_lines(&args.corpus.join("corpus.pri"))?;
    let certs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (crt, key) = certificate(certs.path())?;
    let server = format!(
        "tls = [\"127.0.0.1:0\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        crt.display(),
        key.display()
    );
    let client = client_config(&crt)?;
    let timeout = Duration::from_secs(args.timeout as u64);
    let mut rows = Vec::new();
    let start_daemon = || -> Result<support::Daemon, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Ok(support::Daemon::start_bin(
            &args.jailsink.jailsink,
            dir,
            &support::config(&server, LIVE_JAILS),
            &[],
            &[("RUST_LOG", "warn,jailsink=info")],
        ))
    };
    for &connections in &args.connections {
        for transport in ["tcp", "tls"] {
            let daemon = start_daemon()?;
            let (tcp, tls) = (daemon.tcp, daemon.tls);
            let sent = if transport == "tcp" {
                send_framed(&lines, connections, true, 0, || {
                    TcpStream::connect(tcp).map_err(|e| e.to_string())
                })?
            } else {
                send_framed(&lines, connections, true, 0, || connect(tls, &client))?
            };
            let series = format!("jailsink_messages_received_total{{transport=\"{transport}\"}}");
            // Scraped once the kernel holds nothing more for the daemon (as live-tcp does).
            let port = if transport == "tcp" { tcp } else { tls }.port();
            let mut end = super::live::End::default();
            let counted = support::poll(timeout, POLL, || {
                end.drained(&sent, port)
                    && end.scraped(daemon.metric(&series).unwrap_or(0.0) >= sent.messages as f64)
            });
            let secs = sent.started.elapsed().as_secs_f64();
            end.print(transport, &sent, secs);
            if !counted {
                return Err(format!(
                    "{transport}: jailsink counted {:?} of {}",
                    daemon.metric(&series),
                    sent.messages
                ));
            }
            rows.push(Row {
                transport,
                connections,
                messages: sent.messages,
                rate: sent.messages as f64 / secs,
            });
        }
    }
    println!("| transport | connections | messages | msg/s (all counted) | TLS / TCP |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        let tcp = rows
            .iter()
            .find(|t| t.transport == "tcp" && t.connections == r.connections)
            .map_or(f64::NAN, |t| t.rate);
        println!(
            "| {} | {} | {} | {:.0} | {:.0}% |",
            r.transport,
            r.connections,
            r.messages,
            r.rate,
            100.0 * r.rate / tcp
        );
    }
    let daemon = start_daemon()?;
    let rate = handshakes(daemon.tls, &client, args.handshakes)?;
    println!(
        "\nfull TLS handshakes (TLS 1.3, ECDSA P-256, 4 client threads): {} in all, {rate:.0}/s",
        args.handshakes
    );
    Ok(rows)
}

/// Full handshakes a second: `count` connections opened, handshaken and closed.
fn handshakes(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    count: usize,
) -> Result<f64, String> {
    const THREADS: usize = 4;
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            let n = count / THREADS + usize::from(t < count % THREADS);
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..n {
                    drop(connect(addr, &client)?);
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "handshake thread panicked")??;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}
