mod daemon;
mod filters;
mod firewall;
mod iptables;
mod lab;
// The firewall bench's measurement, run small by firewall::bench_smoke so it cannot rot.
#[path = "../benches/firewall/measure.rs"]
mod measure;
mod support;
