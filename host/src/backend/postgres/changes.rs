//! The change feed on PostgreSQL: `cluster_changes` generations moved in each change's own
//! transaction, and `NOTIFY keel_changes` (delivered at commit) to wake the other hosts.

use crate::backend::BackendError;
use crate::cluster::{ChangeFeed, Topic};
use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{PgConnection, Row};
use std::collections::BTreeMap;
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
    /// The connection that listens (one of the pool's, held while it lives); opened again
    /// after it fails.
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

impl PgChangeFeed {
    pub fn new(pool: PgPool) -> Self {
        PgChangeFeed { pool, listener: tokio::sync::Mutex::new(None) }
    }
}

#[async_trait]
impl ChangeFeed for PgChangeFeed {
    async fn generations(&self) -> Result<BTreeMap<Topic, i64>, BackendError> {
        let rows = sqlx::query("SELECT topic, generation FROM cluster_changes").fetch_all(&self.pool).await?;
        Ok(rows.iter().filter_map(|r| Some((Topic::parse(r.get::<&str, _>(0))?, r.get::<i64, _>(1)))).collect())
    }

    async fn wait(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => *guard = Some(listener),
                    Err(e) => tracing::debug!(error = %e, "cannot listen for changes; polling"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot listen for changes; polling"),
            }
        }
        let Some(listener) = guard.as_mut() else {
            drop(guard);
            tokio::time::sleep(timeout).await;
            return;
        };
        match tokio::time::timeout(timeout, listener.recv()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the change listener failed; opening another");
                *guard = None;
            }
            Err(_) => {}
        }
    }
}
