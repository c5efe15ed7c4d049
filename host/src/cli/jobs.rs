//! `keel job`: a tenant's background jobs.

use super::ClientArgs;
use super::table::when;
use anyhow::{Result, anyhow};
use clap::Subcommand;
use keel_host::jobs::{JobKind, JobStatus};

#[derive(Subcommand)]
pub enum JobCommand {
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

pub async fn run(command: JobCommand) -> Result<()> {
    match command {
        JobCommand::List { tenant, plugin, status, kind, limit, client } => {
            let status = status
                .map(|s| JobStatus::parse(&s).ok_or_else(|| anyhow!("--status is one of {}", JobStatus::names())))
                .transpose()?;
            let kind = kind
                .map(|k| JobKind::parse(&k).ok_or_else(|| anyhow!("--kind is job, schedule or event")))
                .transpose()?;
            let page = client.client()?.jobs(&tenant, plugin.as_deref(), status, kind, limit).await?;
            println!(
                "{:<28} {:<12} {:<9} {:<24} {:<10} {:<8} {:<19} LAST ERROR",
                "ID", "PLUGIN", "KIND", "NAME", "STATUS", "TRIES", "RUN AT (UTC)"
            );
            for j in page.items {
                println!(
                    "{:<28} {:<12} {:<9} {:<24} {:<10} {:<8} {:<19} {}",
                    j.id,
                    j.plugin,
                    j.kind.as_str(),
                    j.name,
                    j.status,
                    format!("{}/{}", j.attempts, j.max_attempts),
                    when(Some(j.run_at)),
                    j.last_error.unwrap_or_default()
                );
            }
        }
        JobCommand::Show { id, tenant, client } => {
            let detail = client.client()?.job(&tenant, &id).await?;
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        JobCommand::Retry { id, tenant, client } => {
            client.client()?.retry_job(&tenant, &id).await?;
            println!("queued {id} again");
        }
        JobCommand::Cancel { id, tenant, client } => {
            client.client()?.cancel_job(&tenant, &id).await?;
            println!("cancelled {id}");
        }
    }
    Ok(())
}
