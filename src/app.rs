//! Wiring: a compiled config becomes running tasks, in an order that makes readiness honest
//! (the metrics endpoint answers only once every syslog listener is bound and every action has
//! started), a supervisor that reloads on SIGHUP or `jailsink reload`, and a shutdown that
//! drains listeners, lets the jail task finish, and has every action remove what it added.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::ActionSpec;
use crate::config::{self, Config};
use crate::control::feed::Feed;
use crate::control::proto::{Reply, Request, Response};
use crate::control::server::{self as control_server, Question};
use crate::control::translate;
use crate::filter::router::{JailRoute, Router, RouterError};
use crate::fleet::app as fleet;
use crate::jail::set::{self, Command, JailSet};
use crate::jail::Failure;
use crate::listener::{tcp, tls, udp, unix, Pipeline, SharedPipeline};
use crate::metrics;
use crate::state::{self, State};

/// Failures in flight from listeners to the jail task before TCP senders are slowed down.
const FAILURE_QUEUE: usize = 65_536;
/// How long listeners get to finish after shutdown before we stop waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long actions get to remove their firewall entries at shutdown.
const ACTION_STOP_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listener address could not be bound.
    #[error("cannot bind {transport} {addr}: {os_error}")]
    Bind {
        /// udp, tcp, tls, unix, metrics or control.
        transport: &'static str,
        /// The address from the config.
        addr: String,
        /// The OS error.
        os_error: std::io::Error,
    },
    /// A reload's new address shares its port with one still served (127.0.0.1:P and
    /// 0.0.0.0:P): the kernel refuses the second while the first is bound, and a reload binds
    /// the new addresses before it closes the old ones (so a failed reload changes nothing).
    #[error("cannot bind {transport} {addr} while {running} is served on the same port (a reload binds new addresses before it closes old ones): restart jailsink to make this change, or move to another port and back in two reloads")]
    Rebind {
        /// udp, tcp or tls.
        transport: &'static str,
        /// The address from the new config.
        addr: SocketAddr,
        /// The running address on the same port.
        running: SocketAddr,
    },
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(metrics::MetricsError),
    /// The jails' combined filters could not be built.
    #[error("filters: {0}")]
    Router(RouterError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// The fleet's Redis refused us (password, ACL, TLS certificate).
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// Why a reload was refused; the old config keeps running.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The config file does not compile.
    #[error(transparent)]
    Config(#[from] config::ConfigErrors),
    /// A listener could not be bound or the filters combined.
    #[error(transparent)]
    Start(#[from] AppError),
    /// The jail task has ended (the daemon is shutting down).
    #[error("the jail task is gone")]
    JailTaskGone,
    /// A jail's actions could not be started.
    #[error(transparent)]
    Jails(#[from] set::RunnerStartError),
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Replace every action with the log action.
    pub dry_run: bool,
}

fn apply_options(config: &mut Config, options: RunOptions) {
    if options.dry_run {
        for jail in &mut config.jails {
            jail.actions = vec![ActionSpec::Log];
        }
    }
}

/// Routes messages to `config`'s jails by program and host.
pub(crate) fn router_for(config: &Config) -> Result<Router, AppError> {
    Router::new(
        config
            .jails
            .iter()
            .map(|j| JailRoute {
                name: Arc::from(j.name.as_str()),
                filter: j.filter.clone(),
                programs: j.programs.clone(),
                hosts: j.hosts.clone(),
            })
            .collect(),
    )
    .map_err(AppError::Router)
}

/// What every listener of `config` shares (also the UDP receiver's unit test).
pub(crate) fn pipeline_for(config: &Config) -> Result<Pipeline, AppError> {
    pipeline_after(config, None)
}

/// As [`pipeline_for`], the new router keeping the held failures of `previous`'s for every
/// jail whose filter is unchanged (a reload).
fn pipeline_after(config: &Config, previous: Option<&Pipeline>) -> Result<Pipeline, AppError> {
    let mut router = router_for(config)?;
    if let Some(previous) = previous {
        router.keep_held_from(previous.router());
    }
    Ok(Pipeline::new(
        Arc::new(router),
        config.server.zone,
        config.server.allowed_senders.clone(),
        config.server.max_message_bytes,
        config.server.max_match_bytes,
    ))
}

/// What the jail task runs of each configured jail; `state_unread`: the state could not be
/// read at start ([`crate::jail::JailSpec::state_unread`]).
fn specs(config: &Config, state_unread: bool) -> Vec<crate::jail::JailSpec> {
    config
        .jails
        .iter()
        .map(|j| crate::jail::JailSpec {
            state_unread,
            ..j.spec()
        })
        .collect()
}

/// Sockets bound for a config, before anything is spawned on them.
#[derive(Default)]
struct Bound {
    udp: Vec<(SocketAddr, UdpSocket)>,
    tcp: Vec<(SocketAddr, TcpListener)>,
    tls: Vec<(SocketAddr, TcpListener)>,
    unix: Vec<(PathBuf, unix::LocalSocket)>,
}

/// Binds the addresses of `config` that `running` does not already serve.
async fn bind_new(config: &Config, running: &Listeners) -> Result<Bound, AppError> {
    let mut bound = Bound::default();
    for &addr in &config.server.udp {
        if !running.udp.contains_key(&addr) {
            let socket = udp::bind(addr, config.server.udp_receive_buffer)
                .map_err(|os_error| bind_error("udp", addr, os_error, &running.udp))?;
            bound.udp.push((addr, socket));
        }
    }
    for (addrs, running, bound, transport) in [
        (&config.server.tcp, &running.tcp, &mut bound.tcp, "tcp"),
        (&config.server.tls, &running.tls, &mut bound.tls, "tls"),
    ] {
        for &addr in addrs {
            if !running.contains_key(&addr) {
                let listener = tcp::bind(addr)
                    .map_err(|os_error| bind_error(transport, addr, os_error, running))?;
                bound.push((addr, listener));
            }
        }
    }
    let access = unix::Access {
        mode: config.server.unix_mode,
        group: config.server.unix_group,
    };
    for path in &config.server.unix {
        if !running.unix.contains_key(path) {
            let socket = unix::bind(path, access).map_err(|os_error| AppError::Bind {
                transport: "unix",
                addr: path.display().to_string(),
                os_error,
            })?;
            bound.unix.push((path.clone(), socket));
        }
    }
    Ok(bound)
}

/// Why `addr` could not be bound: [`AppError::Rebind`] when it is in use and a running
/// listener of the same kind holds its port on another address, else the OS error.
fn bind_error(
    transport: &'static str,
    addr: SocketAddr,
    os_error: std::io::Error,
    running: &HashMap<SocketAddr, CancellationToken>,
) -> AppError {
    let clash = running
        .keys()
        .find(|r| r.port() == addr.port() && r.is_ipv4() == addr.is_ipv4() && **r != addr);
    match clash {
        Some(&running) if os_error.kind() == std::io::ErrorKind::AddrInUse => AppError::Rebind {
            transport,
            addr,
            running,
        },
        _ => AppError::Bind {
            transport,
            addr: addr.to_string(),
            os_error,
        },
    }
}

/// The syslog listeners running now, by configured address, each with its own stop token.
struct Listeners {
    udp: HashMap<SocketAddr, CancellationToken>,
    tcp: HashMap<SocketAddr, CancellationToken>,
    tls: HashMap<SocketAddr, CancellationToken>,
    unix: HashMap<PathBuf, CancellationToken>,
    /// The certificate new TLS handshakes use; `reload` replaces it.
    tls_config: tls::SharedTlsConfig,
    tasks: TaskTracker,
    pipeline: SharedPipeline,
    /// The match workers every TCP and TLS listener's connections share (one per core, not
    /// one set per listener; kept across reloads).
    pool: Arc<crate::listener::parallel::Pool>,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
}

impl Listeners {
    fn spawn(&mut self, bound: Bound, limits: tcp::TcpLimits, handshake: Duration) {
        let receivers = std::thread::available_parallelism().map_or(2, |n| n.get());
        for (addr, socket) in bound.udp {
            let shown = socket.local_addr().map_or(addr, |a| a).to_string();
            let stop = self.datagrams(socket, receivers, &shown);
            self.udp.insert(addr, stop);
        }
        for (addr, listener) in bound.tcp {
            let stop = self.stream(listener, tcp::Plain, limits);
            self.tcp.insert(addr, stop);
        }
        for (addr, listener) in bound.tls {
            let handshake = tls::Handshake::new(self.tls_config.clone(), handshake);
            let stop = self.stream(listener, handshake, limits);
            self.tls.insert(addr, stop);
        }
        for (path, socket) in bound.unix {
            let stop = self.datagrams(socket, receivers, &path.display().to_string());
            self.unix.insert(path, stop);
        }
    }

    /// Serves a datagram socket (UDP or Unix) with `receivers` tasks; returns its stop token.
    fn datagrams<S: udp::Datagrams>(
        &self,
        socket: S,
        receivers: usize,
        shown: &str,
    ) -> CancellationToken {
        let stop = self.shutdown.child_token();
        tracing::info!(transport = S::TRANSPORT, addr = %shown, "listening");
        self.tasks.spawn(udp::serve(
            socket,
            receivers,
            self.pipeline.clone(),
            self.failures.clone(),
            stop.clone(),
        ));
        stop
    }

    /// Serves a stream listener (TCP, or TLS after its handshake); returns its stop token.
    fn stream<U: tcp::Upgrade>(
        &self,
        listener: TcpListener,
        upgrade: U,
        limits: tcp::TcpLimits,
    ) -> CancellationToken {
        let stop = self.shutdown.child_token();
        if let Ok(local) = listener.local_addr() {
            tracing::info!(transport = U::TRANSPORT, addr = %local, "listening");
        }
        self.tasks.spawn(tcp::serve(
            listener,
            upgrade,
            limits,
            self.pipeline.clone(),
            self.pool.clone(),
            self.failures.clone(),
            stop.clone(),
        ));
        stop
    }

    /// Stops listeners whose address is no longer configured.
    fn retain(&mut self, config: &Config) {
        for (map, wanted, transport) in [
            (&mut self.udp, &config.server.udp, "udp"),
            (&mut self.tcp, &config.server.tcp, "tcp"),
            (&mut self.tls, &config.server.tls, "tls"),
        ] {
            map.retain(|addr, stop| {
                let keep = wanted.contains(addr);
                if !keep {
                    tracing::info!(transport, addr = %addr, "listener closed by reload");
                    stop.cancel();
                }
                keep
            });
        }
        self.unix.retain(|path, stop| {
            let keep = config.server.unix.contains(path);
            if !keep {
                tracing::info!(transport = "unix", addr = %path.display(), "listener closed by reload");
                stop.cancel();
                // The file would otherwise stay behind, taking datagrams nobody reads.
                if let Err(error) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), %error, "could not remove the socket");
                }
            }
            keep
        });
    }
}

