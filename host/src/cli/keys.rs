//! `keel key`: publishers' signing keys (made locally), and the keys a platform trusts.

use super::ClientArgs;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use keel_host::client::segment;
use keel_host::signing::SecretKey;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a signing key pair: `<name>.key` (secret: keep it, never share it) and
    /// `<name>.pub` (give it to the platform admins who will trust it).
    New {
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The keys the platform trusts, and whether it requires signatures (platform admins).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Trust a publisher's public key under a name (platform admins).
    Trust {
        name: String,
        /// `ed25519:...`, or a `.pub` file holding it.
        public_key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop trusting a key (versions it signed stay installed).
    Distrust {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::New { name, dir } => {
            if !keel_host::signing::valid_key_name(&name) {
                bail!("key names are 1-64 of a-z, 0-9, '-' and '.', starting with a letter");
            }
            let (secret_path, public_path) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
            let key = SecretKey::generate().map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
            write_new(&secret_path, &key.to_file_text(), true)?;
            write_new(&public_path, &format!("{}\n", key.public()), false)?;
            println!("{}", key.public());
            println!("secret key: {} (keep it private)", secret_path.display());
            println!("public key: {}", public_path.display());
        }
        KeyCommand::List { client } => {
            let body: Value = client.client()?.get("/v1/admin/trusted-keys").await?.json()?;
            println!("signatures required: {}", body["signatures_required"].as_bool().unwrap_or(false));
            println!("{:<24} {:<8} PUBLIC KEY", "NAME", "SOURCE");
            for k in body["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<8} {}",
                    k["name"].as_str().unwrap_or("?"),
                    k["source"].as_str().unwrap_or("?"),
                    k["public_key"].as_str().unwrap_or("?")
                );
            }
        }
        KeyCommand::Trust { name, public_key, client } => {
            let public_key = if public_key.starts_with("ed25519:") {
                public_key
            } else {
                std::fs::read_to_string(&public_key).with_context(|| format!("reading {public_key}"))?.trim().to_owned()
            };
            let path = format!("/v1/admin/trusted-keys/{}", segment(&name)?);
            let reply = client.client()?.send_json(Method::PUT, &path, &json!({ "public_key": public_key })).await?;
            let created = reply.status == 201;
            let body: Value = reply.json()?;
            let verb = if created { "now trusts" } else { "already trusted" };
            println!("{verb} {name}: {}", body["public_key"].as_str().unwrap_or("?"));
        }
        KeyCommand::Distrust { name, client } => {
            let path = format!("/v1/admin/trusted-keys/{}", segment(&name)?);
            client.client()?.send_empty(Method::DELETE, &path).await?.success()?;
            println!("no longer trusts {name}");
        }
    }
    Ok(())
}

/// Writes a file that must not exist yet (a key is never overwritten); a secret one is
/// readable by its owner only.
fn write_new(path: &std::path::Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
