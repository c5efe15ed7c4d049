//! `keel event`: a tenant's event log.

use super::ClientArgs;
use super::table::when;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum EventCommand {
    /// List events, oldest first.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        topic: Option<String>,
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deliver events FROM..=TO (positions) again to one subscriber.
    Replay {
        subscriber: String,
        #[arg(long)]
        from: i64,
        #[arg(long)]
        to: i64,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: EventCommand) -> Result<()> {
    match command {
        EventCommand::List { tenant, topic, after, limit, client } => {
            let page = client.client()?.events(&tenant, topic.as_deref(), after, limit).await?;
            println!("{:<8} {:<28} {:<36} {:<14} {:<19} PAYLOAD", "SEQ", "ID", "TOPIC", "SOURCE", "AT (UTC)");
            for e in page.items {
                println!(
                    "{:<8} {:<28} {:<36} {:<14} {:<19} {}",
                    e.seq,
                    e.id,
                    e.topic,
                    e.source,
                    when(Some(e.published_at)),
                    e.payload
                );
            }
        }
        EventCommand::Replay { subscriber, from, to, tenant, client } => {
            let replayed = client.client()?.replay(&tenant, &subscriber, from, to).await?;
            println!("queued {} deliveries to {subscriber}", replayed.queued);
        }
    }
    Ok(())
}
