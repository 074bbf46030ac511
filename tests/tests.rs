mod daemon;
mod fail2ban;
mod filters;
mod import;
mod iptables;
mod operate;
mod support;