/// The TLS settings read from the files of `config`, if it has any.
fn tls_config_of(config: &Config) -> Option<Arc<crate::config::tls::TlsServer>> {
    config.server.tls_server.clone().map(Arc::new)
}

fn limits(config: &Config) -> tcp::TcpLimits {
    tcp::TcpLimits {
        max_connections: config.server.max_tcp_connections,
        per_sender: config.server.max_tcp_connections_per_sender,
        idle_timeout: config.server.tcp_idle_timeout,
    }
}

/// What the state held at start.
struct Restored {
    bans: Vec<state::StoredBan>,
    counts: HashMap<(String, ipnetwork::IpNetwork), u32>,
    /// The active bans could not be read: the actions keep what the kernel holds.
    unread: bool,
}

/// Opens the state and reads what it holds; a state that cannot be opened is logged and
/// counted, and the daemon bans in memory rather than not at all. A dry run never names the
/// database to the actions' records: its jails hold only log actions, so the start-up sweep
/// would take every recorded firewall object (a live daemon's, with a copied config) for one
/// of a removed jail and remove it.
///
/// Blocking (SQLite, and with 100,000 bans a read of seconds): the daemon runs it on its state
/// thread, never on a runtime worker (the debug assertion keeps it so).
fn open_state(state_path: &Path, history_days: u32, dry_run: bool) -> (Option<State>, Restored) {
    debug_assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "opening the state blocks a runtime worker"
    );
    if dry_run {
        crate::action::records::keep_none();
    }
    match State::open(state_path) {
        Ok(mut db) => {
            crate::action::records::keep_in(state_path);
            if let Err(error) = db.keep_history(history_days) {
                metrics::state_errors().increment(1);
                tracing::error!(%error, "cannot prune ban history");
            }
            let (bans, unread) = match db.active_bans() {
                Ok(bans) => (bans, false),
                Err(error) => {
                    metrics::state_errors().increment(1);
                    tracing::error!(%error, "cannot read active bans; the firewall keeps what it holds");
                    (Vec::new(), true)
                }
            };
            let counts = db.ban_counts().unwrap_or_default();
            (
                Some(db),
                Restored {
                    bans,
                    counts,
                    unread,
                },
            )
        }
        Err(error) => {
            metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot open the state database; bans will not survive a restart, and the firewall keeps what it holds");
            (None, Restored::nothing())
        }
    }
}

