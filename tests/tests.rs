mod daemon;
mod filters;
mod iptables;
mod observe;
mod operate;
mod support;
