//! jailsink: a syslog receiver that turns brute-force failures into firewall bans.
//!
//! Layout, in the order data flows through it:
//! - [`listener`]: UDP datagrams and TCP streams (RFC 6587 framing) into frames, with a sender ACL.
//! - [`parse`]: one frame into an [`parse::Event`] (RFC 3164 / RFC 5424 via syslog_loose).
//! - [`filter`]: events routed by program, matched by failregex, into failures.
//! - [`jail`]: failures per address within findtime, bans at maxretry, expiry at bantime.
//! - [`action`]: bans applied off the hot path (iptables, nftables, ipset, command, log).
//! - [`address`]: parsing, normalising and showing addresses and networks; a leaf for every stage.
//! - [`metrics`]: every metric defined once, and the /metrics responder.
//! - [`config`]: TOML parsed, then compiled with every error reported at once.
//! - [`state`]: SQLite persistence of active bans, ban history and the fleet outbox.
//! - [`fleet`]: fleet mode on Redis: publish committed bans (sink), follow them (agent), shared windows.
//! - [`control`]: the Unix control socket and the CLI's client for it.
//! - [`app`]: wiring, start-up order, reload and graceful shutdown.
//! - [`notify`]: systemd readiness (sd_notify): ready once listeners are bound, reloading, stopping.
//! - [`regex_tool`]: the offline `jailsink regex` filter tester.
//! - [`import`]: `jailsink import-fail2ban`, a fail2ban jail configuration as jailsink TOML.

#![warn(missing_docs)]

pub mod action;
pub mod address;
pub mod app;
pub mod config;
pub mod control;
pub mod filter;
pub mod fleet;
pub mod import;
pub mod jail;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod parse;
pub mod regex_tool;
pub mod state;