impl Restored {
    /// A state that could not be read: nothing restored, and the actions keep what the kernel
    /// holds.
    fn nothing() -> Self {
        Restored {
            bans: Vec::new(),
            counts: HashMap::new(),
            unread: true,
        }
    }
}

/// Each jail's command actions' identities: what keys their records.
fn command_identities(config: &Config) -> HashMap<String, Vec<String>> {
    config
        .jails
        .iter()
        .map(|j| {
            (
                j.name.clone(),
                crate::action::command_identities(&j.actions),
            )
        })
        .collect()
}

/// What the state thread reports before it starts writing.
struct StateStart {
    /// What the state held ([`open_state`]).
    restored: oneshot::Receiver<Restored>,
    /// Whether command bans of removed actions wait to be lifted (the sweep's answer).
    swept: oneshot::Receiver<bool>,
}

/// Starts the state thread, which runs `open` and reports what the state held (the daemon's
/// is [`open_state`]), runs `sweep` over what jails removed from `config` left (the daemon's
/// is [`crate::action::sweep::at_start`]) and reports whether command bans wait to be lifted,
/// then runs `writer` with the database. All three block (SQLite, processes), and a runtime worker
/// would stall every task sharing it. The state thread rather than a blocking-pool one: a
/// thread made for it would keep its malloc arena (and SQLite's memory in it) for the daemon's
/// life, which idle RSS shows.
fn start_state_thread(
    config: &Config,
    open: impl FnOnce() -> (Option<State>, Restored) + Send + 'static,
    commands: HashMap<String, Vec<String>>,
    sweep: impl FnOnce(&[ActionSpec], &HashMap<String, Vec<String>>) -> bool + Send + 'static,
    writer: impl FnOnce(Option<State>) + Send + 'static,
) -> std::io::Result<(JoinHandle<()>, StateStart)> {
    let configured: Vec<ActionSpec> = config
        .jails
        .iter()
        .flat_map(|j| j.actions.iter().cloned())
        .collect();
    let (restored_tx, restored) = oneshot::channel();
    let (swept_tx, swept) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("state".into())
        .spawn(move || {
            // A panic in either must not take the writer with it: every ban reaches the
            // actions through the writer, so the daemon would say ready and apply none. A
            // state that did not open is opened again by the writer; the objects the sweep
            // did not remove are tried again at the next start.
            let (db, held) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
                .unwrap_or_else(|_| {
                    crate::metrics::state_errors().increment(1);
                    tracing::error!("opening the state database failed; bans will not survive a restart until it opens");
                    (None, Restored::nothing())
                });
            let _ = restored_tx.send(held);
            let sweep = || sweep(&configured, &commands);
            let lift = std::panic::catch_unwind(std::panic::AssertUnwindSafe(sweep))
                .unwrap_or_else(|_| {
                    crate::metrics::state_errors().increment(1);
                    tracing::error!("the start-up sweep of removed actions' objects failed; tried again at the next start");
                    false
                });
            let _ = swept_tx.send(lift);
            writer(db);
        })?;
    Ok((thread, StateStart { restored, swept }))
}

