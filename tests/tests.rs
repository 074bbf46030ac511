mod daemon;
mod fail2ban;
mod filters;
mod hostile;
mod iptables;
mod operate;
mod support;
