//! `venue-relay`: serve the relay, and manage its appliances, operators and token keys.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud_relay::auth;
use cloud_relay::metrics::Metrics;
use cloud_relay::store::postgres::PgStore;
use cloud_relay::store::sqlite::SqliteStore;
use cloud_relay::store::{Appliance, NewAppliance, RelayStore};
use sync_agent::wire::{TokenKey, is_id};

/// The cloud relay that venue appliances sync through.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Where the relay keeps its log: `sqlite:PATH` (one instance) or `postgres://user:pass@host/db`
    /// (several instances).
    #[arg(
        long,
        global = true,
        env = "VENUE_RELAY_DATABASE",
        default_value = "sqlite:relay.db"
    )]
    database: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sync and operator APIs.
    Serve {
        /// Address and port to listen on.
        #[arg(long, env = "VENUE_RELAY_LISTEN", default_value = "0.0.0.0:8090")]
        listen: SocketAddr,
        /// Log lines as JSON objects (for a log pipeline) instead of text.
        #[arg(long, env = "VENUE_RELAY_LOG_JSON")]
        log_json: bool,
        /// PostgreSQL connections per instance.
        #[arg(long, default_value_t = 16)]
        pool_size: usize,
    },
    /// Manage appliances.
    #[command(subcommand)]
    Appliance(ApplianceCommand),
    /// Manage operator tokens.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Manage attendee-token verification keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum ApplianceCommand {
    /// Add an appliance and print its token (shown only this once).
    Add {
        /// The organisation it belongs to.
        #[arg(long)]
        org: String,
        /// An event it may sync; repeat for several.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// A name for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// Print `{"id", "token"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List appliances.
    List {
        /// Only this org's.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke an appliance's token.
    Revoke {
        /// The appliance id (`ap-…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Add an operator token and print it (shown only this once).
    Add {
        /// Limit it to one org; without, it sees every org.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add (or replace) a public key attendee tokens of an event are verified with.
    Add {
        /// The event.
        #[arg(long)]
        event: String,
        /// The key id (`kid`).
        #[arg(long)]
        kid: String,
        /// `EdDSA` or `ES256`.
        #[arg(long)]
        alg: String,
        /// The public key, a PEM file.
        #[arg(long)]
        public_key: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Serve { log_json, .. } = &cli.command {
        init_logging(*log_json);
    }
    let pool_size = match &cli.command {
        Command::Serve { pool_size, .. } => *pool_size,
        _ => 2,
    };
    if let Some(path) = cli.database.strip_prefix("sqlite:") {
        let store = SqliteStore::open(std::path::Path::new(path))
            .with_context(|| format!("cannot open the SQLite database `{path}`"))?;
        command(cli.command, store).await
    } else if cli.database.starts_with("postgres://") || cli.database.starts_with("postgresql://") {
        let store = PgStore::connect(&cli.database, pool_size)
            .await
            .context("cannot open the PostgreSQL database")?;
        command(cli.command, store).await
    } else {
        anyhow::bail!(
            "--database `{}` is neither `sqlite:PATH` nor `postgres://user:pass@host/db`",
            cli.database
        )
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn command<S: RelayStore>(command: Command, store: S) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen, .. } => serve(listen, store).await,
        Command::Appliance(ApplianceCommand::Add {
            org,
            events,
            name,
            json,
        }) => {
            if !is_id(&org) {
                anyhow::bail!("--org `{org}` must be 1-64 letters, digits, `-`, `_` or `.`");
            }
            if let Some(bad) = events.iter().find(|e| !is_id(e)) {
                anyhow::bail!("--event `{bad}` must be 1-64 letters, digits, `-`, `_` or `.`");
            }
            let (token, token_hash) = auth::new_token();
            let id = auth::new_appliance_id();
            store
                .add_appliance(NewAppliance {
                    appliance: Appliance {
                        id: id.clone(),
                        org,
                        events,
                        name,
                        node: None,
                    },
                    token_hash,
                })
                .await?;
            print(&match json {
                true => serde_json::json!({"id": id, "token": token}).to_string(),
                false => format!(
                    "appliance {id} added.\ntoken (shown only now; put it in the appliance's [sync] token):\n{token}"
                ),
            });
            Ok(())
        }
        Command::Appliance(ApplianceCommand::List { org }) => {
            let items = store.list_appliances(org).await?;
            print(&serde_json::to_string_pretty(&items)?);
            Ok(())
        }
        Command::Appliance(ApplianceCommand::Revoke { id }) => {
            match store.revoke_appliance(id.clone(), None).await? {
                true => {
                    print(&format!("appliance {id} revoked"));
                    Ok(())
                }
                false => {
                    anyhow::bail!("no appliance `{id}`; `venue-relay appliance list` shows them")
                }
            }
        }
        Command::Operator(OperatorCommand::Add { org }) => {
            let (token, hash) = auth::new_token();
            store.add_operator(org, hash).await?;
            print(&token);
            Ok(())
        }
        Command::Key(KeyCommand::Add {
            event,
            kid,
            alg,
            public_key,
        }) => {
            if alg != "EdDSA" && alg != "ES256" {
                anyhow::bail!("--alg `{alg}`: use EdDSA or ES256");
            }
            let public_pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("cannot read {}", public_key.display()))?;
            if !public_pem.contains("-----BEGIN PUBLIC KEY-----") {
                anyhow::bail!("{} is not a PEM public key", public_key.display());
            }
            store
                .add_key(TokenKey {
                    event,
                    kid,
                    alg,
                    public_pem,
                })
                .await?;
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)] // The CLI's answer goes to stdout; logs go to stderr.
fn print(text: &str) {
    println!("{text}");
}

async fn serve<S: RelayStore>(listen: SocketAddr, store: S) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let app = cloud_relay::api::router(store, metrics)
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, version = env!("CARGO_PKG_VERSION"), "venue-relay listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}
