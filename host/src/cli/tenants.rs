//! `keel tenant`: tenants, their quotas (platform admins) and the plugins each has on.

use super::ClientArgs;
use anyhow::{Context, Result};
use clap::Subcommand;
use keel_host::client::segment;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum TenantCommand {
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
    /// The plugins a tenant has on: list, switch on or off, export, import or purge what it
    /// stored with one.
    Plugin {
        #[command(subcommand)]
        command: TenantPluginCommand,
    },
}

#[derive(Subcommand)]
pub enum TenantPluginCommand {
    /// The installed plugins, whether each is on for the tenant, and what each is missing.
    List {
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch a plugin on for the tenant (what no plugin on there provides is listed).
    Enable {
        tenant: String,
        plugin: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move the tenant to another installed version of a plugin (the active one unless
    /// `--version`; an older one rolls back).
    Upgrade {
        tenant: String,
        plugin: String,
        #[arg(long)]
        version: Option<String>,
        /// Even though plugins on there require what only the current version provides.
        #[arg(long)]
        force: bool,
        /// Approve what the version asks for that the tenant's does not (repeat; exactly
        /// the list `--dry-run` shows).
        #[arg(long = "approve")]
        approve: Vec<String>,
        /// Show what the move would ask for and change, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch a plugin off for the tenant; its data is kept.
    Disable {
        tenant: String,
        plugin: String,
        /// Even though plugins on there require what only it provides.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write everything the tenant stored with a plugin to a JSON Lines file (secret
    /// settings left out).
    Export {
        tenant: String,
        plugin: String,
        /// The file to write (`-`: standard output). Written whole or not at all.
        #[arg(long, short)]
        output: std::path::PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a file from `export` into the tenant, where the plugin is off and holds nothing.
    Import {
        tenant: String,
        plugin: String,
        file: std::path::PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete everything the tenant stored with a plugin that is off there. Cannot be undone.
    Purge {
        tenant: String,
        plugin: String,
        /// The plugin's id again.
        #[arg(long)]
        confirm: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum QuotaCommand {
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

pub async fn run(command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Create { id, name, client } => {
            client.client()?.create_tenant(&id, &name).await?;
            println!("created tenant {id}");
        }
        TenantCommand::List { client } => {
            let list = client.client()?.tenants().await?;
            println!("{:<24} {:<10} NAME", "ID", "STATUS");
            for t in list.items {
                println!("{:<24} {:<10} {}", t.id, t.status, t.name);
            }
        }
        TenantCommand::Quota { command } => quota(command).await?,
        TenantCommand::Plugin { command } => plugins(command).await?,
    }
    Ok(())
}

async fn plugins(command: TenantPluginCommand) -> Result<()> {
    let path = |tenant: &str, plugin: &str, action: &str| -> Result<String> {
        Ok(format!("/v1/tenants/{}/plugins/{}/{action}", segment(tenant)?, segment(plugin)?))
    };
    let names = |v: &Value| {
        let listed: Vec<&str> = v.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        listed.join(", ")
    };
    match command {
        TenantPluginCommand::List { tenant, client } => {
            let body: Value =
                client.client()?.get(&format!("/v1/tenants/{}/plugins", segment(&tenant)?)).await?.json()?;
            println!("{:<20} {:<10} {:<10} {:<4} MISSING", "ID", "VERSION", "ACTIVE", "ON");
            for p in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<10} {:<10} {:<4} {}",
                    p["id"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["active_version"].as_str().or(p["version"].as_str()).unwrap_or("?"),
                    if p["enabled"].as_bool() == Some(true) { "yes" } else { "no" },
                    names(&p["missing"])
                );
            }
        }
        TenantPluginCommand::Enable { tenant, plugin, client } => {
            let body: Value =
                client.client()?.send_empty(Method::POST, &path(&tenant, &plugin, "enable")?).await?.json()?;
            println!("{plugin} is on for {tenant}");
            if body["missing"].as_array().is_some_and(|m| !m.is_empty()) {
                println!("no plugin on there provides {}: its calls there fail until one is", names(&body["missing"]));
            }
        }
        TenantPluginCommand::Upgrade { tenant, plugin, version, force, approve, dry_run, client } => {
            if dry_run {
                let mut at = path(&tenant, &plugin, "upgrade")?;
                if let Some(v) = &version {
                    at = format!("{at}?version={}", segment(v)?);
                }
                let body: Value = client.client()?.get(&at).await?.json()?;
                println!(
                    "{tenant} would move {plugin} from {} to {}",
                    body["from"].as_str().unwrap_or("?"),
                    body["to"].as_str().unwrap_or("?")
                );
                let asks: Vec<&str> =
                    body["approval_required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                match asks.is_empty() {
                    true => println!("it asks for nothing new"),
                    false => println!("it asks for what needs approval: {}", asks.join(" ")),
                }
                if let Some(refused) = body["refused"].as_str() {
                    println!("refused: {refused}");
                }
                for d in body["dependents"].as_array().into_iter().flatten() {
                    println!(
                        "{} would lose its provider of {} (needs --force)",
                        d["plugin"].as_str().unwrap_or("?"),
                        names(&d["interfaces"])
                    );
                }
                return Ok(());
            }
            let request = json!({ "version": version, "force": force, "approve": approve });
            let body: Value = client
                .client()?
                .send_json(Method::POST, &path(&tenant, &plugin, "upgrade")?, &request)
                .await?
                .json()?;
            println!(
                "{tenant} runs {plugin} {} (was {}; {} index entries rewritten)",
                body["to"].as_str().unwrap_or("?"),
                body["from"].as_str().unwrap_or("?"),
                body["entries_rewritten"]
            );
            if body["missing"].as_array().is_some_and(|m| !m.is_empty()) {
                println!("no plugin on there provides {}: its calls there fail until one is", names(&body["missing"]));
            }
            for d in body["dependents"].as_array().into_iter().flatten() {
                println!("{} lost its provider of {}", d["plugin"].as_str().unwrap_or("?"), names(&d["interfaces"]));
            }
        }
        TenantPluginCommand::Disable { tenant, plugin, force, client } => {
            let action = if force { "disable?force=true" } else { "disable" };
            let body: Value =
                client.client()?.send_empty(Method::POST, &path(&tenant, &plugin, action)?).await?.json()?;
            println!("{plugin} is off for {tenant}");
            for d in body["dependents"].as_array().into_iter().flatten() {
                println!("{} lost its provider of {}", d["plugin"].as_str().unwrap_or("?"), names(&d["interfaces"]));
            }
        }
        TenantPluginCommand::Export { tenant, plugin, output, client } => {
            export(client.client()?, &path(&tenant, &plugin, "export")?, &output).await?;
        }
        TenantPluginCommand::Import { tenant, plugin, file, client } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let client = client.client()?;
            let request = client
                .request(Method::POST, &path(&tenant, &plugin, "import")?)
                .header("content-type", "application/x-ndjson")
                .body(bytes);
            let body: Value = client.send(request).await?.json()?;
            println!(
                "imported into {plugin} for {tenant} (from {} at version {}): {} documents, {} settings, {} sequences",
                body["from_tenant"].as_str().unwrap_or("?"),
                body["from_version"].as_str().unwrap_or("?"),
                body["documents"],
                body["settings"],
                body["sequences"]
            );
            if body["secrets_omitted"].as_array().is_some_and(|s| !s.is_empty()) {
                println!("secret settings are not in exports; set them again: {}", names(&body["secrets_omitted"]));
            }
        }
        TenantPluginCommand::Purge { tenant, plugin, confirm, client } => {
            let body: Value = client
                .client()?
                .send_json(Method::POST, &path(&tenant, &plugin, "purge")?, &json!({ "confirm": confirm }))
                .await?
                .json()?;
            println!(
                "purged {plugin} for {tenant}: {} documents, {} settings, {} queued jobs cancelled",
                body["documents"], body["settings"], body["jobs_cancelled"]
            );
        }
    }
    Ok(())
}

/// Streams an export to `output` (a file, written beside it and renamed once whole, or `-`
/// for standard output), and refuses a stream that ends without its `end` line.
async fn export(client: keel_host::client::Client, path: &str, output: &std::path::Path) -> Result<()> {
    /// Keeps the last bytes written: the file's last line says whether it is whole.
    struct Tail<W> {
        out: W,
        tail: Vec<u8>,
    }
    impl<W: std::io::Write> std::io::Write for Tail<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.out.write(buf)?;
            self.tail.extend_from_slice(&buf[..n]);
            let excess = self.tail.len().saturating_sub(4096);
            self.tail.drain(..excess);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    let whole = |tail: &[u8]| {
        let text = String::from_utf8_lossy(tail);
        let last = text.trim_end().rsplit('\n').next().unwrap_or_default().to_owned();
        serde_json::from_str::<Value>(&last).ok().filter(|v| v["kind"] == "end")
    };
    if output.as_os_str() == "-" {
        let mut out = Tail { out: std::io::stdout().lock(), tail: Vec::new() };
        client.download(path, &mut out).await?;
        std::io::Write::flush(&mut out)?;
        whole(&out.tail).context("the export was cut short: its last line is not `end`")?;
        return Ok(());
    }
    let partial = output.with_extension("partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut out = Tail { out: std::io::BufWriter::new(file), tail: Vec::new() };
    let result = client.download(path, &mut out).await;
    let flushed = std::io::Write::flush(&mut out);
    let end = match (result, flushed) {
        (Ok(_), Ok(())) => whole(&out.tail),
        (Err(e), _) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        (_, Err(e)) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    let Some(end) = end else {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("the export was cut short (its last line is not `end`); nothing was written");
    };
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "exported to {}: {} documents, {} settings, {} sequences",
        output.display(),
        end["documents"],
        end["settings"],
        end["sequences"]
    );
    Ok(())
}

async fn quota(command: QuotaCommand) -> Result<()> {
    let (tenant, body): (String, Value) = match command {
        QuotaCommand::Show { tenant, client } => {
            let body = client.client()?.get(&format!("/v1/tenants/{}/quotas", segment(&tenant)?)).await?.json()?;
            (tenant, body)
        }
        QuotaCommand::Set { tenant, documents, mb, plugin_documents, plugin_mb, client } => {
            let quotas = json!({
                "tenant_documents": documents,
                "tenant_bytes": mb.saturating_mul(1 << 20),
                "plugin_documents": plugin_documents,
                "plugin_bytes": plugin_mb.saturating_mul(1 << 20),
            });
            let path = format!("/v1/tenants/{}/quotas", segment(&tenant)?);
            let body = client.client()?.send_json(Method::PUT, &path, &quotas).await?.json()?;
            (tenant, body)
        }
        QuotaCommand::Reset { tenant, client } => {
            let path = format!("/v1/tenants/{}/quotas", segment(&tenant)?);
            let body = client.client()?.send_empty(Method::DELETE, &path).await?.json()?;
            (tenant, body)
        }
    };
    let q = &body["quotas"];
    let mib = |v: &Value| format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / f64::from(1 << 20));
    let int = |v: &Value| v.as_u64().unwrap_or(0);
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
