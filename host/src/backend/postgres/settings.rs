//! Plugin settings on PostgreSQL.

use crate::backend::BackendError;
use crate::settings::{SettingRows, StoredSetting};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;
use std::collections::BTreeMap;

/// Plugin settings in PostgreSQL.
pub struct PgSettings(pub PgPool);

#[async_trait]
impl SettingRows for PgSettings {
    async fn stored(&self, tenant: &str, plugin: &str) -> Result<BTreeMap<String, StoredSetting>, BackendError> {
        let rows = sqlx::query(
            "SELECT name, value, updated_at, updated_by FROM plugin_settings WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant)
        .bind(plugin)
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), StoredSetting { value: r.get(1), updated_at: r.get(2), updated_by: r.get(3) }))
            .collect())
    }

    async fn apply(
        &self,
        tenant: &str,
        plugin: &str,
        changes: &[(&str, Option<String>)],
        now: i64,
        actor: &str,
    ) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        for (name, text) in changes {
            match text {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO plugin_settings (tenant_id, plugin_id, name, value, updated_at, updated_by) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, plugin_id, name) DO UPDATE SET \
                         value = excluded.value, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(tenant)
                    .bind(plugin)
                    .bind(name)
                    .bind(value)
                    .bind(now)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM plugin_settings WHERE tenant_id = $1 AND plugin_id = $2 AND name = $3")
                        .bind(tenant)
                        .bind(plugin)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        super::changes::announce(&mut tx, crate::cluster::Topic::Settings).await?;
        tx.commit().await?;
        Ok(())
    }
}
