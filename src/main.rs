//! The `jailsink` command line: run the daemon, check a config, test a filter, import fail2ban's.
//!
//! Every subcommand, argument and flag carries help text (a unit test below walks the tree), and
//! the man pages are generated from these definitions (`jailsink manpage DIR`, run by
//! scripts/package), so `--help` and `man jailsink` never drift apart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use std::io::Write;

use jailsink::control::list::{self, ListOrder};
use jailsink::control::proto::{Reply, Request, Response};
use jailsink::control::{client, explain};
use jailsink::{app, config, regex_tool};

/// sysexits.h EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

/// The description of `jailsink --help` and of the jailsink(1) man page.
const LONG_ABOUT: &str = "\
Bans brute-force attackers found in a live syslog stream.

jailsink is a syslog receiver: rsyslog forwards to it over TCP or UDP, it applies fail2ban-style \
jails (failregex, <HOST>, findtime, maxretry, bantime) to the live stream, and bans offending \
addresses with iptables, nftables, ipset or a command of your own. `run` is the daemon; status, \
ban, unban, banned, why, tail and reload talk to it over its control socket (root, and the \
members of [control] group if one is set).

Files: /etc/jailsink/jailsink.toml (the configuration, -c), /etc/jailsink/filter.d/*.toml (its \
filters), /var/lib/jailsink/state.db (active bans and their history), \
/run/jailsink/jailsink.sock (the control socket). Examples for rsyslog, systemd, Prometheus, \
Alertmanager and Grafana are in /usr/share/doc/jailsink/examples.";

#[derive(Parser)]
#[command(
    name = "jailsink",
    version,
    about = "Bans brute-force attackers found in a live syslog stream",
    long_about = LONG_ABOUT
)]
struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        /// Replace every action with the log action.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compile the config and every filter; print the jails, or every error.
    Check,
    /// Test a filter against a log file, `-` (stdin) or one literal line, like fail2ban-regex.
    Regex {
        /// Log file, `-`, or one line.
        log: String,
        /// Filter name, path to a .toml filter, a fail2ban .conf path (with optional
        /// [mode=aggressive, ...] options), or a literal regex with <HOST>.
        filter: String,
        /// Print every matched line.
        #[arg(long)]
        print_all_matched: bool,
        /// Print every missed line.
        #[arg(long)]
        print_all_missed: bool,
        /// One JSON object per input line.
        #[arg(long)]
        json: bool,
        /// A filter option, as a jail's `filter_options` gives it (repeatable): `mode=aggressive`
        /// runs a jailsink .toml filter in that mode, exactly as a jail with
        /// `filter_options = { mode = "aggressive" }` does; a fail2ban filter takes any of its
        /// options this way too.
        #[arg(long = "filter-option", value_name = "KEY=VALUE", value_parser = regex_tool::filter_option)]
        filter_options: Vec<(String, String)>,
        /// Threads judging the lines of a jailsink filter (default: every core; 1: one thread).
        /// The output is the same whatever the count. A fail2ban .conf filter keeps multi-line
        /// state, so its lines are judged on one thread, in order.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=regex_tool::MAX_THREADS as u64))]
        threads: Option<u64>,
    },
    /// Show jails, or one jail's counts and bans.
    Status {
        /// The jail to show; without it, the list of jails.
        jail: Option<String>,
        /// Print JSON instead of fail2ban's layout.
        #[arg(long)]
        json: bool,
        /// The fleet from Redis: this node's connection and every node's heartbeat.
        #[arg(long, conflicts_with = "jail")]
        fleet: bool,
    },
    /// Ban an address or network by hand, or every line of a file (a blocklist).
    Ban {
        /// The jail whose actions apply the ban (and whose bantime it gets).
        jail: String,
        /// The IPv4 or IPv6 address, or a network in CIDR notation (198.51.100.0/24).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        addr: Option<String>,
        /// Ban every address and network of this file (`-` is stdin), one per line; `#` and `;`
        /// start comments. Exits 1 if a line was invalid or ignored.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Ban for this long instead of the jail's bantime: 10m, 1h 30m, 86400, permanent (or -1).
        #[arg(long, value_name = "DUR", allow_hyphen_values = true)]
        bantime: Option<String>,
        /// With --file: print the summary as JSON.
        #[arg(long, requires = "file")]
        json: bool,
    },
    /// Lift a ban by hand, or the bans of every line of a file.
    Unban {
        /// The jail to lift the ban in; `unban ADDR` alone lifts it in every jail.
        jail: Option<String>,
        /// The address or network to unban.
        addr: Option<String>,
        /// Lift every ban (of JAIL, or of every jail).
        #[arg(long)]
        all: bool,
        /// Lift the bans of every address and network of this file in JAIL (`-` is stdin).
        #[arg(long, value_name = "PATH", requires = "jail", conflicts_with_all = ["addr", "all"])]
        file: Option<PathBuf>,
        /// With --file: print the summary as JSON.
        #[arg(long, requires = "file")]
        json: bool,
    },
    /// List active bans.
    Banned {
        /// Only this jail's bans.
        jail: Option<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// The fleet's active bans, from Redis, with origin and host names.
        #[arg(long)]
        fleet: bool,
    },
    /// Why an address is or was banned: per jail, the failures counted now, the active ban
    /// with the lines that decided it, and past bans (also of networks holding the address).
    Why {
        /// The IPv4 or IPv6 address.
        addr: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stream every message routed to the jails (or one jail) with what became of it
    /// (matched, ignored, missed), and every ban and unban, until interrupted.
    Tail {
        /// Only this jail.
        jail: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Re-read config and filters.
    Reload,
    /// Print a jailsink config (TOML) for the enabled jails of a fail2ban configuration.
    ImportFail2ban {
        /// fail2ban's configuration directory (jail.conf, jail.local, jail.d, filter.d).
        #[arg(default_value = jailsink::import::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Write the man pages (jailsink.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpage {
        /// The directory to write them to (created if missing).
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("jailsink: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a terminal: journald, files and shippers get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        // The same fields as the README's example: the module path is no field an operator
        // greps for.
        LogFormat::Json => builder.json().flatten_event(true).with_target(false).init(),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { dry_run } => {
            let config = match config::load(&cli.config) {
                Ok(c) => c,
                Err(errors) => return Ok(config_errors(&errors)),
            };
            run_daemon(config, app::RunOptions { dry_run })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => match config::load(&cli.config) {
            Ok(config) => {
                print_jails(&config);
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => Ok(config_errors(&errors)),
        },
        Command::Regex {
            log,
            filter,
            print_all_matched,
            print_all_missed,
            json,
            filter_options,
            threads,
        } => {
            let (dirs, zone) = regex_context(&cli.config)?;
            let filter_options: std::collections::BTreeMap<String, String> =
                filter_options.into_iter().collect();
            let loaded = match regex_tool::load_filter(&filter, &dirs, &filter_options) {
                Ok(l) => l,
                Err(reason) => {
                    eprintln!("{reason}");
                    return Ok(ExitCode::from(EX_CONFIG));
                }
            };
            let options = regex_tool::Options {
                print_all_matched,
                print_all_missed,
                json,
                threads: match threads {
                    Some(n) => usize::try_from(n).unwrap_or(1),
                    None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                },
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            regex_tool::run(&log, &loaded, &zone, options, &mut out).context("reading the log")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            json, fleet: true, ..
        } => fleet_command(&cli.config, FleetQuery::Status, json),
        Command::Status { jail, json, .. } => control(&cli.config, Request::Status { jail }, json),
        Command::Ban {
            jail,
            file: Some(path),
            bantime,
            json,
            ..
        } => ban_list(&cli.config, &jail, &path, ListOrder::Ban { bantime }, json),
        Command::Ban {
            jail,
            addr,
            bantime,
            json,
            ..
        } => {
            if json {
                json_needs_file();
            }
            let addr = addr.unwrap_or_default();
            let request = Request::Ban {
                jail,
                addr,
                bantime,
            };
            control(&cli.config, request, false)
        }
        Command::Unban {
            jail: Some(jail),
            file: Some(path),
            json,
            ..
        } => ban_list(&cli.config, &jail, &path, ListOrder::Unban, json),
        Command::Unban {
            jail,
            addr,
            all,
            json,
            ..
        } => {
            if json {
                json_needs_file();
            }
            // `unban ADDR` (every jail) reads as a lone positional that is an address.
            let (jail, addr) = match (jail, addr) {
                (Some(one), None) if is_target(&one) => (None, Some(one)),
                other => other,
            };
            control(&cli.config, Request::Unban { jail, addr, all }, false)
        }
        Command::Banned {
            jail,
            json,
            fleet: true,
        } => fleet_command(&cli.config, FleetQuery::Banned(jail), json),
        Command::Banned { jail, json, .. } => control(&cli.config, Request::Banned { jail }, json),
        Command::Reload => control(&cli.config, Request::Reload, false),
        Command::Why { addr, json } => control(&cli.config, Request::Why { addr }, json),
        Command::Tail { jail, json } => tail(&cli.config, jail, json),
        Command::ImportFail2ban { dir } => {
            let text = jailsink::import::import_fail2ban(&dir)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage { out_dir } => {
            write_manpages(&out_dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// jailsink.1 and jailsink-SUBCOMMAND.1 for every visible subcommand, from the clap definitions.
fn write_manpages(out_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    clap_mangen::generate_to(Cli::command(), out_dir)
        .with_context(|| format!("writing man pages to {}", out_dir.display()))
}

/// Filter dirs and zone for `regex`: from the config when it exists, else the defaults.
fn regex_context(path: &Path) -> anyhow::Result<(Vec<PathBuf>, jailsink::parse::Zone)> {
    if !path.exists() {
        let dirs = vec![
            PathBuf::from("conf/filter.d"),
            PathBuf::from("/etc/fail2ban/filter.d"),
        ];
        return Ok((dirs, jailsink::parse::Zone::Utc));
    }
    let raw: config::raw::RawConfig =
        config::read_toml(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let dirs = config::filter_dirs(raw.defaults.filter_dirs.as_deref(), base);
    let zone = jailsink::parse::Zone::parse(raw.server.timezone.as_deref().unwrap_or("UTC"))
        .map_err(|e| anyhow::anyhow!("{}: server.timezone: {e}", path.display()))?;
    Ok((dirs, zone))
}

/// The control socket named by the config (its default when the file does not exist). Only
/// `[control] socket` is read, and leniently: a config being edited (an unknown key, a bad
/// value, even broken TOML) must not lock the operator out of the daemon still running the
/// last good one, nor keep `reload` from reaching it to be refused there.
fn control_socket(path: &Path) -> anyhow::Result<PathBuf> {
    const DEFAULT: &str = "/run/jailsink/jailsink.sock";
    if !path.exists() {
        return Ok(PathBuf::from(DEFAULT));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            eprintln!(
                "jailsink: warning: {} is not valid TOML ({}); trying the default control socket {DEFAULT}",
                path.display(),
                e.message()
            );
            return Ok(PathBuf::from(DEFAULT));
        }
    };
    match table.get("control").and_then(|c| c.get("socket")) {
        None => Ok(PathBuf::from(DEFAULT)),
        Some(toml::Value::String(socket)) => Ok(PathBuf::from(socket)),
        Some(_) => anyhow::bail!("{}: control.socket: not a string", path.display()),
    }
}

/// `--json` without `--file` on ban and unban: a usage error, as clap reports them (its
/// `requires = "file"` on a flag is not enforced), rather than a JSON request answered in text.
fn json_needs_file() -> ! {
    Cli::command()
        .error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--json prints the summary of --file; a single ban or unban answers in one line",
        )
        .exit()
}

/// Whether a lone `unban` argument is an address or CIDR network rather than a jail name.
fn is_target(text: &str) -> bool {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, "0"));
    addr.parse::<std::net::IpAddr>().is_ok() && prefix.parse::<u8>().is_ok()
}

/// `ban JAIL --file` and `unban JAIL --file`: the summary, human or JSON; exit 1 when a line
/// was invalid or refused as ignored.
fn ban_list(
    config_path: &Path,
    jail: &str,
    path: &Path,
    order: ListOrder,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let socket = control_socket(config_path)?;
    let summary = match list::apply_file(&socket, jail, path, &order) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("jailsink: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", list::render(jail, &order, &summary));
    }
    let clean = summary.invalid.is_empty() && summary.ignored.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sends one request to the daemon and prints the answer, human or JSON.
fn control(config_path: &Path, request: Request, json: bool) -> anyhow::Result<ExitCode> {
    let socket = control_socket(config_path)?;
    let asked = match &request {
        Request::Why { addr } => addr.clone(),
        _ => String::new(),
    };
    let response = match client::call(&socket, &request) {
        Ok(r) => r,
        Err(error) => {
            eprintln!("jailsink: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let reply = match response {
        Response::Error { message } => {
            eprintln!("jailsink: {message}");
            return Ok(ExitCode::FAILURE);
        }
        Response::Ok { reply } => reply,
    };
    if json {
        let value = match &reply {
            Reply::Jails { jails } => serde_json::json!({ "jails": jails }),
            Reply::JailStatus(status) => serde_json::to_value(status)?,
            Reply::Banned { bans } => serde_json::to_value(bans)?,
            Reply::Done { message } => serde_json::json!({ "message": message }),
            Reply::Applied(summary) => serde_json::to_value(summary)?,
            Reply::Why { jails } => serde_json::json!({ "addr": asked, "jails": jails }),
        };
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    match reply {
        Reply::Jails { jails } => {
            println!("Status");
            println!("|- Number of jail:\t{}", jails.len());
            println!("`- Jail list:\t{}", jails.join(", "));
        }
        Reply::JailStatus(s) => {
            println!("Status for the jail: {}", s.jail);
            println!("|- Filter");
            println!("|  |- Currently failed:\t{}", s.currently_failed);
            println!("|  `- Total failed:\t{}", s.total_failed);
            println!("`- Actions");
            println!("   |- Currently banned:\t{}", s.currently_banned);
            println!("   |- Total banned:\t{}", s.total_banned);
            println!("   `- Banned IP list:\t{}", s.banned.join(" "));
        }
        Reply::Banned { bans } => {
            println!(
                "{:<16} {:<40} {:<21} {:<21} BANS",
                "JAIL", "ADDRESS", "BANNED AT", "EXPIRES AT"
            );
            for b in bans {
                let expires = b.expires_at.unwrap_or_else(|| "permanent".into());
                println!(
                    "{:<16} {:<40} {:<21} {:<21} {}",
                    b.jail, b.ip, b.banned_at, expires, b.ban_count
                );
            }
        }
        Reply::Done { message } => println!("{message}"),
        Reply::Applied(summary) => println!("{}", serde_json::to_string(&summary)?),
        Reply::Why { jails } => print!("{}", explain::show_why(&asked, &jails)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tail`: prints the daemon's event stream, text or JSON lines, until interrupted.
fn tail(config_path: &Path, jail: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let socket = control_socket(config_path)?;
    let mut out = std::io::stdout().lock();
    let printed = explain::tail(&socket, jail, |event| {
        let line = if json {
            serde_json::to_string(event).unwrap_or_default()
        } else {
            event.show()
        };
        // A closed stdout (`| head`) ends the stream.
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    });
    match printed {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("jailsink: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What `--fleet` asks Redis.
enum FleetQuery {
    Status,
    Banned(Option<String>),
}

/// `status --fleet` and `banned --fleet`: straight from Redis with this host's `[fleet]`.
fn fleet_command(config_path: &Path, query: FleetQuery, json: bool) -> anyhow::Result<ExitCode> {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(errors) => return Ok(config_errors(&errors)),
    };
    let Some(fleet) = config.fleet else {
        eprintln!("jailsink: {} has no [fleet] section", config_path.display());
        return Ok(ExitCode::FAILURE);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match query {
        FleetQuery::Status => {
            let status = runtime.block_on(jailsink::fleet::cli::status(&fleet))?;
            if json {
                println!("{}", serde_json::to_value(&status)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("Fleet node {} ({})", status.node, status.role);
            println!(
                "|- Redis:\t{} ({})",
                status.redis,
                if status.connected {
                    "connected"
                } else {
                    "NOT CONNECTED"
                }
            );
            println!("|- Events in stream:\t{}", status.events);
            println!("|- Active bans:\t{}", status.active_bans);
            println!("`- Nodes:");
            println!(
                "   {:<24} {:<6} {:<21} {:>8} {:>10} {:>7}",
                "NODE", "ROLE", "LAST SEEN", "LAG MS", "APPLIED", "OUTBOX"
            );
            for n in &status.nodes {
                println!(
                    "   {:<24} {:<6} {:<21} {:>8} {:>10} {:>7}{}",
                    n.beat.node,
                    n.beat.role,
                    n.last_seen_at,
                    n.beat.stats.lag_ms,
                    n.beat.stats.bans_applied,
                    n.beat.stats.outbox,
                    if n.stale { "  (stale)" } else { "" }
                );
            }
            Ok(if status.connected {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FleetQuery::Banned(jail) => {
            let mut bans = runtime.block_on(jailsink::fleet::cli::banned(&fleet))?;
            bans.retain(|b| jail.as_deref().is_none_or(|j| j == b.jail));
            if json {
                println!("{}", serde_json::to_value(&bans)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<16} {:<40} {:<21} {:<21} {:<5} {:<16} HOSTS",
                "JAIL", "ADDRESS", "BANNED AT", "EXPIRES AT", "BANS", "ORIGIN"
            );
            for b in bans {
                let expires = b.expires_at.unwrap_or_else(|| "permanent".into());
                println!(
                    "{:<16} {:<40} {:<21} {:<21} {:<5} {:<16} {}",
                    b.jail,
                    b.ip,
                    b.banned_at,
                    expires,
                    b.ban_count,
                    b.origin,
                    jailsink::evidence::tail::printable(&b.hosts.join(","))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_errors(errors: &config::ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("{e}");
    }
    ExitCode::from(EX_CONFIG)
}

fn print_jails(config: &config::Config) {
    println!(
        "{}: OK, {} jail(s)",
        config.path.display(),
        config.jails.len()
    );
    for j in &config.jails {
        let s = &j.settings;
        let bantime = s.bantime.map_or("permanent".to_string(), |d| {
            humantime::format_duration(d).to_string()
        });
        let programs = if j.programs.is_empty() {
            "*".to_string()
        } else {
            j.programs.join(",")
        };
        let actions: Vec<_> = j.actions.iter().map(|a| a.kind().name()).collect();
        println!(
            "  {}: programs={programs} filter={} failregex={} maxretry={} findtime={} bantime={bantime} actions={}",
            j.name,
            j.filter_origin,
            j.filter.failregex_count(),
            s.maxretry,
            humantime::format_duration(s.findtime),
            actions.join(",")
        );
    }
}

fn run_daemon(config: config::Config, options: app::RunOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(watch_signals(shutdown.clone(), reload_tx));
        app::run(config, options, shutdown, reload_rx)
            .await
            .map_err(anyhow::Error::from)
    });
    // app::run has waited for every task within its grace; a thread still running after it
    // (a blocking task that missed the stop) must not keep the process alive, as dropping
    // the runtime would, waiting for it without end.
    runtime.shutdown_timeout(RUNTIME_STOP_GRACE);
    result
}

/// How long the runtime waits for stragglers after the daemon has stopped.
const RUNTIME_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads it.
async fn watch_signals(shutdown: CancellationToken, reload: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let _ = reload.try_send(());
            }
        }
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ArgAction;

    /// Every argument, possible value and subcommand below `cmd` that has no help text.
    fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            // clap's own --help and --version bring their text with them.
            if matches!(
                arg.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            ) {
                continue;
            }
            let name = format!("{path} {}", arg.get_id());
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(name.clone());
            }
            for value in arg.get_possible_values() {
                if value.get_help().is_none() {
                    missing.push(format!("{name}={}", value.get_name()));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(name.clone());
            }
            missing_help(sub, &name, missing);
        }
    }

    #[test]
    fn every_subcommand_argument_and_flag_has_help() {
        let mut cmd = Cli::command();
        // Building propagates global arguments into every subcommand, as users see them.
        cmd.build();
        let mut missing = Vec::new();
        missing_help(&cmd, "jailsink", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_help_walk_finds_an_argument_without_help() {
        let cmd = clap::Command::new("t")
            .about("a tool")
            .subcommand(clap::Command::new("sub").arg(clap::Arg::new("undocumented")));
        let mut missing = Vec::new();
        missing_help(&cmd, "t", &mut missing);
        assert_eq!(missing, ["t sub", "t sub undocumented"]);
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        write_manpages(dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("jailsink-{}.1", s.get_name()))
            .collect();
        want.push("jailsink.1".into());
        want.sort();
        assert_eq!(names, want);
        let status = std::fs::read_to_string(dir.path().join("jailsink-status.1")).unwrap();
        assert!(status.contains("The jail to show"), "{status}");
        let main = std::fs::read_to_string(dir.path().join("jailsink.1")).unwrap();
        assert!(main.contains("jailsink\\-status(1)"), "{main}");
        assert!(
            !main.contains("manpage"),
            "the hidden subcommand is documented: {main}"
        );
    }
}
