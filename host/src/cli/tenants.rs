//! `keel tenant`: tenants and their quotas (platform admins).

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
