mod daemon;
mod fail2ban;
mod fail2ban_live;
mod filters;
mod import;
mod iptables;
mod operate;
mod support;
