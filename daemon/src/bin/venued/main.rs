//! `venued`: the venue edge appliance daemon.
//!
//! This file owns the process: command line, configuration loading, logging setup, resource
//! limits, signals, systemd notifications and exit codes. Everything else is in the library.

mod logging;
mod systemd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use venued::config::{self, Config, ENV_PREFIX};
use venued::server::Daemon;

/// mimalloc instead of glibc's malloc. The store's writer frees each group's ops together once
/// the committed-op stream is done with them, often on another thread than the one that made
/// them; glibc's arenas spend measurably longer on that (consolidating and unlinking chunks)
/// than mimalloc's per-thread free lists (BENCHMARKS.md, "Store"). The store bench uses the
/// same allocator so that it measures what runs here. It is built without transparent huge
/// pages (`no_thp` in Cargo.toml): on an appliance counted in megabytes, a 2 MiB page resident
/// for a few bytes of it is a poor trade.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits' EX_CONFIG: the configuration is wrong. The unit file tells systemd not to restart
/// on it (`RestartPreventExitStatus=78`), since a restart cannot fix a bad file.
const EX_CONFIG: u8 = 78;

/// The venue edge appliance daemon: local check-ins, presence, messaging and sync.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Configuration file (TOML). Default: $CONFIGURATION_DIRECTORY/venued.toml or
    /// /etc/venued/venued.toml if present, else the embedded defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`). Default: $STATE_DIRECTORY, else ./venued-data.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seed a sample event and a demo kiosk (prints its password). Off unless given.
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration and print the effective settings; exit 78 if it is invalid.
    CheckConfig,
    /// Mint an attendee token with this appliance's signing key (made at first start), e.g. to
    /// open the WebSocket: `ws://host:8080/ws?token=…`.
    Token {
        /// The attendee id (the token's `sub`).
        #[arg(long)]
        attendee: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 43_200)]
        ttl: u64,
        /// Roles: attendee, staff, speaker (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_value = "attendee")]
        role: Vec<String>,
    },
    /// Restore the database from its replica into a new file (the bucket of `[replica]`, or
    /// `--from`), also from replicas written by Litestream itself.
    Restore {
        /// The database file to create; it must not exist.
        #[arg(long)]
        to: std::path::PathBuf,
        /// Restore as of this TXID (16 hex digits, as in the replica's file names).
        #[arg(long, conflicts_with = "timestamp")]
        txid: Option<String>,
        /// Restore as of the last file written at or before this time (RFC 3339).
        #[arg(long)]
        timestamp: Option<String>,
        /// `s3://BUCKET/PATH?endpoint=…&region=…` or `file:///DIR` instead of `[replica]`.
        #[arg(long)]
        from: Option<String>,
    },
    /// Print the ports venued serves to other hosts with this configuration, one per line as
    /// `tcp 8080 http` (listeners on loopback are left out): what a firewall must open. The
    /// appliance image derives its nftables rules from it at every boot.
    Ports,
    /// Check an appliance provisioning file (`venue-edge.toml`: a venued.toml with an
    /// `[appliance]` table) and, with `--into`, write the files the image's first-boot service
    /// installs. Every problem is printed; exit 78 if there is any.
    Provision {
        /// The provisioning file.
        file: PathBuf,
        /// Where to write venued.toml, hostname, network, authorized_keys and summary.txt.
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
    },
}