/// Runs the daemon until `shutdown` is cancelled; each message on `reloads` (SIGHUP) reloads.
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
    reloads: mpsc::Receiver<()>,
) -> Result<(), AppError> {
    let mut daemon = start(config, options, shutdown).await?;
    daemon.supervise(reloads).await;
    daemon.shut_down().await;
    Ok(())
}

/// A started daemon: what supervision and shutdown need to reach.
struct Daemon {
    config: Config,
    options: RunOptions,
    listeners: Listeners,
    /// The control socket and metrics responder.
    service: TaskTracker,
    questions: mpsc::Receiver<Question>,
    commands: mpsc::Sender<Command>,
    /// The state could not be read at start: every jail's actions, also those a reload
    /// starts, keep what the kernel holds ([`crate::jail::JailSpec::state_unread`]).
    state_unread: bool,
    jail_task: tokio::task::JoinHandle<Vec<JoinHandle<()>>>,
    state_writer: JoinHandle<()>,
    shutdown: CancellationToken,
    /// Fleet mode's tasks, with `[fleet]`.
    fleet: Option<fleet::Running>,
}

/// Binds every socket (a port in use stops us before any firewall is touched), restores the
/// state, starts the jails and their actions, then the listeners, and reports ready.
async fn start(
    mut config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<Daemon, AppError> {
    apply_options(&mut config, options);
    let handle = metrics::install(config.fail2ban_exporter_names).map_err(AppError::Metrics)?;
    let fleet = match &config.fleet {
        Some(f) => Some(fleet::Fleet::check(f, &specs(&config, false)).await?),
        None => None,
    };

    let (failure_tx, failure_rx) = mpsc::channel(FAILURE_QUEUE);
    // With shared windows, listeners feed the fleet's counter, which feeds the jail task.
    let (listener_tx, shared_rx) = match fleet.as_ref().filter(|f| f.shares_windows()) {
        Some(_) => {
            let (tx, rx) = mpsc::channel(FAILURE_QUEUE);
            (tx, Some(rx))
        }
        None => (failure_tx.clone(), None),
    };
    let mut listeners = Listeners {
        udp: HashMap::new(),
        tcp: HashMap::new(),
        tls: HashMap::new(),
        unix: HashMap::new(),
        tls_config: Arc::new(ArcSwapOption::new(tls_config_of(&config))),
        tasks: TaskTracker::new(),
        pipeline: Arc::new(ArcSwap::from_pointee(pipeline_for(&config)?)),
        pool: crate::listener::parallel::Pool::new(),
        failures: listener_tx,
        shutdown: shutdown.clone(),
    };
    let bound = bind_new(&config, &listeners).await?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            // As every listen address: an IPv6 one is IPv6 only.
            tcp::bind(addr).map_err(|os_error| AppError::Bind {
                transport: "metrics",
                addr: addr.to_string(),
                os_error,
            })?,
        ),
        None => None,
    };
    let group = config.control_group;
    let control =
        control_server::bind(&config.control_socket, group).map_err(|os_error| AppError::Bind {
            transport: "control",
            addr: config.control_socket.display().to_string(),
            os_error,
        })?;

    let (state_tx, state_rx) = mpsc::channel(state::QUEUE_DEPTH);
    let state_errors = metrics::state_errors();
    let outbox = fleet.as_ref().and_then(|f| f.outbox());
    let state_path = config.state_path.clone();
    let commands = command_identities(&config);
    let (history_days, dry_run) = (config.history_days, options.dry_run);
    let open = {
        let state_path = config.state_path.clone();
        move || open_state(&state_path, history_days, dry_run)
    };
    let (state_writer, start) = start_state_thread(
        &config,
        open,
        commands.clone(),
        crate::action::sweep::at_start,
        move |db| {
            // Opened again by the writer when it could not be at start.
            let reopen = db.is_none().then_some(state_path);
            state::writer(db, state_rx, state_errors, outbox, reopen);
        },
    )
    .map_err(AppError::Thread)?;
    let Restored {
        bans: stored,
        counts,
        unread: state_unread,
    } = start.restored.await.unwrap_or_else(|_| Restored::nothing());
    // The firewall objects of jails removed from the config while the daemon was down (after
    // a crash) go before any jail's actions start.
    let lift = start.swept.await.unwrap_or(false);
    let jails = JailSet::start(specs(&config, state_unread), state_tx, stored, counts)
        .await
        .map_err(AppError::Thread)?;
    if lift {
        // Once every jail protects; their keys are no configured jail's.
        crate::action::sweep::lift_unconfigured_later(commands);
    }
    for j in &config.jails {
        tracing::info!(jail = %j.name, filter = %j.filter_origin, actions = ?j.actions.iter().map(|a| a.kind().name()).collect::<Vec<_>>(), "jail started");
    }
    let (commands, command_rx) = mpsc::channel(64);
    let allowlists = jails.allowlists();
    let jail_task = tokio::spawn(set::run(jails, failure_rx, command_rx, shutdown.clone()));
    let fleet = match fleet {
        Some(f) => Some(
            f.start(
                &specs(&config, state_unread),
                (&config.state_path, state_unread),
                shared_rx,
                failure_tx.clone(),
                set::JailTask {
                    commands: commands.clone(),
                    allowlists,
                },
                shutdown.clone(),
            )
            .await,
        ),
        None => None,
    };
    drop(failure_tx);

    listeners.spawn(bound, limits(&config), config.server.tls_handshake_timeout);
    let service = TaskTracker::new();
    let (question_tx, questions) = mpsc::channel::<Question>(64);
    service.spawn(control_server::serve(
        control,
        group,
        question_tx,
        shutdown.clone(),
    ));
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(transport = "metrics", addr = %addr, "listening");
        }
        let feed = Feed::new(
            commands.clone(),
            config.bans_token.clone(),
            fleet::node_name(config.fleet.as_ref()),
        )
        .route();
        service.spawn(metrics::serve(
            listener,
            handle,
            Some(feed),
            shutdown.clone(),
        ));
    }
    tracing::info!(jails = config.jails.len(), control = %config.control_socket.display(), "ready");
    crate::notify::ready();
    release_start_up_memory();
    Ok(Daemon {
        config,
        options,
        listeners,
        service,
        questions,
        commands,
        state_unread,
        jail_task,
        state_writer,
        shutdown,
        fleet,
    })
}

