//! Installed plugins, versions and artifacts on PostgreSQL.

use super::changes::announce;
use crate::backend::BackendError;
use crate::cluster::Topic;
use crate::plugins::{
    NewVersion, PluginCatalog, PluginHead, Reindex, StoredPlugin, TenantSwitch, TrustedKeyRow, VersionRow,
};
use crate::storage::ReindexError;
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgPool;

/// Installed plugins, versions and artifacts in PostgreSQL.
pub struct PgCatalog(pub PgPool);

fn failed(e: sqlx::Error) -> ReindexError {
    ReindexError::Store(BackendError::from(e).into())
}

#[async_trait]
impl PluginCatalog for PgCatalog {
    async fn active(&self) -> Result<Vec<StoredPlugin>, BackendError> {
        stored(&self.0, None, None).await
    }

    async fn active_of(&self, id: &str) -> Result<Option<StoredPlugin>, BackendError> {
        Ok(stored(&self.0, Some(id), None).await?.pop())
    }

    async fn stored_version(&self, id: &str, version: &str) -> Result<Option<StoredPlugin>, BackendError> {
        Ok(stored(&self.0, Some(id), Some(version)).await?.pop())
    }

    async fn versions(&self, id: &str) -> Result<Vec<VersionRow>, BackendError> {
        let rows = sqlx::query(
            "SELECT v.version, v.digest, a.size, v.installed_at, v.signer, v.manifest FROM plugin_versions v \
             JOIN plugin_artifacts a ON a.digest = v.digest WHERE v.plugin_id = $1 ORDER BY v.installed_at, v.version",
        )
        .bind(id)
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| VersionRow {
                version: r.get(0),
                digest: r.get(1),
                size: r.get::<i64, _>(2) as u64,
                installed_at: r.get(3),
                signer: r.get(4),
                manifest: r.get(5),
            })
            .collect())
    }

    async fn set_active(&self, id: &str, version: &str, pinned: bool, now: i64) -> Result<bool, BackendError> {
        let mut tx = self.0.begin().await?;
        let moved = sqlx::query(
            "UPDATE plugins SET active_version = $1, pinned = $2, updated_at = $3 WHERE id = $4 \
             AND EXISTS (SELECT 1 FROM plugin_versions WHERE plugin_id = $4 AND version = $1)",
        )
        .bind(version)
        .bind(pinned)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        announce(&mut tx, Topic::Plugins).await?;
        tx.commit().await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn versions_in_use(&self) -> Result<Vec<(String, String)>, BackendError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT plugin_id, version FROM tenant_plugins WHERE version IS NOT NULL ORDER BY plugin_id, version",
        )
        .fetch_all(&self.0)
        .await?)
    }

    async fn switch_tenant(&self, s: &TenantSwitch<'_>, reindex: &[Reindex]) -> Result<Vec<u64>, ReindexError> {
        let mut tx = self.0.begin().await.map_err(failed)?;
        let mut entries = Vec::with_capacity(reindex.len());
        for step in reindex {
            entries.push(super::documents::reindex(&mut tx, s.tenant, s.plugin, step).await?);
        }
        // Only over the version the move was decided against.
        let moved = match s.from {
            Some(from) => sqlx::query(
                "UPDATE tenant_plugins SET version = $1, enabled = COALESCE($2, enabled), updated_at = $3 \
                 WHERE tenant_id = $4 AND plugin_id = $5 AND version = $6",
            )
            .bind(s.to)
            .bind(s.enabled)
            .bind(s.now)
            .bind(s.tenant)
            .bind(s.plugin)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(failed)?,
            None => sqlx::query(
                "INSERT INTO tenant_plugins AS t (tenant_id, plugin_id, enabled, updated_at, version) \
                 VALUES ($1, $2, COALESCE($3, FALSE), $4, $5) \
                 ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET version = excluded.version, \
                 enabled = COALESCE($3, t.enabled), updated_at = excluded.updated_at \
                 WHERE t.version IS NULL",
            )
            .bind(s.tenant)
            .bind(s.plugin)
            .bind(s.enabled)
            .bind(s.now)
            .bind(s.to)
            .execute(&mut *tx)
            .await
            .map_err(failed)?,
        };
        if moved.rows_affected() != 1 {
            let found: Option<String> =
                sqlx::query_scalar("SELECT version FROM tenant_plugins WHERE tenant_id = $1 AND plugin_id = $2")
                    .bind(s.tenant)
                    .bind(s.plugin)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(failed)?
                    .flatten();
            return Err(ReindexError::Superseded { plugin: s.plugin.to_owned(), found });
        }
        // Hosts load the version before they route the tenant to it (see `cluster::Topic`).
        announce(&mut tx, Topic::Plugins).await.map_err(failed)?;
        announce(&mut tx, Topic::Tenancy).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(entries)
    }

    async fn heads(&self) -> Result<Vec<PluginHead>, BackendError> {
        let rows = sqlx::query(
            "SELECT p.id, v.digest, p.enabled, p.updated_at, p.pinned FROM plugins p \
             JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = p.active_version ORDER BY p.id",
        )
        .fetch_all(&self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PluginHead {
                id: r.get("id"),
                digest: r.get("digest"),
                enabled: r.get("enabled"),
                updated_at: r.get("updated_at"),
                pinned: r.get("pinned"),
            })
            .collect())
    }

    async fn digest_of(&self, id: &str, version: &str) -> Result<Option<String>, BackendError> {
        Ok(sqlx::query_scalar("SELECT digest FROM plugin_versions WHERE plugin_id = $1 AND version = $2")
            .bind(id)
            .bind(version)
            .fetch_optional(&self.0)
            .await?)
    }

    async fn activate(&self, v: &NewVersion<'_>) -> Result<(), ReindexError> {
        let mut tx = self.0.begin().await.map_err(failed)?;
        sqlx::query(
            "INSERT INTO plugin_artifacts (digest, bytes, size, uploaded_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(v.digest)
        .bind(v.bytes)
        .bind(v.bytes.len() as i64)
        .bind(v.now)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        sqlx::query(
            "INSERT INTO plugin_versions (plugin_id, version, digest, manifest, installed_at, signer) VALUES ($1, $2, $3, $4, $5, $6) \
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
            Some(replaced) => sqlx::query(
                "UPDATE plugins SET active_version = CASE WHEN pinned THEN active_version ELSE $1 END, updated_at = $2 \
                 WHERE id = $3 AND active_version = $4",
            )
                .bind(v.version)
                .bind(v.now)
                .bind(v.id)
                .bind(replaced)
                .execute(&mut *tx)
                .await
                .map_err(failed)?,
            None => sqlx::query(
                "INSERT INTO plugins (id, active_version, enabled, installed_at, updated_at) VALUES ($1, $2, TRUE, $3, $3) \
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
            let found: Option<String> = sqlx::query_scalar("SELECT active_version FROM plugins WHERE id = $1")
                .bind(v.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed)?;
            return Err(ReindexError::Superseded { plugin: v.id.to_owned(), found });
        }
        announce(&mut tx, Topic::Plugins).await.map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(())
    }

    async fn set_enabled(&self, id: &str, enabled: bool, now: i64) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        sqlx::query("UPDATE plugins SET enabled = $1, updated_at = $2 WHERE id = $3")
            .bind(enabled)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, Topic::Plugins).await?;
        tx.commit().await?;
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
            "INSERT INTO trusted_keys (name, public_key, added_at, added_by) VALUES ($1, $2, $3, $4) \
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
        let gone = sqlx::query("DELETE FROM trusted_keys WHERE name = $1").bind(name).execute(&self.0).await?;
        Ok(gone.rows_affected() == 1)
    }

    async fn remove(&self, id: &str, purge: bool, secrets: &[String]) -> Result<(), BackendError> {
        let mut tx = self.0.begin().await?;
        sqlx::query("DELETE FROM plugins WHERE id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM plugin_versions WHERE plugin_id = $1").bind(id).execute(&mut *tx).await?;
        if purge {
            sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = $1").bind(id).execute(&mut *tx).await?;
        } else {
            for name in secrets {
                sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = $1 AND name = $2")
                    .bind(id)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM plugin_artifacts WHERE digest NOT IN (SELECT digest FROM plugin_versions)")
            .execute(&mut *tx)
            .await?;
        announce(&mut tx, Topic::Plugins).await?;
        announce(&mut tx, Topic::Settings).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The active versions of every plugin, or of `id`, or `id` at `version`, with their
/// artifacts.
async fn stored(pool: &PgPool, id: Option<&str>, version: Option<&str>) -> Result<Vec<StoredPlugin>, BackendError> {
    let rows = sqlx::query(
        "SELECT p.id, p.enabled, p.installed_at, p.updated_at, p.pinned, v.version, v.digest, v.manifest, v.signer, a.bytes \
         FROM plugins p JOIN plugin_versions v ON v.plugin_id = p.id AND v.version = COALESCE($2, p.active_version) \
         JOIN plugin_artifacts a ON a.digest = v.digest WHERE $1::text IS NULL OR p.id = $1 ORDER BY p.id",
    )
    .bind(id)
    .bind(version)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredPlugin {
            id: r.get("id"),
            enabled: r.get("enabled"),
            installed_at: r.get("installed_at"),
            updated_at: r.get("updated_at"),
            version: r.get("version"),
            digest: r.get("digest"),
            manifest: r.get("manifest"),
            bytes: r.get("bytes"),
            signer: r.get("signer"),
            pinned: r.get("pinned"),
        })
        .collect())
}

/// A migration's move, in its commit's transaction (see `jobs::TenantMove`): the tenant's
/// index entries rewritten for the new version, then its row moved if it still runs `from`.
pub(super) async fn commit_move(
    conn: &mut sqlx::PgConnection,
    scope: &crate::storage::Scope,
    tenant_move: &crate::jobs::TenantMove,
    now: i64,
) -> Result<(), crate::storage::StoreError> {
    use crate::storage::StoreError;
    for step in &tenant_move.reindex {
        super::documents::reindex(&mut *conn, &scope.tenant, &scope.plugin, step).await.map_err(|e| match e {
            ReindexError::Store(s) => s,
            ReindexError::Superseded { found, .. } => StoreError::MoveSuperseded { found },
            mismatch @ ReindexError::Mismatch { .. } => StoreError::IndexDataMismatch(mismatch.to_string()),
        })?;
    }
    let db = |e: sqlx::Error| StoreError::from(BackendError::from(e));
    let moved = sqlx::query(
        "UPDATE tenant_plugins SET version = $1, updated_at = $2 WHERE tenant_id = $3 AND plugin_id = $4 AND version = $5",
    )
    .bind(&tenant_move.to)
    .bind(now)
    .bind(&scope.tenant)
    .bind(&scope.plugin)
    .bind(&tenant_move.from)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    if moved.rows_affected() != 1 {
        let found: Option<String> =
            sqlx::query_scalar("SELECT version FROM tenant_plugins WHERE tenant_id = $1 AND plugin_id = $2")
                .bind(&scope.tenant)
                .bind(&scope.plugin)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?
                .flatten();
        return Err(StoreError::MoveSuperseded { found });
    }
    // Hosts load the version before they route the tenant to it (see `cluster::Topic`).
    announce(&mut *conn, Topic::Plugins).await.map_err(db)?;
    announce(&mut *conn, Topic::Tenancy).await.map_err(db)?;
    Ok(())
}
