mod daemon;
mod filters;
mod iptables;
mod support;
