//! jailsink: a syslog receiver that turns brute-force failures into firewall bans.
//!
//! Layout, in the order data flows through it. Imports follow the data: a module imports only
//! what is downstream of it or a leaf (`address`, `evidence`, `metrics`), so the jail never
//! knows the control protocol and an action never knows a jail (`cargo test --test tests layout`
//! checks it).
//! - [`listener`]: UDP datagrams and TCP streams (RFC 6587 framing) into frames, with a sender ACL.
//! - [`parse`]: one frame into an `parse::Event` (RFC 3164 / RFC 5424 via syslog_loose).
//! - [`filter`]: events routed by program (`filter::router`), matched by the engine
//!   (`filter::engine`) into failures; `filter::lookup` finds filter files, `filter::fail2ban`
//!   reads fail2ban's.
//! - [`jail`]: failures per address within findtime, bans at maxretry, expiry at bantime; the
//!   jail task (`jail::set`) answers its own `jail::query` type and runs the
//!   `jail::settings` config compiled for it.
//! - [`state`]: SQLite persistence of active bans, ban history and the fleet outbox; a ban is
//!   committed before any action (or the fleet) sees it.
//! - [`fleet`]: fleet mode on Redis: publish committed bans (sink), follow them into the
//!   firewall (agent), shared windows.
//! - [`action`]: bans applied off the hot path (iptables, nftables, ipset, command, log), chosen
//!   by `action::ActionKind`.
//! - Leaves: [`address`] (parsing, normalising, showing addresses and networks), `duration`
//!   (durations as operators write them), [`evidence`] (the lines a ban keeps, and the `tail`
//!   stream every stage publishes to) and [`metrics`]
//!   (every metric defined once, and the /metrics responder).
//! - [`config`]: TOML parsed, then compiled with every error reported at once, into the pieces
//!   each module takes; `config::filter_file` is the one filter-file loader.
//! - [`control`]: the Unix control socket, the CLI's client, and `control::translate` between
//!   the protocol and the jail's queries.
//! - [`app`]: wiring: start, supervise (reload, control), shut down.
//! - [`resident`]: the binary's start-up pages handed back to the kernel once the daemon is up.
//! - [`notify`]: systemd readiness (sd_notify): ready once listeners are bound, reloading, stopping.
//! - [`regex_tool`]: the offline `jailsink regex` filter tester.
//! - [`import`]: `jailsink import-fail2ban`, a fail2ban jail configuration as jailsink TOML.

#![warn(missing_docs)]
// The docs are for developers of jailsink (`cargo doc --document-private-items`): links to
// crate-private items are what they need.
#![allow(rustdoc::private_intra_doc_links)]

pub mod action;
pub mod address;
pub mod app;
pub mod config;
pub mod control;
mod duration;
pub mod evidence;
pub mod filter;
pub mod fleet;
pub mod import;
pub mod jail;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod parse;
/// PEM certificate files, for the TLS listener and the fleet's Redis CA.
pub mod pem;
pub mod regex_tool;
pub mod resident;
pub mod state;
