//! Wiring: a compiled config becomes running tasks, in an order that makes readiness honest
//! (the metrics endpoint answers only once every syslog listener is bound), and a shutdown that
//! drains listeners, lets the jail task finish, and has every action remove what it added.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::runner::{self, Runner};
use crate::action::ActionSpec;
use crate::config::Config;
use crate::filter::router::{JailRoute, Router};
use crate::jail::{self, Jail, JailSet};
use crate::listener::{tcp, udp, Pipeline};
use crate::metrics::{self, JailMetrics};

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
    #[error("cannot bind {transport} {addr}: {source}")]
    Bind {
        /// udp, tcp or metrics.
        transport: &'static str,
        /// The address from the config.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The jails' combined filters could not be built.
    #[error("filters: {0}")]
    Router(String),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Replace every action with the log action.
    pub dry_run: bool,
}

/// Runs the daemon until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(
    mut config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    if options.dry_run {
        for jail in &mut config.jails {
            jail.actions = vec![ActionSpec::Log];
        }
    }
    let handle = metrics::install().map_err(AppError::Metrics)?;

    // Bind everything first: a port in use must stop us before any firewall is touched.
    let mut udp_sockets = Vec::new();
    for &addr in &config.server.udp {
        let socket = udp::bind(addr).map_err(|source| AppError::Bind {
            transport: "udp",
            addr,
            source,
        })?;
        udp_sockets.push(socket);
    }
    let mut tcp_listeners = Vec::new();
    for &addr in &config.server.tcp {
        let listener = bind_tcp(addr, "tcp").await?;
        tcp_listeners.push(listener);
    }
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind_tcp(addr, "metrics").await?),
        None => None,
    };

    let router = Router::new(
        config
            .jails
            .iter()
            .map(|j| JailRoute {
                filter: j.filter.clone(),
                programs: j.programs.clone(),
                hosts: j.hosts.clone(),
            })
            .collect(),
    )
    .map_err(AppError::Router)?;

    let mut jails = Vec::new();
    let mut runners: Vec<Runner> = Vec::new();
    for j in &config.jails {
        let m = JailMetrics::new(&j.name);
        runners.push(
            // Bans restored from the state database go here once it exists; until then the
            // kernel is reconciled to none, which lifts whatever a crash left behind.
            runner::spawn(&j.name, &j.actions, m.clone(), Vec::new())
                .await
                .map_err(AppError::Thread)?,
        );
        jails.push(Jail::new(&j.name, j.settings.clone(), m));
        tracing::info!(jail = %j.name, filter = %j.filter_origin, actions = ?j.actions.iter().map(|a| a.kind()).collect::<Vec<_>>(), "jail started");
    }
    let queues = runners.iter().map(|r| r.queue.clone()).collect();
    let (failure_tx, failure_rx) = mpsc::channel(FAILURE_QUEUE);
    let jail_task = tokio::spawn(jail::run(
        JailSet::new(jails, queues),
        failure_rx,
        shutdown.clone(),
    ));
    let threads: Vec<_> = runners.into_iter().map(|r| r.thread).collect();

    let pipeline = Arc::new(Pipeline::new(
        Arc::new(router),
        config.server.zone,
        config.server.allowed_senders.clone(),
        config.server.max_message_bytes,
    ));
    let listeners = TaskTracker::new();
    let receivers = std::thread::available_parallelism().map_or(2, |n| n.get());
    for socket in udp_sockets {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(transport = "udp", addr = %addr, "listening");
        }
        listeners.spawn(udp::serve(
            socket,
            receivers,
            pipeline.clone(),
            failure_tx.clone(),
            shutdown.clone(),
        ));
    }
    let limits = tcp::TcpLimits {
        max_connections: config.server.max_tcp_connections,
        idle_timeout: config.server.tcp_idle_timeout,
    };
    for listener in tcp_listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(transport = "tcp", addr = %addr, "listening");
        }
        listeners.spawn(tcp::serve(
            listener,
            limits,
            pipeline.clone(),
            failure_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(failure_tx);
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(transport = "metrics", addr = %addr, "listening");
        }
        listeners.spawn(metrics::serve(listener, handle, shutdown.clone()));
    }
    tracing::info!(jails = config.jails.len(), "ready");

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    listeners.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, listeners.wait())
        .await
        .is_err()
    {
        tracing::warn!("listeners did not finish within the grace period");
    }
    if let Err(error) = jail_task.await {
        tracing::error!(%error, "jail task failed");
    }
    // The jail task is gone, so every action queue is closed: runners drain, stop, and exit.
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
    Ok(())
}

async fn bind_tcp(addr: SocketAddr, transport: &'static str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            transport,
            addr,
            source,
        })
}
