//! The change feed on PostgreSQL: `cluster_changes` generations moved in each change's own
//! transaction, and `NOTIFY keel_changes` (delivered at commit) to wake the other hosts.

use crate::backend::BackendError;
use crate::cluster::{ChangeFeed, Topic};
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CHANNEL: &str = "keel_changes";

/// Moves `topic`'s generation and wakes the other hosts, inside the caller's transaction:
/// the announcement commits with the change, or neither does.
pub(super) async fn announce(conn: &mut PgConnection, topic: Topic) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (INSERT INTO cluster_changes (topic, generation) VALUES ($1, 1) \
         ON CONFLICT (topic) DO UPDATE SET generation = cluster_changes.generation + 1 RETURNING topic) \
         SELECT pg_notify($2, topic) FROM moved",
    )
    .bind(topic.as_str())
    .bind(CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}

pub struct PgChangeFeed {
    pool: PgPool,
    /// Woken by the listening task on each notification.
    woken: Arc<tokio::sync::Notify>,
    /// The listening task, started on the first wait (it needs a runtime).
    listening: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl PgChangeFeed {
    pub fn new(pool: PgPool) -> Self {
        PgChangeFeed { pool, woken: Arc::default(), listening: std::sync::OnceLock::new() }
    }

    /// Listens on a connection of its own (not one of the pool's, which would shrink it by
    /// one for good), in a task of its own (so no wait ever cancels it halfway through
    /// reconnecting), and wakes the watcher on every notification.
    fn listen(&self) -> tokio::task::JoinHandle<()> {
        let options = self.pool.connect_options().as_ref().clone();
        let woken = self.woken.clone();
        tokio::spawn(async move {
            let own = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options);
            loop {
                let mut listener = match PgListener::connect_with(&own).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for changes; polling");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::debug!(error = %e, "cannot listen for changes; polling");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // A notification may have been missed while not listening: look now.
                woken.notify_one();
                // `Ok(None)`: the connection was lost and opened again (listening anew), and
                // what was sent meanwhile is lost: look now as well.
                loop {
                    match listener.try_recv().await {
                        Ok(_) => woken.notify_one(),
                        Err(e) => {
                            tracing::debug!(error = %e, "the change listener failed; listening again");
                            break;
                        }
                    }
                }
            }
        })
    }
}

impl Drop for PgChangeFeed {
    fn drop(&mut self) {
        if let Some(task) = self.listening.get() {
            task.abort();
        }
    }
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn generations(&self) -> Result<BTreeMap<Topic, i64>, BackendError> {
        let rows = sqlx::query("SELECT topic, generation FROM cluster_changes").fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(|r| Some((Topic::parse(r.get::<&str, _>(0))?, r.get::<i64, _>(1)))).collect())
    }

    async fn wait(&self, timeout: Duration) {
        self.listening.get_or_init(|| self.listen());
        let _ = tokio::time::timeout(timeout, self.woken.notified()).await;
    }
}
