//! `keel tenant`: tenants, their quotas (platform admins) and the plugins each has on.

use super::ClientArgs;
use anyhow::Result;
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
    /// The plugins a tenant has on: list, switch on or off, purge what it stored with one.
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
            println!("{:<20} {:<10} {:<4} MISSING", "ID", "VERSION", "ON");
            for p in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} {:<10} {:<4} {}",
                    p["id"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
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
        TenantPluginCommand::Disable { tenant, plugin, force, client } => {
            let action = if force { "disable?force=true" } else { "disable" };
            let body: Value =
                client.client()?.send_empty(Method::POST, &path(&tenant, &plugin, action)?).await?.json()?;
            println!("{plugin} is off for {tenant}");
            for d in body["dependents"].as_array().into_iter().flatten() {
                println!("{} lost its provider of {}", d["plugin"].as_str().unwrap_or("?"), names(&d["interfaces"]));
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
