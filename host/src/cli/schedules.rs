//! `keel schedule`: a tenant's schedules.

use super::ClientArgs;
use super::table::when;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// List schedules with their next and last run.
    List {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a plugin's schedule now.
    Run {
        plugin: String,
        name: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn run(command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::List { tenant, client } => {
            let list = client.client()?.schedules(&tenant).await?;
            println!("{:<16} {:<20} {:<32} {:<19} LAST RUN (UTC)", "PLUGIN", "NAME", "SPEC", "NEXT RUN (UTC)");
            for s in list.items {
                println!(
                    "{:<16} {:<20} {:<32} {:<19} {}",
                    s.plugin,
                    s.name,
                    s.spec,
                    when(Some(s.next_run_at)),
                    when(s.last_run_at)
                );
            }
        }
        ScheduleCommand::Run { plugin, name, tenant, client } => {
            let queued = client.client()?.run_schedule(&tenant, &plugin, &name).await?;
            println!("queued {}", queued.job_id);
        }
    }
    Ok(())
}