/// `venued provision`: validates the file, prints what it would apply (or every problem), and
/// writes the split files with `--into`.
fn provision(file: &std::path::Path, into: Option<&std::path::Path>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            say(format_args!(
                "venued: cannot read the provisioning file {}: {e}",
                file.display()
            ));
            return ExitCode::from(EX_CONFIG);
        }
    };
    let provisioning = match venued::provision::check(&text, &file.display().to_string()) {
        Ok(p) => p,
        Err(errors) => {
            say(format_args!("venued: {errors}"));
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(dir) = into {
        if let Err(e) = provisioning.write_into(dir) {
            say(format_args!(
                "venued: cannot write the provisioned files into {}: {e}",
                dir.display()
            ));
            return ExitCode::FAILURE;
        }
    }
    say(format_args!("{} is valid", file.display()));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the installed configuration is loaded: provisioning is how a broken one is replaced.
    if let Some(Command::Provision { file, into }) = &cli.command {
        return provision(file, into.as_deref());
    }
    // The library reads no environment itself: it gets the `VENUED_*` overrides and systemd's
    // directories from here. (A variable that is not UTF-8 cannot be one of ours.)
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) || k == "STATE_DIRECTORY" || k == "CONFIGURATION_DIRECTORY"
        })
        .collect();
    let path = cli
        .config
        .clone()
        .or_else(|| config::default_config_path(&env));
    let config = match config::load(path.as_deref(), &env, cli.data_dir.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            say(format_args!("venued: {errors}"));
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            print_config(&config, path.as_deref());
            return ExitCode::SUCCESS;
        }
        Some(Command::Token {
            attendee,
            ttl,
            role,
        }) => return mint_token(&config, &attendee, ttl, role),
        Some(Command::Ports) => {
            print_ports(&config);
            return ExitCode::SUCCESS;
        }
        Some(Command::Provision { .. }) => return ExitCode::SUCCESS,
        Some(Command::Restore {
            to,
            txid,
            timestamp,
            from,
        }) => return restore(&config, &to, txid, timestamp, from),
        None => {}
    }
    logging::init(&config.log);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("venued-worker")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("venued: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.demo)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            say(format_args!("venued: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `venued restore`: prints what was restored as JSON, or why not (exit 1).
fn restore(
    config: &Config,
    to: &std::path::Path,
    txid: Option<String>,
    timestamp: Option<String>,
    from: Option<String>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("venued: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let target = match venued::replica::parse_target(txid.as_deref(), timestamp.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("venued: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(venued::replica::restore(
        &config.replica,
        from.as_deref(),
        target,
        to,
    )) {
        Ok(restored) => {
            #[allow(clippy::print_stdout, reason = "the summary is the command's output")]
            {
                println!("{}", serde_json::to_string(&restored).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("venued: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `venued token`: prints a token on stdout, or why not on stderr (exit 1).
fn mint_token(config: &Config, attendee: &str, ttl: u64, roles: Vec<String>) -> ExitCode {
    use venued::auth::tokens::{ROLES, Signer};
    if let Err(e) = venued::domain::entities::validate_id(attendee) {
        eprintln!("venued: --attendee: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(bad) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
        eprintln!("venued: unknown role `{bad}`; use attendee, staff or speaker");
        return ExitCode::FAILURE;
    }
    let minted = Signer::from_data_dir(&config.data_dir)
        .map_err(|e| e.to_string())
        .and_then(|signer| {
            signer
                .mint(
                    attendee,
                    &config.event.id,
                    roles,
                    ttl.clamp(60, 7 * 24 * 3600),
                )
                .map_err(|e| e.to_string())
        });
    match minted {
        Ok(token) => {
            #[allow(clippy::print_stdout, reason = "the token is the command's output")]
            {
                println!("{token}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("venued: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, demo: bool) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    // What the appliance image says about this system (its release, the slot, a refused
    // provisioning file): variables its unit sets, read here like every other environment.
    let system = venued::appliance::SystemInfo::from_vars(|name| std::env::var(name).ok());
    let daemon = Daemon::start(config, demo, system).await?;
    let addr = daemon.local_addr();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = daemon.node_id(),
        data_dir = %data_dir.display(),
        "venued listening on http://{addr}"
    );
    if let Some(path) = daemon.admin_token_written() {
        tracing::info!(path = %path.display(), "generated the admin token (mode 0600); send it as `Authorization: Bearer <token>`");
    }
    if let Some(info) = daemon.demo() {
        // Shown on stderr on purpose: it is what a newcomer trying `--demo` needs to see.
        say(format_args!(
            "venued demo mode: kiosk `{}` password `{}` (valid until the next start)",
            info.kiosk_id, info.kiosk_password
        ));
    }
    let status = format!("serving on http://{addr}");
    systemd::notify(&[NotifyState::Status(&status), NotifyState::Ready]);

    let watchdog = systemd::watchdog_interval().map(|interval| {
        tracing::info!(?interval, "systemd watchdog enabled");
        tokio::spawn(systemd::watchdog(daemon.store(), interval))
    });
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    daemon
        .serve(shutdown, move || {
            systemd::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
            if let Some(w) = watchdog {
                w.abort();
            }
        })
        .await
        .context("HTTP server failed")?;
    tracing::info!("venued stopped");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; a second one ends the process at once.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; a second signal stops at once"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            say(format_args!(
                "venued: second signal, stopping now (committed writes are safe)"
            ));
            std::process::exit(130);
        });
    })
}

/// Raises the soft open-file limit to the hard one: every phone, kiosk and MQTT client is a
/// socket, and the usual soft default of 1024 is far too low for a hall.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(error = %e, soft, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[allow(clippy::print_stdout)] // `venued ports` is read by the image's provisioning script.
fn print_ports(config: &Config) {
    for p in config.served_ports() {
        println!("{} {} {}", p.protocol, p.port, p.what);
    }
}

#[allow(clippy::print_stdout)] // check-config's output is for the operator's terminal.
fn print_config(config: &Config, path: Option<&std::path::Path>) {
    let source = path.map_or("embedded defaults".to_string(), |p| p.display().to_string());
    println!("configuration OK ({source})");
    println!("{}", config.effective());
}

/// A line on stderr for the operator. Unlike `eprintln!`, a stderr that cannot be written (a
/// log file on a full disk) loses the line instead of panicking the daemon: the soak caught a
/// restart on a full disk dying this way before READY=1, and once more with exit status 101
/// where a failed start's reason was written with `eprintln!`.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
