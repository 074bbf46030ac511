mod daemon;
mod filters;
mod iptables;
mod operate;
mod support;