/// Hands back to the kernel the memory start-up freed (config and filter compilation, the
/// restore, the state and record reads), and the pages of the binary that start-up ran, which
/// an idle daemon would keep resident ([`crate::resident`], -6 MB of idle RSS). Once, after the
/// ready notification (a few milliseconds on this worker, as a reload's config compilation
/// takes).
fn release_start_up_memory() {
    release_freed_memory();
    let started = std::time::Instant::now();
    match crate::resident::page_out_binary() {
        Ok(out) if out.advised == 0 => {
            tracing::debug!("start-up pages of the binary kept: no clean read-only mapping of it")
        }
        Ok(out) => tracing::debug!(
            advised = out.advised,
            resident_kib_before = out.resident_kib.0,
            resident_kib_after = out.resident_kib.1,
            refused = ?out.refused.map(|e| e.to_string()),
            took = ?started.elapsed(),
            "start-up pages of the binary handed back to the kernel"
        ),
        // An older kernel (before 5.4) has no MADV_PAGEOUT: the pages stay, nothing else changes.
        Err(error) => tracing::debug!(%error, "start-up pages of the binary kept"),
    }
}

/// Hands back to the kernel the memory start-up or a reload freed: glibc keeps freed pages in
/// its arenas, and an idle daemon would carry them for its whole life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointers of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Daemon {
    /// Serves reloads (SIGHUP or `jailsink reload`) and control questions until shutdown.
    async fn supervise(&mut self, mut reloads: mpsc::Receiver<()>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(()) = reloads.recv() => {
                    if let Err(error) = self.reload().await {
                        tracing::error!(%error, "reload refused; the old config keeps running");
                    }
                }
                Some(question) = self.questions.recv() => {
                    if question.abandoned() {
                        tracing::warn!(request = ?question.request, "control request skipped: its client was already told it got no answer");
                        continue;
                    }
                    let response = self.answer(question.request).await;
                    let _ = question.answer.send(response);
                }
            }
        }
    }

    /// Reloads, logging what changed.
    async fn reload(&mut self) -> Result<String, ReloadError> {
        let summary = reload(
            &mut self.config,
            self.options,
            &mut self.listeners,
            &self.commands,
            self.state_unread,
        )
        .await?;
        if let Some(f) = &self.fleet {
            f.reloaded(
                &specs(&self.config, self.state_unread),
                self.config.fleet.as_ref(),
            );
        }
        tracing::info!(%summary, "reloaded");
        // The old config's compiled filters and the new config's compilation, freed.
        release_freed_memory();
        Ok(summary)
    }

    /// Answers one control request: reload here, everything else by the jail task.
    async fn answer(&mut self, request: Request) -> Response {
        if request == Request::Reload {
            return match self.reload().await {
                Ok(summary) => Response::Ok {
                    reply: Reply::Done {
                        message: format!("reloaded: {summary}"),
                    },
                },
                Err(error) => {
                    tracing::error!(%error, "reload refused; the old config keeps running");
                    Response::Error {
                        message: format!("reload refused, the old config keeps running:\n{error}"),
                    }
                }
            };
        }
        let banned = match &request {
            Request::Banned { jail } => Some(jail.clone()),
            _ => None,
        };
        let unban = match &request {
            Request::Unban {
                jail: Some(jail),
                addr: Some(addr),
                all: false,
            } => Some((jail.clone(), addr.clone())),
            _ => None,
        };
        let translate::Translated { query, invalid } = match translate::query(request) {
            Ok(translated) => translated,
            Err(error) => {
                return Response::Error {
                    message: error.to_string(),
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        let gone = || Response::Error {
            message: "the jail task is gone".into(),
        };
        if self.commands.send(Command::Query(query, tx)).await.is_err() {
            return gone();
        }
        let node = fleet::node_name(self.config.fleet.as_ref());
        let mut response = rx.await.map_or_else(
            |_| gone(),
            |answer| translate::response(answer, invalid, &node),
        );
        if let (Response::Error { .. }, Some((jail, addr)), Some(f)) =
            (&response, &unban, &self.fleet)
        {
            // Not this sink's ban: perhaps another sink's, to lift fleet-wide.
            if let Some(answer) = f.unban_elsewhere(jail, addr).await {
                response = answer;
            }
        }
        if let Some(jail) = banned {
            fleet::add_fleet_bans(&mut response, jail.as_deref(), self.fleet.as_ref());
        }
        response
    }

    /// Drains the listeners, lets the jail task finish, then waits (with a grace period) for
    /// the state writer and every action to stop and remove what they added.
    async fn shut_down(self) {
        tracing::info!("shutting down");
        crate::notify::stopping();
        let Daemon {
            config,
            listeners,
            service,
            jail_task,
            state_writer,
            fleet,
            ..
        } = self;
        listeners.tasks.close();
        service.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, listeners.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("listeners did not finish within the grace period");
        }
        let _ = std::fs::remove_file(&config.control_socket);
        drop(listeners);
        let mut threads: Vec<JoinHandle<()>> = match jail_task.await {
            Ok(threads) => threads,
            Err(error) => {
                tracing::error!(%error, "jail task failed");
                Vec::new()
            }
        };
        // The jail task is gone, so the state writer drains and ends, and with it every action
        // queue closes: runners drain, stop (removing their firewall entries) and exit.
        threads.push(state_writer);
        if let Some(f) = fleet {
            threads.extend(f.finish().await);
        }
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(ACTION_STOP_GRACE, joined)
            .await
            .is_err()
        {
            tracing::warn!("actions did not stop within the grace period");
        }
        tracing::info!("stopped");
    }
}

/// Warns, at a reload, for each changed setting it does not apply everywhere at once: those
/// that take effect at the next restart (which `reload` carries over), and the limits running
/// listeners keep.
fn warn_unapplied(current: &Config, next: &Config) {
    const RESTART: &str = "it takes effect at the next restart";
    const LISTENERS: &str = "listeners and connections already open keep the old value until the next restart; new ones take it";
    let (was, now) = (&current.server, &next.server);
    for (what, changed, when) in [
        (
            "[metrics] listen",
            current.metrics_listen != next.metrics_listen,
            RESTART,
        ),
        (
            "[metrics] fail2ban_exporter_names",
            current.fail2ban_exporter_names != next.fail2ban_exporter_names,
            RESTART,
        ),
        (
            "[metrics] bans_token",
            current.bans_token != next.bans_token,
            RESTART,
        ),
        (
            "[control]",
            current.control_socket != next.control_socket
                || current.control_group != next.control_group,
            RESTART,
        ),
        (
            "[state] path",
            current.state_path != next.state_path,
            RESTART,
        ),
        (
            "[state] history_days",
            current.history_days != next.history_days,
            RESTART,
        ),
        (
            // A running fleet says what of its section it applies (FleetApp::reloaded).
            "[fleet] (added)",
            current.fleet.is_none() && next.fleet.is_some(),
            RESTART,
        ),
        (
            "[server] max_tcp_connections",
            was.max_tcp_connections != now.max_tcp_connections,
            LISTENERS,
        ),
        (
            "[server] max_tcp_connections_per_sender",
            was.max_tcp_connections_per_sender != now.max_tcp_connections_per_sender,
            LISTENERS,
        ),
        (
            "[server] tcp_idle_timeout",
            was.tcp_idle_timeout != now.tcp_idle_timeout,
            LISTENERS,
        ),
        (
            "[server] tls_handshake_timeout",
            was.tls_handshake_timeout != now.tls_handshake_timeout,
            LISTENERS,
        ),
        (
            "[server] unix_mode/unix_group",
            was.unix_mode != now.unix_mode || was.unix_group != now.unix_group,
            LISTENERS,
        ),
        (
            "[server] udp_receive_buffer",
            was.udp_receive_buffer != now.udp_receive_buffer,
            LISTENERS,
        ),
        (
            "[server] max_message_bytes",
            was.max_message_bytes != now.max_message_bytes,
            LISTENERS,
        ),
    ] {
        if changed {
            tracing::warn!("{what} changed: {when}");
        }
    }
}

/// Compiles the config file again and, if it is sound, swaps it in: new listeners bound first,
/// then the jails, then the pipeline, then listeners that are no longer wanted closed.
async fn reload(
    current: &mut Config,
    options: RunOptions,
    listeners: &mut Listeners,
    commands: &mpsc::Sender<Command>,
    state_unread: bool,
) -> Result<String, ReloadError> {
    let _reloading = crate::notify::Reloading::begin();
    let mut next = config::load(&current.path)?;
    apply_options(&mut next, options);
    let bound = bind_new(&next, listeners).await?;
    let pipeline = pipeline_after(&next, Some(&listeners.pipeline.load()))?;
    let (tx, rx) = oneshot::channel();
    commands
        .send(Command::Reload(specs(&next, state_unread), tx))
        .await
        .map_err(|_| ReloadError::JailTaskGone)?;
    let summary = rx.await.map_err(|_| ReloadError::JailTaskGone)??;
    listeners.pipeline.store(Arc::new(pipeline));
    listeners.tls_config.store(tls_config_of(&next));
    listeners.retain(&next);
    listeners.spawn(bound, limits(&next), next.server.tls_handshake_timeout);
    warn_unapplied(current, &next);
    // What takes effect at the next restart (the RESTART rows of warn_unapplied) keeps its
    // running value: the stop removes the control socket this process bound (not a path it
    // never bound, maybe someone else's), and the next reload warns again.
    next.metrics_listen = current.metrics_listen;
    next.fail2ban_exporter_names = current.fail2ban_exporter_names;
    next.bans_token = current.bans_token.take();
    next.control_socket = std::mem::take(&mut current.control_socket);
    next.control_group = current.control_group.take();
    next.state_path = std::mem::take(&mut current.state_path);
    next.history_days = current.history_days;
    if current.fleet.is_none() {
        // No fleet runs: none is named (node name, fleet bans) until a restart starts one.
        next.fleet = None;
    }
    *current = next;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of one jail with a command action (whose identity the sweep is given), its
    /// state in the returned directory.
    fn one_jail() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.toml");
        let state = dir.path().join("state.db");
        std::fs::write(
            &path,
            format!("[state]\npath = '{}'\n[jails.a]\nfailregex = ['from <HOST> port']\n[[jails.a.action]]\ntype = 'command'\nban = ['true', '<ip>']\nunban = ['true', '<ip>']\n", state.display()),
        )
        .unwrap();
        let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        (dir, config)
    }

    /// The daemon's open of `config`'s state, as the state thread runs it.
    fn opener(config: &Config) -> impl FnOnce() -> (Option<State>, Restored) + Send + 'static {
        let (path, days) = (config.state_path.clone(), config.history_days);
        move || open_state(&path, days, false)
    }

    /// Opening the state and the start-up sweep (processes, SQLite) run on the state thread,
    /// not on the runtime's worker (their debug assertions would panic there: see the tests
    /// below), in that order, and the writer only after both, with the database opened.
    #[tokio::test(flavor = "current_thread")]
    async fn the_state_opens_and_the_sweep_runs_on_the_state_thread_before_the_writer() {
        let (_dir, config) = one_jail();
        {
            let mut db = State::open(&config.state_path).unwrap();
            db.apply(&[state::StateOp::Ban {
                jail: "a".into(),
                order: crate::action::BanOrder {
                    target: "192.0.2.7/32".parse().unwrap(),
                    failures: 3,
                    bantime: None,
                    decided_at: std::time::Instant::now(),
                    from_state: false,
                    evidence: Default::default(),
                },
                banned_at: std::time::SystemTime::now(),
                ban_count: 1,
                hosts: Vec::new(),
            }])
            .unwrap();
        }
        let commands = command_identities(&config);
        assert_eq!(commands["a"].len(), 1);
        let (steps_tx, steps) = std::sync::mpsc::channel();
        let (opened_tx, swept_tx) = (steps_tx.clone(), steps_tx.clone());
        let open_state = opener(&config);
        let open = move || {
            opened_tx.send("open").unwrap();
            open_state()
        };
        let sweep = move |configured: &[ActionSpec], commands: &HashMap<String, Vec<String>>| {
            swept_tx.send("sweep").unwrap();
            crate::action::sweep::at_start(configured, commands)
        };
        let (thread, start) = start_state_thread(&config, open, commands, sweep, move |db| {
            let name = std::thread::current().name().map(str::to_string);
            assert_eq!(name.as_deref(), Some("state"));
            steps_tx
                .send(if db.is_some() {
                    "writer, opened"
                } else {
                    "writer, none"
                })
                .unwrap();
        })
        .unwrap();
        let held = start.restored.await.expect("what the state held");
        assert!(!held.unread);
        assert_eq!(held.bans.len(), 1);
        assert_eq!(held.bans[0].target.to_string(), "192.0.2.7/32");
        assert_eq!(
            held.counts[&("a".to_string(), "192.0.2.7/32".parse().unwrap())],
            1
        );
        assert!(!start.swept.await.expect("the sweep ended without a panic"));
        thread.join().expect("the state thread ends normally");
        assert_eq!(
            steps.try_iter().collect::<Vec<_>>(),
            ["open", "sweep", "writer, opened"]
        );
    }

    /// A sweep that panics leaves the writer to start all the same (every ban reaches the
    /// actions through it), and says nothing waits to be lifted (review-tidyB finding 4).
    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_start_up_sweep_still_starts_the_writer() {
        let (_dir, config) = one_jail();
        let (wrote_tx, wrote) = std::sync::mpsc::channel();
        let sweep = |_: &[ActionSpec], _: &HashMap<String, Vec<String>>| -> bool {
            panic!("a sweep that fails")
        };
        let commands = command_identities(&config);
        let (thread, start) =
            start_state_thread(&config, opener(&config), commands, sweep, move |db| {
                wrote_tx.send(db.is_some()).unwrap();
            })
            .unwrap();
        assert!(!start.restored.await.expect("what the state held").unread);
        assert!(!start
            .swept
            .await
            .expect("the sweep's answer, even after its panic"));
        thread.join().expect("the state thread ends normally");
        assert_eq!(
            wrote.recv().ok(),
            Some(true),
            "the writer ran, with the database"
        );
    }

    /// An open that panics is reported as a state not read, and the sweep and the writer run
    /// all the same (the writer without a database, to open it later).
    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_open_still_sweeps_and_starts_the_writer() {
        let (_dir, config) = one_jail();
        let (wrote_tx, wrote) = std::sync::mpsc::channel();
        let open = || -> (Option<State>, Restored) { panic!("an open that fails") };
        let (thread, start) = start_state_thread(
            &config,
            open,
            command_identities(&config),
            crate::action::sweep::at_start,
            move |db| wrote_tx.send(db.is_some()).unwrap(),
        )
        .unwrap();
        let held = start
            .restored
            .await
            .expect("what the state held, even after the panic");
        assert!(held.unread && held.bans.is_empty());
        assert!(!start.swept.await.expect("the sweep's answer"));
        thread.join().expect("the state thread ends normally");
        assert_eq!(wrote.recv().ok(), Some(false));
    }

    /// A state that cannot be opened (its directory is a file) is reported unread, and the
    /// writer starts without a database, to open it later.
    #[tokio::test(flavor = "current_thread")]
    async fn a_state_that_does_not_open_is_reported_unread_and_the_writer_still_starts() {
        let (dir, mut config) = one_jail();
        let blocker = dir.path().join("not-a-directory");
        std::fs::write(&blocker, "").unwrap();
        config.state_path = blocker.join("state.db");
        let (wrote_tx, wrote) = std::sync::mpsc::channel();
        let (thread, start) = start_state_thread(
            &config,
            opener(&config),
            command_identities(&config),
            crate::action::sweep::at_start,
            move |db| wrote_tx.send(db.is_some()).unwrap(),
        )
        .unwrap();
        let held = start.restored.await.expect("what the state held");
        assert!(held.unread && held.bans.is_empty());
        assert!(!start.swept.await.unwrap());
        thread.join().expect("the state thread ends normally");
        assert_eq!(wrote.recv().ok(), Some(false));
    }

    /// Called on a runtime worker (as it was, from the daemon's start task), opening the state
    /// panics in debug builds.
    #[cfg(debug_assertions)]
    #[tokio::test(flavor = "current_thread")]
    #[should_panic(expected = "opening the state blocks a runtime worker")]
    async fn opening_the_state_refuses_a_runtime_worker() {
        let (_dir, config) = one_jail();
        let _ = open_state(&config.state_path, config.history_days, false);
    }

    /// Called on a runtime worker (as it was, from the jail set's start), the sweep panics in
    /// debug builds.
    #[cfg(debug_assertions)]
    #[tokio::test(flavor = "current_thread")]
    #[should_panic(expected = "the start-up sweep blocks a runtime worker")]
    async fn the_start_up_sweep_refuses_a_runtime_worker() {
        let (_dir, config) = one_jail();
        crate::action::sweep::at_start(&[], &command_identities(&config));
    }
}
