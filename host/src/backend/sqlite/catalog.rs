//! Installed plugins, versions and artifacts on SQLite.

use crate::backend::BackendError;
use crate::plugins::{NewVersion, PluginCatalog, PluginHead, Reindex, StoredPlugin, TrustedKeyRow};
use crate::storage::ReindexError;
use async_trait::async_trait;
use sqlx::{Row, SqlitePool};

pub(super) struct SqliteCatalog(pub(super) SqlitePool);

fn failed(e: sqlx::Error) -> ReindexError {
    ReindexError::Store(BackendError::from(e).into())
}

#[async_trait]
impl PluginCatalog for SqliteCatalog {
    async fn active(&self) -> Result<Vec<StoredPlugin>, BackendError> {
        stored(&self.0, None).await
    }

    async fn active_of(&self, id: &str) -> Result<Option<StoredPlugin>, BackendError> {
        Ok(stored(&self.0, Some(id)).await?.pop())
    }

    async fn heads(&self) -> Result<Vec<PluginHead>, BackendError> {
        let rows = sqlx::query(
            "SELECT p.id, v.digest, p.enabled, p.updated_at FROM plugins p \
             JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = p.active_version ORDER BY p.id",
        )
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PluginHead {
                id: r.get("id"),
                digest: r.get("digest"),
                enabled: r.get::<i64, _>("enabled") != 0,
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    async fn digest_of(&self, id: &str, version: &str) -> Result<Option<String>, BackendError> {
        Ok(sqlx::query_scalar("SELECT digest FROM plugin_versions WHERE plugin_id = ? AND version = ?")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.0)
            .await?)
    }

    async fn activate(&self, v: &NewVersion<'_>, reindex: &[Reindex]) -> Result<Vec<u64>, ReindexError> {
        let mut tx = self.0.begin().await.map_err(failed)?;
        let mut entries = Vec::with_capacity(reindex.len());
        for step in reindex {
            let Reindex { collection, indexes, drop, rebuild } = step;
            entries.push(super::documents::reindex(&mut tx, v.id, collection, indexes, drop, rebuild).await?);
        }
        sqlx::query(
            "INSERT INTO plugin_artifacts (digest, bytes, size, uploaded_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(v.digest)
        .bind(v.bytes)
        .bind(v.bytes.len() as i64)
        .bind(v.now)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        sqlx::query(
            "INSERT INTO plugin_versions (plugin_id, version, digest, manifest, installed_at, signer) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (plugin_id, version) DO NOTHING",
        )
        .bind(v.id)
        .bind(v.version)
        .bind(v.digest)
        .bind(v.manifest)
        .bind(v.now)
        .bind(v.signer)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        // Only over the version the install was decided against (see `NewVersion::replaces`).
        let switched = match v.replaces {
            Some(replaced) => sqlx::query("UPDATE plugins SET active_version = ?, updated_at = ? WHERE id = ? AND active_version = ?")
                .bind(v.version)
                .bind(v.now)
                .bind(v.id)
                .bind(replaced)
                .execute(&mut *tx)
                .await
                .map_err(failed)?,
            None => sqlx::query(
                "INSERT INTO plugins (id, active_version, enabled, installed_at, updated_at) VALUES (?1, ?2, 1, ?3, ?3) \
                     ON CONFLICT (id) DO NOTHING",
            )
            .bind(v.id)
            .bind(v.version)
            .bind(v.now)
            .execute(&mut *tx)
            .await
            .map_err(failed)?,
        };
        if switched.rows_affected() != 1 {
            let found: Option<String> = sqlx::query_scalar("SELECT active_version FROM plugins WHERE id = ?")
                .bind(v.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed)?;
            return Err(ReindexError::Superseded { plugin: v.id.to_owned(), found });
        }
        tx.commit().await.map_err(failed)?;
        Ok(entries)
    }

    async fn set_enabled(&self, id: &str, enabled: bool, now: i64) -> Result<(), BackendError> {
        sqlx::query("UPDATE plugins SET enabled = ?, updated_at = ? WHERE id = ?")
            .bind(i64::from(enabled))
            .bind(now)
            .bind(id)
            .execute(&self.0)
            .await?;
        Ok(())
    }

    async fn trusted_keys(&self) -> Result<Vec<TrustedKeyRow>, BackendError> {
        let rows: Vec<(String, String, i64, String)> =
            sqlx::query_as("SELECT name, public_key, added_at, added_by FROM trusted_keys ORDER BY name")
                .fetch_all(&self.0)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, public_key, added_at, added_by)| TrustedKeyRow { name, public_key, added_at, added_by })
            .collect())
    }

    async fn trust_key(&self, name: &str, public_key: &str, now: i64, by: &str) -> Result<bool, BackendError> {
        let added = sqlx::query(
            "INSERT INTO trusted_keys (name, public_key, added_at, added_by) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(public_key)
        .bind(now)
        .bind(by)
        .execute(&self.0)
        .await?;
        Ok(added.rows_affected() == 1)
    }

    async fn distrust_key(&self, name: &str) -> Result<bool, BackendError> {
        let gone = sqlx::query("DELETE FROM trusted_keys WHERE name = ?1").bind(name).execute(&self.0).await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn remove(&self, id: &str, purge: bool, secrets: &[String]) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        sqlx::query("DELETE FROM plugins WHERE id = ?").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM plugin_versions WHERE plugin_id = ?").bind(id).execute(&mut *tx).await?;
        if purge {
            sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = ?").bind(id).execute(&mut *tx).await?;
        } else {
            for name in secrets {
                sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = ? AND name = ?")
                    .bind(id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM plugin_artifacts WHERE digest NOT IN (SELECT digest FROM plugin_versions)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The active versions of every plugin, or of `id`, with their artifacts.
async fn stored(pool: &SqlitePool, id: Option<&str>) -> Result<Vec<StoredPlugin>, BackendError> {
    let rows = sqlx::query(
        "SELECT p.id, p.enabled, p.installed_at, p.updated_at, v.version, v.digest, v.manifest, v.signer, a.bytes \
         FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = p.active_version \
         JOIN plugin_artifacts a ON a.digest = v.digest WHERE ?1 IS NULL OR p.id = ?1 ORDER BY p.id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredPlugin {
            id: r.get("id"),
            enabled: r.get::<i64, _>("enabled") != 0,
            installed_at: r.get("installed_at"),
            updated_at: r.get("updated_at"),
            version: r.get("version"),
            digest: r.get("digest"),
            manifest: r.get("manifest"),
            bytes: r.get("bytes"),
            signer: r.get("signer"),
        })
        .collect())
}
