//! The `keel` command: `keel serve` runs the platform; `keel plugin ...` manages plugins on a
//! running server over its admin API.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
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

#[derive(Subcommand)]
enum JobCommand {
    /// List jobs, newest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        plugin: Option<String>,
        /// queued, running, done, dead or cancelled
        #[arg(long)]
        status: Option<String>,
        /// job, schedule or event
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a job and every attempt as JSON.
    Show {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put a dead or cancelled job back in the queue.
    Retry {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job waiting to run.
    Cancel {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// List tasks with their progress, newest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        plugin: Option<String>,
        /// running, done, cancelled or failed
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a task as JSON.
    Show {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a task with a progress bar until it ends; exits non-zero unless it finishes.
    Watch {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Seconds between looks.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a task: no further chunk runs.
    Cancel {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// List schedules with their next and last run.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a plugin's schedule now.
    Run {
        plugin: String,
        name: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum EventCommand {
    /// List events, oldest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        topic: Option<String>,
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deliver events FROM..=TO (positions) again to one subscriber.
    Replay {
        subscriber: String,
        #[arg(long)]
        from: i64,
        #[arg(long)]
        to: i64,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input (first line).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: String,
        /// tenant-admin, member, or a tenant-defined role
        #[arg(long, default_value = "member")]
        role: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A tenant's storage quotas with what it stores now, and its share of plugin instances.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Quotas and usage, per plugin.
    Show {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the tenant's own quotas (platform admins).
    Set {
        tenant: String,
        /// Documents the tenant may store over all its plugins.
        #[arg(long)]
        documents: u64,
        /// MiB the tenant may store over all its plugins.
        #[arg(long)]
        mb: u64,
        /// Documents one plugin may store in the tenant.
        #[arg(long)]
        plugin_documents: u64,
        /// MiB one plugin may store in the tenant.
        #[arg(long)]
        plugin_mb: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give the tenant the platform's default quotas again (platform admins).
    Reset {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token in a tenant; prints it once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// tenant-admin or member
        #[arg(long, default_value = "member")]
        role: String,
        /// Lifetime in seconds (default: until revoked).
        #[arg(long)]
        ttl_seconds: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long)]
        tenant: String,
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
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
    /// Log as JSON lines instead of text.
    #[arg(long, env = "KEEL_LOG_JSON")]
    log_json: bool,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Base URL of the server.
    #[arg(long, env = "KEEL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// A platform-admin token.
    #[arg(long, env = "KEEL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin project that builds and passes its tests as written.
    New {
        name: String,
        /// Where to create it [default: the current directory]
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The keel-sdk crate to depend on [default: the sdk/ of the Keel source this keel was built from]
        #[arg(long, env = "KEEL_SDK_PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin in the current directory for wasm32-wasip2, check it exactly as the
    /// server will at upload, and write the artifact to install.
    Build {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Upload and install a plugin artifact.
    Install {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List installed plugins.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one plugin as JSON.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Serve a plugin's routes again.
    Enable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop serving a plugin's routes (data is kept).
    Disable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a plugin.
    Uninstall {
        id: String,
        /// Also delete all its stored data, in every tenant.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A plugin's settings in a tenant (tenant admins).
    #[command(subcommand)]
    Settings(SettingsCommand),
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// The settings the plugin declares, with the tenant's values (secrets: only whether set).
    Show {
        plugin: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set settings: `name=value ...`, each value read as the setting's type.
    Set {
        plugin: String,
        /// `name=value` pairs.
        values: Vec<String>,
        /// A secret setting whose value is read from standard input (kept out of the shell's
        /// history and the process list).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give settings their defaults again.
    Reset {
        plugin: String,
        names: Vec<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Plugin(command) => plugin(command).await,
            Command::Dev { dir, listen } => {
                init_tracing(false);
                let options =
                    keel_host::devkit::DevOptions { dir, listen, poll: std::time::Duration::from_millis(250) };
                Ok(keel_host::devkit::dev(options).await?)
            }
            Command::Tenant(command) => tenant(command).await,
            Command::Token(command) => token(command).await,
            Command::User(command) => user(command).await,
            Command::Job(command) => job(command).await,
            Command::Task(command) => task(command).await,
            Command::Schedule(command) => schedule(command).await,
            Command::Event(command) => event(command).await,
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

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: ClientArgs) -> Result<Client> {
        let Some(token) = args.token else { bail!("no token: pass --token or set KEEL_TOKEN") };
        Ok(Client { http: reqwest::Client::new(), base: args.server.trim_end_matches('/').to_owned(), token })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
        let response =
            request.bearer_auth(&self.token).send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: serde_json::Value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        if !status.is_success() {
            let code = body.get("code").and_then(|c| c.as_str()).unwrap_or("error");
            let detail = body.get("detail").and_then(|c| c.as_str()).unwrap_or("");
            bail!("{status} {code}: {detail}");
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn query_string(pairs: &[(&str, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Milliseconds since the epoch as UTC text, for tables.
fn when(ms: &serde_json::Value) -> String {
    ms.as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".to_owned(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
}

async fn job(command: JobCommand) -> Result<()> {
    match command {
        JobCommand::List { tenant, plugin, status, kind, limit, client } => {
            let c = Client::new(client)?;
            let mut query = vec![("limit", limit.to_string())];
            query.extend(plugin.map(|v| ("plugin", v)));
            query.extend(status.map(|v| ("status", v)));
            query.extend(kind.map(|v| ("kind", v)));
            let body = c
                .send(c.http.get(c.url(&format!("/v1/tenants/{}/jobs?{}", segment(&tenant)?, query_string(&query)))))
                .await?;
            println!(
                "{:<28} {:<12} {:<9} {:<24} {:<10} {:<8} {:<19} LAST ERROR",
                "ID", "PLUGIN", "KIND", "NAME", "STATUS", "TRIES", "RUN AT (UTC)"
            );
            for j in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<28} {:<12} {:<9} {:<24} {:<10} {:<8} {:<19} {}",
                    j["id"].as_str().unwrap_or("?"),
                    j["plugin"].as_str().unwrap_or("?"),
                    j["kind"].as_str().unwrap_or("?"),
                    j["name"].as_str().unwrap_or("?"),
                    j["status"].as_str().unwrap_or("?"),
                    format!("{}/{}", j["attempts"], j["max_attempts"]),
                    when(&j["run_at"]),
                    j["last_error"].as_str().unwrap_or("")
                );
            }
        }
        JobCommand::Show { id, tenant, client } => {
            let c = Client::new(client)?;
            let body =
                c.send(c.http.get(c.url(&format!("/v1/tenants/{}/jobs/{}", segment(&tenant)?, segment(&id)?)))).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        JobCommand::Retry { id, tenant, client } => {
            let c = Client::new(client)?;
            c.send(c.http.post(c.url(&format!("/v1/tenants/{}/jobs/{}/retry", segment(&tenant)?, segment(&id)?))))
                .await?;
            println!("queued {id} again");
        }
        JobCommand::Cancel { id, tenant, client } => {
            let c = Client::new(client)?;
            c.send(c.http.post(c.url(&format!("/v1/tenants/{}/jobs/{}/cancel", segment(&tenant)?, segment(&id)?))))
                .await?;
            println!("cancelled {id}");
        }
    }
    Ok(())
}

/// One line of progress: `[#########...........] 45% 45,000 / 100,000 units, 12 chunks`.
fn progress_line(task: &serde_json::Value) -> String {
    let done = task["done"].as_u64().unwrap_or(0);
    let chunks = task["chunks"].as_u64().unwrap_or(0);
    let status = task["status"].as_str().unwrap_or("?");
    match task["total"].as_u64() {
        Some(total) if total > 0 => {
            let ratio = (done as f64 / total as f64).min(1.0);
            let filled = (ratio * 30.0).round() as usize;
            format!(
                "[{}{}] {:>3.0}% {} / {} units, {chunks} chunks, {status}",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                ratio * 100.0,
                grouped(done),
                grouped(total)
            )
        }
        _ => format!("{} units, {chunks} chunks, {status}", grouped(done)),
    }
}

/// 100000 as "100,000".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn task(command: TaskCommand) -> Result<()> {
    match command {
        TaskCommand::List { tenant, plugin, status, limit, client } => {
            let c = Client::new(client)?;
            let mut query = vec![("limit", limit.to_string())];
            query.extend(plugin.map(|v| ("plugin", v)));
            query.extend(status.map(|v| ("status", v)));
            let body = c
                .send(c.http.get(c.url(&format!("/v1/tenants/{}/tasks?{}", segment(&tenant)?, query_string(&query)))))
                .await?;
            println!("{:<30} {:<12} {:<32} PROGRESS", "ID", "PLUGIN", "TITLE");
            for t in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<30} {:<12} {:<32} {}",
                    t["id"].as_str().unwrap_or(""),
                    t["plugin"].as_str().unwrap_or(""),
                    t["title"].as_str().unwrap_or("").chars().take(32).collect::<String>(),
                    progress_line(t)
                );
            }
        }
        TaskCommand::Show { id, tenant, client } => {
            let c = Client::new(client)?;
            let body = c
                .send(c.http.get(c.url(&format!("/v1/tenants/{}/tasks/{}", segment(&tenant)?, segment(&id)?))))
                .await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        TaskCommand::Watch { id, tenant, every, client } => {
            use std::io::Write as _;
            let c = Client::new(client)?;
            let url = c.url(&format!("/v1/tenants/{}/tasks/{}", segment(&tenant)?, segment(&id)?));
            let every = std::time::Duration::from_secs_f64(every.clamp(0.05, 60.0));
            loop {
                let body = c.send(c.http.get(&url)).await?;
                print!("\r{}\x1b[K", progress_line(&body));
                std::io::stdout().flush()?;
                match body["status"].as_str() {
                    Some("running") => tokio::time::sleep(every).await,
                    Some("done") => {
                        println!();
                        return Ok(());
                    }
                    other => {
                        println!();
                        let error = body["last_error"].as_str().unwrap_or("");
                        bail!(
                            "task {id} is {}{}",
                            other.unwrap_or("?"),
                            if error.is_empty() { String::new() } else { format!(": {error}") }
                        );
                    }
                }
            }
        }
        TaskCommand::Cancel { id, tenant, client } => {
            let c = Client::new(client)?;
            let body = c
                .send(c.http.post(c.url(&format!("/v1/tenants/{}/tasks/{}/cancel", segment(&tenant)?, segment(&id)?))))
                .await?;
            println!("cancelled {id}: {}", progress_line(&body));
        }
    }
    Ok(())
}

async fn settings(command: SettingsCommand) -> Result<()> {
    let path = |tenant: &str, plugin: &str| -> Result<String> {
        Ok(format!("/v1/tenants/{}/plugins/{}/settings", segment(tenant)?, segment(plugin)?))
    };
    let body = match command {
        SettingsCommand::Show { plugin, tenant, client } => {
            let c = Client::new(client)?;
            c.send(c.http.get(c.url(&path(&tenant, &plugin)?))).await?
        }
        SettingsCommand::Set { plugin, values, secret, tenant, client } => {
            let c = Client::new(client)?;
            let url = c.url(&path(&tenant, &plugin)?);
            // Values are typed by the plugin's declarations: `42` stays text for a string.
            let declared = c.send(c.http.get(&url)).await?;
            let declaration =
                |name: &str| declared["items"].as_array().into_iter().flatten().find(|s| s["name"] == name).cloned();
            let type_of = |name: &str| declaration(name).map(|s| s["type"].clone());
            let mut change = serde_json::Map::new();
            for pair in values {
                let Some((name, text)) = pair.split_once('=') else { bail!("`{pair}` is not name=value") };
                // A secret on the command line would stay in the shell's history and show in
                // the process list.
                if declaration(name).is_some_and(|s| s["secret"] == true) {
                    bail!(
                        "setting `{name}` is secret: give it with `--secret {name}`, which reads it from standard input"
                    );
                }
                let value = match type_of(name).as_ref().and_then(|t| t.as_str()) {
                    Some("integer") => match text.parse::<i64>() {
                        Ok(n) => serde_json::Value::from(n),
                        Err(_) => bail!("setting `{name}` is an integer; `{text}` is not"),
                    },
                    Some("boolean") => match text {
                        "true" => serde_json::Value::Bool(true),
                        "false" => serde_json::Value::Bool(false),
                        _ => bail!("setting `{name}` is true or false; `{text}` is neither"),
                    },
                    // Strings, and names the server will refuse as unknown.
                    _ => serde_json::Value::String(text.to_owned()),
                };
                change.insert(name.to_owned(), value);
            }
            if let Some(name) = secret {
                let mut text = String::new();
                std::io::stdin().read_line(&mut text).context("reading the secret from standard input")?;
                change.insert(name, serde_json::Value::String(text.trim_end_matches(['\r', '\n']).to_owned()));
            }
            c.send(c.http.patch(&url).json(&serde_json::json!({ "values": change }))).await?
        }
        SettingsCommand::Reset { plugin, names, tenant, client } => {
            let c = Client::new(client)?;
            let change: serde_json::Map<String, serde_json::Value> =
                names.into_iter().map(|n| (n, serde_json::Value::Null)).collect();
            c.send(c.http.patch(c.url(&path(&tenant, &plugin)?)).json(&serde_json::json!({ "values": change }))).await?
        }
    };
    println!("{:<24} {:<8} {:<4} VALUE", "NAME", "TYPE", "SET");
    for s in body["items"].as_array().into_iter().flatten() {
        let value = if s["secret"] == true {
            if s["set"] == true { "(secret, set)".to_owned() } else { "(secret, not set)".to_owned() }
        } else {
            match &s["value"] {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => "(none)".to_owned(),
                other => other.to_string(),
            }
        };
        println!(
            "{:<24} {:<8} {:<4} {value}",
            s["name"].as_str().unwrap_or("?"),
            s["type"].as_str().unwrap_or("?"),
            if s["set"] == true { "yes" } else { "no" }
        );
    }
    Ok(())
}

async fn schedule(command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::List { tenant, client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.get(c.url(&format!("/v1/tenants/{}/schedules", segment(&tenant)?)))).await?;
            println!("{:<16} {:<20} {:<32} {:<19} LAST RUN (UTC)", "PLUGIN", "NAME", "SPEC", "NEXT RUN (UTC)");
            for s in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:<20} {:<32} {:<19} {}",
                    s["plugin"].as_str().unwrap_or("?"),
                    s["name"].as_str().unwrap_or("?"),
                    s["spec"].as_str().unwrap_or("?"),
                    when(&s["next_run_at"]),
                    when(&s["last_run_at"])
                );
            }
        }
        ScheduleCommand::Run { plugin, name, tenant, client } => {
            let c = Client::new(client)?;
            let body = c
                .send(c.http.post(c.url(&format!(
                    "/v1/tenants/{}/plugins/{}/schedules/{}/run",
                    segment(&tenant)?,
                    segment(&plugin)?,
                    segment(&name)?
                ))))
                .await?;
            println!("queued {}", body["job_id"].as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

async fn event(command: EventCommand) -> Result<()> {
    match command {
        EventCommand::List { tenant, topic, after, limit, client } => {
            let c = Client::new(client)?;
            let mut query = vec![("after", after.to_string()), ("limit", limit.to_string())];
            query.extend(topic.map(|v| ("topic", v)));
            let body = c
                .send(c.http.get(c.url(&format!("/v1/tenants/{}/events?{}", segment(&tenant)?, query_string(&query)))))
                .await?;
            println!("{:<8} {:<28} {:<36} {:<14} {:<19} PAYLOAD", "SEQ", "ID", "TOPIC", "SOURCE", "AT (UTC)");
            for e in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<28} {:<36} {:<14} {:<19} {}",
                    e["seq"],
                    e["id"].as_str().unwrap_or("?"),
                    e["topic"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    when(&e["published_at"]),
                    e["payload"].as_str().unwrap_or("")
                );
            }
        }
        EventCommand::Replay { subscriber, from, to, tenant, client } => {
            let c = Client::new(client)?;
            let body = c
                .send(c.http.post(c.url(&format!("/v1/tenants/{}/events/replay", segment(&tenant)?))).json(
                    &serde_json::json!({
                        "subscriber": subscriber, "from_seq": from, "to_seq": to
                    }),
                ))
                .await?;
            println!("queued {} deliveries to {subscriber}", body["queued"]);
        }
    }
    Ok(())
}

async fn tenant(command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Create { id, name, client } => {
            let c = Client::new(client)?;
            c.send(c.http.post(c.url("/v1/admin/tenants")).json(&serde_json::json!({ "id": id, "name": name })))
                .await?;
            println!("created tenant {id}");
        }
        TenantCommand::List { client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.get(c.url("/v1/admin/tenants"))).await?;
            println!("{:<24} {:<10} NAME", "ID", "STATUS");
            for t in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["status"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or("")
                );
            }
        }
        TenantCommand::Quota { command } => quota(command).await?,
    }
    Ok(())
}

async fn quota(command: QuotaCommand) -> Result<()> {
    let (tenant, body) = match command {
        QuotaCommand::Show { tenant, client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.get(c.url(&format!("/v1/tenants/{}/quotas", segment(&tenant)?)))).await?;
            (tenant, body)
        }
        QuotaCommand::Set { tenant, documents, mb, plugin_documents, plugin_mb, client } => {
            let c = Client::new(client)?;
            let quotas = serde_json::json!({
                "tenant_documents": documents,
                "tenant_bytes": mb.saturating_mul(1 << 20),
                "plugin_documents": plugin_documents,
                "plugin_bytes": plugin_mb.saturating_mul(1 << 20),
            });
            let body =
                c.send(c.http.put(c.url(&format!("/v1/tenants/{}/quotas", segment(&tenant)?))).json(&quotas)).await?;
            (tenant, body)
        }
        QuotaCommand::Reset { tenant, client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.delete(c.url(&format!("/v1/tenants/{}/quotas", segment(&tenant)?)))).await?;
            (tenant, body)
        }
    };
    let q = &body["quotas"];
    let mib = |v: &serde_json::Value| format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / f64::from(1 << 20));
    let int = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!("tenant {tenant}");
    println!("{:<12} {:>14} {:>14} {:>16} {:>16}", "", "DOCUMENTS", "QUOTA", "STORED", "QUOTA");
    println!(
        "{:<12} {:>14} {:>14} {:>16} {:>16}",
        "all plugins",
        int(&body["usage"]["documents"]),
        int(&q["tenant_documents"]),
        mib(&body["usage"]["bytes"]),
        mib(&q["tenant_bytes"])
    );
    for p in body["plugins"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:>14} {:>14} {:>16} {:>16}",
            p["plugin"].as_str().unwrap_or("?"),
            int(&p["documents"]),
            int(&q["plugin_documents"]),
            mib(&p["bytes"]),
            mib(&q["plugin_bytes"])
        );
    }
    let i = &body["instances"];
    println!(
        "instances {} of {} in use; memory reserved {} of {}",
        int(&i["in_use"]),
        int(&i["limit"]),
        mib(&i["memory_reserved_bytes"]),
        mib(&i["memory_limit_bytes"])
    );
    Ok(())
}

/// A path segment, percent-encoded (ids are validated by the server; this keeps a stray `/`
/// or `?` from changing which endpoint is called).
fn segment(s: &str) -> Result<String> {
    // URL parsers treat `.` and `..` (encoded or not) as dot segments and drop them: no id is
    // either, so refuse them here rather than call another endpoint.
    if s == "." || s == ".." || s.is_empty() {
        bail!("`{s}` is not an id");
    }
    // Everything but letters, digits, '-', '.', '_' and '~'; a space is %20 here, not `+` as
    // in a query string.
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    Ok(percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
}

async fn user(command: UserCommand) -> Result<()> {
    let UserCommand::Create { tenant, username, display_name, role, client } = command;
    let c = Client::new(client)?;
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let body = c
        .send(c.http.post(c.url(&format!("/v1/tenants/{}/users", segment(&tenant)?))).json(&serde_json::json!({
            "username": username, "display_name": display_name, "password": password, "role": role
        })))
        .await?;
    println!(
        "created user {} ({}) in {tenant}",
        body["username"].as_str().unwrap_or("?"),
        body["id"].as_str().unwrap_or("?")
    );
    Ok(())
}

async fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { tenant, name, role, ttl_seconds, client } => {
            let c = Client::new(client)?;
            let body = c
                .send(c.http.post(c.url(&format!("/v1/tenants/{}/tokens", segment(&tenant)?))).json(
                    &serde_json::json!({
                        "name": name, "role": role, "ttl_seconds": ttl_seconds
                    }),
                ))
                .await?;
            println!(
                "{} ({}, id {})",
                body["token"].as_str().unwrap_or("?"),
                body["role"].as_str().unwrap_or("?"),
                body["id"].as_str().unwrap_or("?")
            );
            eprintln!("This is the only time the token is shown.");
        }
        TokenCommand::Revoke { tenant, id, client } => {
            let c = Client::new(client)?;
            c.send(c.http.delete(c.url(&format!("/v1/tenants/{}/tokens/{}", segment(&tenant)?, segment(&id)?))))
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn plugin(command: PluginCommand) -> Result<()> {
    match command {
        PluginCommand::New { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk")));
            let created = keel_host::devkit::scaffold(&dir, &name, &sdk)?;
            println!("created {}", created.display());
            println!("next: cd {} && cargo test && keel plugin build", created.display());
        }
        PluginCommand::Build { dir } => {
            let artifact = tokio::task::spawn_blocking(move || keel_host::devkit::build(&dir)).await??;
            println!("{}", artifact.display());
        }
        PluginCommand::Install { file, client } => {
            let c = Client::new(client)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body = c
                .send(c.http.post(c.url("/v1/admin/plugins")).header("content-type", "application/wasm").body(bytes))
                .await?;
            let p = &body["plugin"];
            println!(
                "{} {} {} (digest {})",
                body["outcome"].as_str().unwrap_or("?"),
                p["id"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
                p["digest"].as_str().unwrap_or("?")
            );
        }
        PluginCommand::List { client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.get(c.url("/v1/admin/plugins"))).await?;
            println!("{:<20} {:<10} {:<8} {:<6} DIGEST", "ID", "VERSION", "ENABLED", "ROUTES");
            for p in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<10} {:<8} {:<6} {}",
                    p["id"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["enabled"].as_bool().unwrap_or(false),
                    p["manifest"]["routes"].as_array().map_or(0, Vec::len),
                    &p["digest"].as_str().unwrap_or("?")[..12.min(p["digest"].as_str().unwrap_or("?").len())]
                );
            }
        }
        PluginCommand::Show { id, client } => {
            let c = Client::new(client)?;
            let body = c.send(c.http.get(c.url(&format!("/v1/admin/plugins/{}", segment(&id)?)))).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        PluginCommand::Enable { id, client } => {
            let c = Client::new(client)?;
            c.send(c.http.post(c.url(&format!("/v1/admin/plugins/{}/enable", segment(&id)?)))).await?;
            println!("enabled {id}");
        }
        PluginCommand::Disable { id, client } => {
            let c = Client::new(client)?;
            c.send(c.http.post(c.url(&format!("/v1/admin/plugins/{}/disable", segment(&id)?)))).await?;
            println!("disabled {id}");
        }
        PluginCommand::Uninstall { id, purge, client } => {
            let c = Client::new(client)?;
            c.send(c.http.delete(c.url(&format!("/v1/admin/plugins/{}?purge={purge}", segment(&id)?)))).await?;
            println!("uninstalled {id}{}", if purge { " and purged its data" } else { "" });
        }
        PluginCommand::Settings(command) => settings(command).await?,
    }
    Ok(())
}
