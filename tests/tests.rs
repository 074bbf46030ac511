mod daemon;
mod fail2ban;
mod filters;
mod hostile;
mod iptables;
mod observe;
mod operate;
mod support;
