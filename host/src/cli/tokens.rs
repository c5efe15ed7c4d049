//! `keel token`: a tenant's API tokens.

use super::ClientArgs;
use anyhow::Result;
use clap::Subcommand;
use keel_host::client::segment;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum TokenCommand {
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

pub async fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { tenant, name, role, ttl_seconds, client } => {
            let body = json!({ "name": name, "role": role, "ttl_seconds": ttl_seconds });
            let path = format!("/v1/tenants/{}/tokens", segment(&tenant)?);
            let created: Value = client.client()?.send_json(Method::POST, &path, &body).await?.json()?;
            println!(
                "{} ({}, id {})",
                created["token"].as_str().unwrap_or("?"),
                created["role"].as_str().unwrap_or("?"),
                created["id"].as_str().unwrap_or("?")
            );
            eprintln!("This is the only time the token is shown.");
        }
        TokenCommand::Revoke { tenant, id, client } => {
            let path = format!("/v1/tenants/{}/tokens/{}", segment(&tenant)?, segment(&id)?);
            client.client()?.send_empty(Method::DELETE, &path).await?.success()?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
