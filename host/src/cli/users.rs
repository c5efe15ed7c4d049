//! `keel user`: a tenant's users.

use super::ClientArgs;
use anyhow::{Context, Result};
use clap::Subcommand;
use keel_host::client::segment;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum UserCommand {
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
    /// List a tenant's users.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a user's password, read from standard input (first line); ends their sessions.
    ResetPassword {
        #[arg(long)]
        tenant: String,
        /// The user's username or id.
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Disable a user: signed out everywhere, sign-in refused until enabled.
    Disable {
        #[arg(long)]
        tenant: String,
        /// The user's username or id.
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enable a disabled user.
    Enable {
        #[arg(long)]
        tenant: String,
        /// The user's username or id.
        user: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The first line of standard input. A password on the command line would stay in the
/// shell's history and show in the process list.
fn password_from_stdin() -> Result<String> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_owned())
}

/// The id of the tenant's user named `user` (a username or an id).
async fn user_id(c: &keel_host::client::Client, tenant: &str, user: &str) -> Result<String> {
    let list: Value = c.get(&format!("/v1/tenants/{}/users", segment(tenant)?)).await?.json()?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["username"] == user || u["id"] == user)
        .and_then(|u| u["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no user `{user}` in tenant {tenant}"))
}

pub async fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create { tenant, username, display_name, role, client } => {
            let c = client.client()?;
            let password = password_from_stdin()?;
            let body =
                json!({ "username": username, "display_name": display_name, "password": password, "role": role });
            let created: Value =
                c.send_json(Method::POST, &format!("/v1/tenants/{}/users", segment(&tenant)?), &body).await?.json()?;
            println!(
                "created user {} ({}) in {tenant}",
                created["username"].as_str().unwrap_or("?"),
                created["id"].as_str().unwrap_or("?")
            );
        }
        UserCommand::List { tenant, client } => {
            let list: Value =
                client.client()?.get(&format!("/v1/tenants/{}/users", segment(&tenant)?)).await?.json()?;
            println!("{:<22} {:<24} {:<16} {:<18} NAME", "ID", "USERNAME", "ROLE", "STATUS");
            for u in list["items"].as_array().into_iter().flatten() {
                let status = match u["disabled_at"].as_i64() {
                    Some(at) => format!("disabled {}", super::table::when(Some(at))),
                    None => "active".to_owned(),
                };
                println!(
                    "{:<22} {:<24} {:<16} {:<18} {}",
                    u["id"].as_str().unwrap_or(""),
                    u["username"].as_str().unwrap_or(""),
                    u["role"].as_str().unwrap_or(""),
                    status,
                    u["display_name"].as_str().unwrap_or("")
                );
            }
        }
        UserCommand::ResetPassword { tenant, user, client } => {
            let c = client.client()?;
            let id = user_id(&c, &tenant, &user).await?;
            let password = password_from_stdin()?;
            let path = format!("/v1/tenants/{}/users/{}/password", segment(&tenant)?, segment(&id)?);
            c.send_json(Method::PUT, &path, &json!({ "password": password })).await?.success()?;
            println!("set the password of {user} ({id}); their sessions have ended");
        }
        UserCommand::Disable { tenant, user, client } => switch(client, &tenant, &user, "disable").await?,
        UserCommand::Enable { tenant, user, client } => switch(client, &tenant, &user, "enable").await?,
    }
    Ok(())
}

async fn switch(client: ClientArgs, tenant: &str, user: &str, change: &str) -> Result<()> {
    let c = client.client()?;
    let id = user_id(&c, tenant, user).await?;
    let path = format!("/v1/tenants/{}/users/{}/{change}", segment(tenant)?, segment(&id)?);
    c.send_empty(Method::POST, &path).await?.success()?;
    println!("{change}d {user} ({id})");
    Ok(())
}
