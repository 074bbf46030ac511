mod daemon;
mod filters;
mod firewall;
mod iptables;
mod lab;
mod support;
