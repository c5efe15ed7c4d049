//! Documents on PostgreSQL. So far: rewriting a plugin's index entries and full-text rows when
//! a new version's definitions become active (the catalog's install transaction).

use crate::storage::index::CollectionIndexes;
use crate::storage::search::SearchText;
use crate::storage::{ReindexError, StoreError};
use sqlx::PgConnection;
use std::collections::BTreeSet;

fn db_error(e: sqlx::Error) -> StoreError {
    crate::backend::BackendError::from(e).into()
}

/// Rows per multi-row statement (PostgreSQL allows 65,535 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// Rewrites the index entries named `rebuild` of every document a plugin stores in
/// `collection` (in every tenant) from `indexes`, after dropping the entries named `drop`, in
/// the caller's transaction; the same rule as SQLite's. A document whose field does not fit
/// its new type fails it, named.
pub(super) async fn reindex(
    conn: &mut PgConnection,
    plugin: &str,
    collection: &str,
    indexes: &CollectionIndexes,
    drop: &[String],
    rebuild: &BTreeSet<String>,
) -> Result<u64, ReindexError> {
    let search_index = crate::storage::index::SEARCH_INDEX;
    if indexes.search.is_none() || drop.iter().chain(rebuild).any(|name| name == search_index) {
        sqlx::query("DELETE FROM search_rows WHERE plugin_id = $1 AND collection = $2")
            .bind(plugin)
            .bind(collection)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    let search = rebuild.contains(search_index).then_some(indexes.search.as_ref()).flatten();
    let names: Vec<&str> = drop.iter().chain(rebuild).filter(|n| *n != search_index).map(String::as_str).collect();
    if !names.is_empty() {
        sqlx::query("DELETE FROM document_index WHERE plugin_id = $1 AND collection = $2 AND field = ANY($3)")
            .bind(plugin)
            .bind(collection)
            .bind(&names)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    sqlx::query(
        "INSERT INTO index_signatures (plugin_id, collection, signature) VALUES ($1, $2, $3) \
         ON CONFLICT (plugin_id, collection) DO UPDATE SET signature = excluded.signature",
    )
    .bind(plugin)
    .bind(collection)
    .bind(indexes.signature())
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    if rebuild.is_empty() {
        return Ok(0);
    }
    let mut entries = 0;
    let mut after: (String, String) = (String::new(), String::new());
    loop {
        let batch: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT tenant_id, key, body, id FROM documents WHERE plugin_id = $1 AND collection = $2 \
             AND (tenant_id, key) > ($3, $4) ORDER BY tenant_id, key LIMIT 500",
        )
        .bind(plugin)
        .bind(collection)
        .bind(&after.0)
        .bind(&after.1)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        let Some((tenant, key, ..)) = batch.last() else { break };
        after = (tenant.clone(), key.clone());
        let mut index_rows: Vec<(&str, String, String, &str)> = Vec::new();
        let mut search_rows: Vec<(i64, &str, SearchText)> = Vec::new();
        for (tenant, key, body, id) in &batch {
            let value: serde_json::Value = serde_json::from_str(body)
                .map_err(|e| StoreError::Internal(format!("stored document {collection}/{key} is not JSON: {e}")))?;
            let mismatch = |(field, reason)| ReindexError::Mismatch {
                tenant: tenant.clone(),
                collection: collection.to_owned(),
                key: key.clone(),
                field,
                reason,
            };
            for (name, text) in indexes.entries(&value).map_err(mismatch)? {
                if rebuild.contains(&name) {
                    index_rows.push((tenant, name, text, key));
                }
            }
            if let Some(fields) = search {
                let text = fields.extract(&value);
                if text.iter().any(|t| !t.is_empty()) {
                    search_rows.push((*id, tenant, text));
                }
            }
        }
        for chunk in index_rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO document_index (tenant_id, plugin_id, collection, field, value, key) ",
            );
            q.push_values(chunk, |mut row, (tenant, name, text, key)| {
                row.push_bind(*tenant)
                    .push_bind(plugin)
                    .push_bind(collection)
                    .push_bind(name)
                    .push_bind(text)
                    .push_bind(*key);
            });
            q.build().execute(&mut *conn).await.map_err(db_error)?;
            entries += chunk.len() as u64;
        }
        for chunk in search_rows.chunks(ROWS_PER_STATEMENT) {
            insert_search_rows(&mut *conn, plugin, collection, chunk).await?;
            entries += chunk.len() as u64;
        }
    }
    Ok(entries)
}

/// Adds full-text rows: (document id, tenant, text). The text is stored as the query parser
/// cuts words (`words_only`), so PostgreSQL's parser finds the same words.
async fn insert_search_rows(
    conn: &mut PgConnection,
    plugin: &str,
    collection: &str,
    rows: &[(i64, &str, SearchText)],
) -> Result<(), StoreError> {
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO search_rows (document_id, tenant_id, plugin_id, collection, c0, c1, c2, c3) ",
    );
    q.push_values(rows, |mut row, (id, tenant, text)| {
        row.push_bind(*id).push_bind(*tenant).push_bind(plugin).push_bind(collection);
        for field in text.iter() {
            row.push_bind(crate::storage::search::words_only(field));
        }
    });
    q.build().execute(&mut *conn).await.map_err(db_error)?;
    Ok(())
}
