mod daemon;
mod fail2ban;
mod filters;
mod iptables;
mod operate;
mod support;
