//! `keel plugin`: write, build, install and manage plugins, and their settings in a tenant.

use super::ClientArgs;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use keel_host::client::{Client, segment};
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PluginCommand {
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
    /// Upload and install a plugin artifact, with its signature (`<file>.sig` if it exists).
    Install {
        file: PathBuf,
        /// The signature file [default: `<file>.sig`, if it exists]
        #[arg(long)]
        signature: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sign an artifact with a publisher's secret key (`keel key new`), writing
    /// `<file>.sig` beside it.
    Sign {
        file: PathBuf,
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check an artifact's signature; with `--key`, that it is that key's.
    Verify {
        file: PathBuf,
        /// The signature file [default: `<file>.sig`]
        #[arg(long)]
        signature: Option<PathBuf>,
        /// The publisher's public key (`ed25519:...`, or a `.pub` file) it must be made with.
        #[arg(long)]
        key: Option<String>,
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
    /// The installed versions of a plugin and the tenants running each.
    Versions {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move tenants to a version (the active one unless `--version`), one after the other,
    /// stopping at the first that fails.
    Rollout {
        id: String,
        #[arg(long)]
        version: Option<String>,
        /// A tenant to move (repeat for several, moved in order); every tenant running
        /// another version when none is given.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pin the version tenants switching the plugin on get (installs then do not move it).
    Pin {
        id: String,
        version: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Unpin: the newest installed version is what tenants switching the plugin on get.
    Unpin {
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
pub enum SettingsCommand {
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

pub async fn run(command: PluginCommand) -> Result<()> {
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
        PluginCommand::Install { file, signature, client } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let signature = match signature {
                Some(path) => Some(read_signature(&path)?),
                None => {
                    let beside = signature_path(&file);
                    beside.exists().then(|| read_signature(&beside)).transpose()?
                }
            };
            let body = client.client()?.install(bytes, signature.as_deref()).await?;
            let p = &body["plugin"];
            println!(
                "{} {} {} (digest {})",
                body["outcome"].as_str().unwrap_or("?"),
                p["id"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
                p["digest"].as_str().unwrap_or("?")
            );
        }
        PluginCommand::Sign { file, key } => {
            let text = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let secret = keel_host::signing::SecretKey::from_file_text(&text)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let digest = keel_host::artifact::digest(&bytes);
            let out = signature_path(&file);
            std::fs::write(&out, format!("{}\n", secret.sign(&digest)))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("signed {} (sha256 {digest}) with {}", file.display(), secret.public());
            println!("signature: {}", out.display());
        }
        PluginCommand::Verify { file, signature, key } => {
            let path = signature.unwrap_or_else(|| signature_path(&file));
            let signature: keel_host::signing::Signature = read_signature(&path)?.parse()?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let signer = signature.verify(&keel_host::artifact::digest(&bytes))?;
            if let Some(expected) = key {
                let expected = if expected.starts_with("ed25519:") {
                    expected
                } else {
                    std::fs::read_to_string(&expected).with_context(|| format!("cannot read {expected}"))?
                };
                let expected: keel_host::signing::PublicKey = expected.parse()?;
                if expected != signer {
                    bail!("the signature is valid but made by {signer}, not {expected}");
                }
            }
            println!("valid signature of {} by {signer}", file.display());
        }
        PluginCommand::List { client } => {
            let body = client.client()?.plugins().await?;
            println!("{:<20} {:<10} {:<8} {:<6} DIGEST", "ID", "VERSION", "ENABLED", "ROUTES");
            for p in body["items"].as_array().into_iter().flatten() {
                let digest = p["digest"].as_str().unwrap_or("?");
                println!(
                    "{:<20} {:<10} {:<8} {:<6} {}",
                    p["id"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["enabled"].as_bool().unwrap_or(false),
                    p["manifest"]["routes"].as_array().map_or(0, Vec::len),
                    digest.get(..12).unwrap_or(digest)
                );
            }
        }
        PluginCommand::Show { id, client } => {
            let body = client.client()?.plugin(&id).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        PluginCommand::Enable { id, client } => {
            client.client()?.set_plugin_enabled(&id, true).await?;
            println!("enabled {id}");
        }
        PluginCommand::Disable { id, client } => {
            client.client()?.set_plugin_enabled(&id, false).await?;
            println!("disabled {id}");
        }
        PluginCommand::Versions { id, client } => {
            let body: Value =
                client.client()?.get(&format!("/v1/admin/plugins/{}/versions", segment(&id)?)).await?.json()?;
            println!("{:<10} {:<7} {:<14} {:<14} TENANTS", "VERSION", "ACTIVE", "SIGNER", "DIGEST");
            for v in body["items"].as_array().into_iter().flatten() {
                let digest = v["digest"].as_str().unwrap_or("?");
                let tenants: Vec<&str> =
                    v["tenants"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!(
                    "{:<10} {:<7} {:<14} {:<14} {}",
                    v["version"].as_str().unwrap_or("?"),
                    if v["active"].as_bool() == Some(true) { "yes" } else { "" },
                    v["signer"].as_str().unwrap_or("-"),
                    digest.get(..12).unwrap_or(digest),
                    tenants.join(", ")
                );
            }
        }
        PluginCommand::Rollout { id, version, tenants, client } => {
            let request = serde_json::json!({
                "version": version,
                "tenants": if tenants.is_empty() { None } else { Some(tenants) },
            });
            let body: Value = client
                .client()?
                .send_json(Method::POST, &format!("/v1/admin/plugins/{}/rollout", segment(&id)?), &request)
                .await?
                .json()?;
            let version = body["version"].as_str().unwrap_or("?");
            for step in body["moved"].as_array().into_iter().flatten() {
                println!(
                    "moved {} from {} to {version}",
                    step["tenant"].as_str().unwrap_or("?"),
                    step["from"].as_str().unwrap_or("?")
                );
            }
            if let Some(failed) = body.get("failed") {
                let remaining: Vec<&str> =
                    body["remaining"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                bail!(
                    "stopped at {} ({}): {}; not reached: {}",
                    failed["tenant"].as_str().unwrap_or("?"),
                    failed["code"].as_str().unwrap_or("?"),
                    failed["detail"].as_str().unwrap_or("?"),
                    if remaining.is_empty() { "none".to_owned() } else { remaining.join(", ") }
                );
            }
            println!("every tenant asked for runs {id} {version}");
        }
        PluginCommand::Pin { id, version, client } => {
            let path = format!("/v1/admin/plugins/{}/pin", segment(&id)?);
            let body: Value = client
                .client()?
                .send_json(Method::PUT, &path, &serde_json::json!({ "version": version }))
                .await?
                .json()?;
            println!("tenants switching {id} on get {} (pinned)", body["version"].as_str().unwrap_or("?"));
        }
        PluginCommand::Unpin { id, client } => {
            let path = format!("/v1/admin/plugins/{}/pin", segment(&id)?);
            let body: Value = client.client()?.send_empty(Method::DELETE, &path).await?.json()?;
            println!("tenants switching {id} on get {}, the newest", body["version"].as_str().unwrap_or("?"));
        }
        PluginCommand::Uninstall { id, purge, client } => {
            client.client()?.uninstall(&id, purge).await?;
            println!("uninstalled {id}{}", if purge { " and purged its data" } else { "" });
        }
        PluginCommand::Settings(command) => settings(command).await?,
    }
    Ok(())
}

/// Where an artifact's signature lives: `<file>.sig`.
fn signature_path(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn read_signature(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// The settings of `plugin` in `tenant`, as the server lists them.
async fn current_settings(c: &Client, path: &str) -> Result<Value> {
    Ok(c.get(path).await?.json()?)
}

async fn settings(command: SettingsCommand) -> Result<()> {
    let path = |tenant: &str, plugin: &str| -> Result<String> {
        Ok(format!("/v1/tenants/{}/plugins/{}/settings", segment(tenant)?, segment(plugin)?))
    };
    let body = match command {
        SettingsCommand::Show { plugin, tenant, client } => {
            current_settings(&client.client()?, &path(&tenant, &plugin)?).await?
        }
        SettingsCommand::Set { plugin, values, secret, tenant, client } => {
            let c = client.client()?;
            let url = path(&tenant, &plugin)?;
            // Values are typed by the plugin's declarations: `42` stays text for a string.
            let declared = current_settings(&c, &url).await?;
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
            c.send_json(Method::PATCH, &url, &serde_json::json!({ "values": change })).await?.json()?
        }
        SettingsCommand::Reset { plugin, names, tenant, client } => {
            let c = client.client()?;
            let change: serde_json::Map<String, serde_json::Value> =
                names.into_iter().map(|n| (n, serde_json::Value::Null)).collect();
            c.send_json(Method::PATCH, &path(&tenant, &plugin)?, &serde_json::json!({ "values": change }))
                .await?
                .json()?
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
