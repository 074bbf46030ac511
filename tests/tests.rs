mod bench_smoke;
mod containers;
mod daemon;
mod fail2ban;
mod fail2ban_live;
mod feed;
mod filters;
mod firewall;
mod fleet;
mod grafana;
mod hostile;
mod import;
mod ingest;
mod iptables;
mod lab;
mod layout;
mod manual;
// The firewall bench's measurement, run small by firewall::bench_smoke so it cannot rot.
#[path = "../benches/firewall/measure.rs"]
mod measure;
mod observe;
mod operate;
mod package;
mod redis_support;
mod support;
mod udp;
