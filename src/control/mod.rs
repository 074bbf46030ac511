//! The control plane: a Unix socket the CLI (`status`, `ban`, `unban`, `banned`, `reload`, ban
//! lists in chunks, `why`, and the `tail` stream)
//! talks to. The server checks the peer's credentials and hands questions to the jail task over
//! a channel; the jail task never knows the socket.

pub mod client;
pub mod explain;
pub(crate) mod feed;
pub mod list;
pub mod proto;
pub(crate) mod server;
pub(crate) mod translate;
