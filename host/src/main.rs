//! The `keel` command: `keel serve` runs the platform; `keel plugin ...` manages plugins on a
//! running server over its admin API.

mod cli;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cli::events::EventCommand;
use cli::jobs::JobCommand;
use cli::keys::KeyCommand;
use cli::plugins::PluginCommand;
use cli::schedules::ScheduleCommand;
use cli::tasks::TaskCommand;
use cli::tenants::TenantCommand;
use cli::tokens::TokenCommand;
use cli::users::UserCommand;
use keel_host::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: back-office departments as sandboxed WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform.
    Serve(ServeArgs),
    /// Manage plugins on a running server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Serve the plugin in this directory on a local host, rebuilding and reloading it
    /// whenever its sources change.
    Dev {
        /// The plugin's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Signing keys: make one (publishers), trust or distrust one (platform admins).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage tenants (platform admin).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage a tenant's users.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect, retry and cancel a tenant's background jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Follow and cancel a tenant's tasks (long work plugins do in chunks).
    #[command(subcommand)]
    Task(TaskCommand),
    /// List a tenant's schedules or run one now.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Read a tenant's event log or replay part of it.
    #[command(subcommand)]
    Event(EventCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    /// Where the database and compiled components live [default: .keel]
    #[arg(long, env = "KEEL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "KEEL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of plugin artifacts (*.wasm) to install at start.
    #[arg(long, env = "KEEL_PLUGINS_DIR")]
    plugins_dir: Option<PathBuf>,
    /// Database: sqlite://<path> or postgres://... [default: sqlite://<data-dir>/keel.db]
    #[arg(long, env = "KEEL_DATABASE_URL")]
    database_url: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "KEEL_LOG_JSON")]
    log_json: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Plugin(command) => cli::plugins::run(command).await,
            Command::Dev { dir, listen } => {
                init_tracing(false);
                let options =
                    keel_host::devkit::DevOptions { dir, listen, poll: std::time::Duration::from_millis(250) };
                Ok(keel_host::devkit::dev(options).await?)
            }
            Command::Key(command) => cli::keys::run(command).await,
            Command::Tenant(command) => cli::tenants::run(command).await,
            Command::Token(command) => cli::tokens::run(command).await,
            Command::User(command) => cli::users::run(command).await,
            Command::Job(command) => cli::jobs::run(command).await,
            Command::Task(command) => cli::tasks::run(command).await,
            Command::Schedule(command) => cli::schedules::run(command).await,
            Command::Event(command) => cli::events::run(command).await,
        }
    })
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_json);
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = args.database_url {
        config.database.url = Some(url);
    }
    if let Some(dir) = args.plugins_dir {
        config.plugins_dir = Some(dir);
    }
    let server = Server::start(config).await.context("keel could not start")?;
    println!("Keel is listening on http://{}", server.addr);
    match &server.bootstrap_token {
        Some(token) => {
            println!("Admin token (shown once; it is stored only as a hash):");
            println!("    {token}");
            println!("Try: curl -H 'Authorization: Bearer {token}' http://{}/v1/admin/plugins", server.addr);
        }
        None => println!("Use the admin token printed at first start (KEEL_TOKEN for the CLI)."),
    }
    server.run_until_signal().await;
    Ok(())
}
