//! `keel task`: follow and cancel a tenant's tasks.

use super::ClientArgs;
use super::table::progress_line;
use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use keel_host::jobs::TaskStatus;

#[derive(Subcommand)]
pub enum TaskCommand {
    /// List tasks with their progress, newest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        plugin: Option<String>,
        /// running, done, cancelled or failed
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a task as JSON.
    Show {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a task with a progress bar until it ends; exits non-zero unless it finishes.
    Watch {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Seconds between looks.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a task: no further chunk runs.
    Cancel {
        id: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: TaskCommand) -> Result<()> {
    match command {
        TaskCommand::List { tenant, plugin, status, limit, client } => {
            let status = status
                .map(|s| TaskStatus::parse(&s).ok_or_else(|| anyhow!("--status is one of {}", TaskStatus::names())))
                .transpose()?;
            let page = client.client()?.tasks(&tenant, plugin.as_deref(), status, limit).await?;
            println!("{:<30} {:<12} {:<32} PROGRESS", "ID", "PLUGIN", "TITLE");
            for t in &page.items {
                println!(
                    "{:<30} {:<12} {:<32} {}",
                    t.id,
                    t.plugin,
                    t.title.chars().take(32).collect::<String>(),
                    progress_line(t)
                );
            }
        }
        TaskCommand::Show { id, tenant, client } => {
            let task = client.client()?.task(&tenant, &id).await?;
            println!("{}", serde_json::to_string_pretty(&task)?);
        }
        TaskCommand::Watch { id, tenant, every, client } => {
            use std::io::Write as _;
            let c = client.client()?;
            let every = std::time::Duration::from_secs_f64(every.clamp(0.05, 60.0));
            loop {
                let task = c.task(&tenant, &id).await?;
                print!("\r{}\x1b[K", progress_line(&task));
                std::io::stdout().flush()?;
                match task.status {
                    TaskStatus::Running => tokio::time::sleep(every).await,
                    TaskStatus::Done => {
                        println!();
                        return Ok(());
                    }
                    other => {
                        println!();
                        let error = task.last_error.map(|e| format!(": {e}")).unwrap_or_default();
                        bail!("task {id} is {other}{error}");
                    }
                }
            }
        }
        TaskCommand::Cancel { id, tenant, client } => {
            let task = client.client()?.cancel_task(&tenant, &id).await?;
            println!("cancelled {id}: {}", progress_line(&task));
        }
    }
    Ok(())
}
