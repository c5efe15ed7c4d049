//! The admin commands of `keel`, one module per noun, each a clap subcommand and its `run`,
//! over the library's typed [`keel_host::client::Client`].

pub mod events;
pub mod jobs;
pub mod keys;
pub mod plugins;
pub mod schedules;
mod table;
pub mod tasks;
pub mod tenants;
pub mod tokens;
pub mod users;

use anyhow::{Result, bail};
use clap::Args;
use keel_host::client::Client;

/// Where the server is and who is calling, for every admin command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Base URL of the server.
    #[arg(long, env = "KEEL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// A platform-admin token.
    #[arg(long, env = "KEEL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl ClientArgs {
    /// The client these arguments describe; a token is required.
    pub fn client(self) -> Result<Client> {
        let Some(token) = self.token else { bail!("no token: pass --token or set KEEL_TOKEN") };
        Ok(Client::new(&self.server, Some(token)))
    }
}
