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
}

pub async fn run(command: UserCommand) -> Result<()> {
    let UserCommand::Create { tenant, username, display_name, role, client } = command;
    let c = client.client()?;
    // The password comes from standard input: on the command line it would stay in the
    // shell's history and show in the process list.
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    let body = json!({ "username": username, "display_name": display_name, "password": password, "role": role });
    let created: Value =
        c.send_json(Method::POST, &format!("/v1/tenants/{}/users", segment(&tenant)?), &body).await?.json()?;
    println!(
        "created user {} ({}) in {tenant}",
        created["username"].as_str().unwrap_or("?"),
        created["id"].as_str().unwrap_or("?")
    );
    Ok(())
}
