//! The behaviour every [`Backend`] must have, concern by concern. Each backend's tests call
//! [`run_all`] on a freshly opened, empty backend (the PostgreSQL backend, while it is
//! incomplete, the parts for the concerns it implements).
//!
//! The document store's own suite ([`crate::storage::conformance`]) runs first; then each
//! concern's checks, and last the commit that spans concerns: documents, events with their
//! deliveries, jobs and audit entries land together or not at all, and a worker that lost
//! its lease commits nothing.

use super::Backend;
use crate::audit::{AdminAction, AuditRows, NewAuditEntry};
use crate::identity::{NewToken, TokenRows};
use crate::jobs::store::{ClaimPolicy, JobFilter, JobQueue, JobStoreError};
use crate::jobs::{Background, JobKind, JobStatus, NewEvent, NewJob};
use crate::plugins::{NewVersion, PluginCatalog};
use crate::settings::SettingRows;
use crate::storage::{Condition, ReindexError, Scope, StoreError, Write, WriteAudit, WriteOp};
use crate::tenancy::{TenancyRows, Tenant, TenantStatus};
use crate::users::{User, UserRows};
use std::collections::BTreeSet;

/// Runs every check; panics with the name of the first one that fails.
pub async fn run_all(backend: &Backend) {
    crate::storage::conformance::run_all(backend.documents.as_ref()).await;
    backend.database.ping().await.expect("a fresh backend answers");
    directory(backend.tenancy.as_ref(), backend.tokens.as_ref(), backend.users.as_ref()).await;
    the_audit_log_filters_and_pages(backend.audit.as_ref()).await;
    settings_change_all_or_nothing(backend.settings.as_ref()).await;
    plugin_versions_activate_and_remove(backend.catalog.as_ref(), backend.settings.as_ref()).await;
    queue(backend.jobs.as_ref()).await;
    a_commit_lands_documents_events_jobs_and_audit_together(backend).await;
    a_commit_with_a_lost_lease_applies_nothing(backend).await;
}

/// Tenants, enablement, grants, tokens and users.
pub async fn directory(tenancy: &dyn TenancyRows, tokens: &dyn TokenRows, users: &dyn UserRows) {
    tenants_enablement_and_grants(tenancy).await;
    tokens_are_found_by_prefix_with_their_tenants_state(tokens, tenancy).await;
    users_and_the_sign_in_throttle(users, tenancy).await;
    a_disabled_or_reset_user_loses_its_sessions(users, tokens, tenancy).await;
}

fn tenant(id: &str) -> Tenant {
    Tenant { id: id.into(), name: format!("Tenant {id}"), status: TenantStatus::Active, created_at: 1_000 }
}

async fn tenants_enablement_and_grants(rows: &dyn TenancyRows) {
    assert!(rows.insert_tenant(&tenant("cf-b")).await.unwrap(), "tenants: a new id is inserted");
    assert!(rows.insert_tenant(&tenant("cf-a")).await.unwrap());
    let taken = Tenant { name: "Another name".into(), ..tenant("cf-a") };
    assert!(!rows.insert_tenant(&taken).await.unwrap(), "tenants: a taken id is refused");
    assert_eq!(rows.tenant("cf-a").await.unwrap().unwrap().name, "Tenant cf-a", "tenants: the first insert stands");
    let ids: Vec<String> =
        rows.tenants().await.unwrap().into_iter().map(|t| t.id).filter(|i| i.starts_with("cf-")).collect();
    assert_eq!(ids, ["cf-a", "cf-b"], "tenants: listed by id");
    assert!(rows.set_status("cf-a", TenantStatus::Suspended).await.unwrap());
    assert_eq!(rows.tenant("cf-a").await.unwrap().unwrap().status, TenantStatus::Suspended);
    assert!(!rows.set_status("cf-none", TenantStatus::Active).await.unwrap(), "tenants: no such tenant");
    assert!(rows.tenant("cf-none").await.unwrap().is_none());

    rows.set_enabled("cf-a", "crm", true, 1).await.unwrap();
    rows.set_enabled("cf-a", "hr", true, 1).await.unwrap();
    rows.set_enabled("cf-b", "crm", true, 1).await.unwrap();
    rows.set_enabled("cf-a", "hr", false, 2).await.unwrap();
    let enabled = || async {
        let mut on: Vec<(String, String)> = rows
            .plugin_rows()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.enabled && r.tenant.starts_with("cf-"))
            .map(|r| (r.tenant, r.plugin))
            .collect();
        on.sort();
        on
    };
    assert_eq!(
        enabled().await,
        [("cf-a".into(), "crm".into()), ("cf-b".into(), "crm".into())],
        "enablement: switched off is off"
    );
    let off = rows.plugin_rows().await.unwrap().into_iter().find(|r| r.tenant == "cf-a" && r.plugin == "hr");
    assert_eq!(off.map(|r| (r.enabled, r.version)), Some((false, None)), "enablement: a switch records no version");
    rows.forget_plugin("crm").await.unwrap();
    assert!(enabled().await.is_empty(), "enablement: forgetting a plugin forgets every tenant's");

    let perms = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    rows.replace_grants("cf-a", "agent", &perms(&["crm.read", "crm.write"]), 1).await.unwrap();
    rows.replace_grants("cf-b", "agent", &perms(&["crm.read"]), 1).await.unwrap();
    rows.replace_grants("cf-a", "agent", &perms(&["crm.read"]), 2).await.unwrap();
    let mut grants = rows.grants().await.unwrap();
    grants.sort();
    assert_eq!(
        grants,
        [("cf-a".into(), "agent".into(), "crm.read".into()), ("cf-b".into(), "agent".into(), "crm.read".into())],
        "grants: replaced, per tenant"
    );
    rows.replace_grants("cf-a", "agent", &BTreeSet::new(), 3).await.unwrap();
    assert_eq!(rows.grants().await.unwrap().len(), 1, "grants: an empty set removes them");
}

async fn tokens_are_found_by_prefix_with_their_tenants_state(rows: &dyn TokenRows, tenancy: &dyn TenancyRows) {
    let before = rows.count().await.unwrap();
    tenancy.insert_tenant(&tenant("cf-tok")).await.unwrap();
    tenancy.insert_tenant(&tenant("cf-other")).await.unwrap();
    let token = |id: &'static str, prefix: &'static str, tenant: &'static str, created_at: i64| NewToken {
        id,
        prefix,
        secret_hash: "hash",
        name: "svc",
        role: "member",
        tenant,
        created_at,
        expires_at: Some(9_000),
        user_id: None,
    };
    rows.insert(&token("tok_cf1", "cf00000001", "cf-tok", 10)).await.unwrap();
    rows.insert(&token("tok_cf2", "cf00000002", "cf-tok", 20)).await.unwrap();
    rows.insert(&token("tok_cf3", "cf00000003", "cf-other", 30)).await.unwrap();
    assert_eq!(rows.count().await.unwrap(), before + 3);
    let listed: Vec<String> = rows.tokens("cf-tok").await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(listed, ["tok_cf2", "tok_cf1"], "tokens: a tenant's, newest first");

    let found = rows.by_prefix("cf00000001").await.unwrap().expect("tokens: found by prefix");
    assert_eq!((found.id.as_str(), found.secret_hash.as_str(), found.expires_at), ("tok_cf1", "hash", Some(9_000)));
    assert!(found.tenant_active && found.revoked_at.is_none() && found.last_used_at.is_none());
    assert!(rows.by_prefix("cf0000000f").await.unwrap().is_none());

    rows.touch("tok_cf1", 50).await.unwrap();
    assert_eq!(rows.by_prefix("cf00000001").await.unwrap().unwrap().last_used_at, Some(50));
    assert!(!rows.revoke("cf-other", "tok_cf1", 60).await.unwrap(), "tokens: another tenant cannot revoke it");
    assert!(rows.revoke("cf-tok", "tok_cf1", 60).await.unwrap());
    assert!(rows.revoke("cf-tok", "tok_cf1", 70).await.unwrap());
    assert_eq!(
        rows.by_prefix("cf00000001").await.unwrap().unwrap().revoked_at,
        Some(60),
        "tokens: first revocation stands"
    );

    tenancy.set_status("cf-tok", TenantStatus::Suspended).await.unwrap();
    assert!(!rows.by_prefix("cf00000002").await.unwrap().unwrap().tenant_active, "tokens: a suspended tenant shows");
}

fn member(tenant: &str, id: &str, name: &str) -> User {
    User {
        id: id.into(),
        tenant: tenant.into(),
        username: name.into(),
        display_name: format!("User {name}"),
        role: "member".into(),
        created_at: 5,
        disabled_at: None,
    }
}

async fn users_and_the_sign_in_throttle(rows: &dyn UserRows, tenancy: &dyn TenancyRows) {
    tenancy.insert_tenant(&tenant("cf-usr")).await.unwrap();
    let user = |id: &str, name: &str| member("cf-usr", id, name);
    assert!(rows.insert(&user("usr_cf2", "zoe"), "hash-zoe").await.unwrap());
    assert!(rows.insert(&user("usr_cf1", "ann"), "hash-ann").await.unwrap());
    assert!(!rows.insert(&user("usr_cf3", "ann"), "other").await.unwrap(), "users: a username is unique per tenant");
    let names: Vec<String> = rows.users("cf-usr").await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["ann", "zoe"], "users: by username");
    let (found, hash) = rows.credentials("cf-usr", "ann").await.unwrap().expect("users: credentials");
    assert_eq!((found.id.as_str(), hash.as_str(), found.display_name.as_str()), ("usr_cf1", "hash-ann", "User ann"));
    assert!(rows.credentials("cf-usr", "nobody").await.unwrap().is_none());

    // Three failures lock at the third until now + lockout; after it ends, counting restarts.
    assert_eq!(rows.locked_until("cf-usr", "ann").await.unwrap(), None);
    rows.record_failure("cf-usr", "ann", 100, 3, 1_000).await.unwrap();
    rows.record_failure("cf-usr", "ann", 101, 3, 1_000).await.unwrap();
    assert_eq!(rows.locked_until("cf-usr", "ann").await.unwrap(), None, "throttle: not yet");
    rows.record_failure("cf-usr", "ann", 102, 3, 1_000).await.unwrap();
    assert_eq!(rows.locked_until("cf-usr", "ann").await.unwrap(), Some(1_102), "throttle: locked at the third");
    rows.record_failure("cf-usr", "ann", 2_000, 3, 1_000).await.unwrap();
    assert_eq!(rows.locked_until("cf-usr", "ann").await.unwrap(), None, "throttle: an ended lockout counts from one");
    rows.clear_failures("cf-usr", "ann").await.unwrap();
    assert_eq!(rows.locked_until("cf-usr", "ann").await.unwrap(), None);

    tenancy.set_status("cf-usr", TenantStatus::Suspended).await.unwrap();
    assert!(rows.credentials("cf-usr", "ann").await.unwrap().is_none(), "users: no sign-in to a suspended tenant");
}

async fn a_disabled_or_reset_user_loses_its_sessions(
    users: &dyn UserRows,
    tokens: &dyn TokenRows,
    tenancy: &dyn TenancyRows,
) {
    tenancy.insert_tenant(&tenant("cf-acc")).await.unwrap();
    let user = |id: &str, name: &str| member("cf-acc", id, name);
    assert!(users.insert(&user("usr_acc1", "ann"), "hash-1").await.unwrap());
    assert!(users.insert(&user("usr_acc2", "bob"), "hash-b").await.unwrap());
    let session = |id: &'static str, prefix: &'static str, user: &'static str| NewToken {
        id,
        prefix,
        secret_hash: "hash",
        name: "sign-in",
        role: "member",
        tenant: "cf-acc",
        created_at: 10,
        expires_at: None,
        user_id: Some(user),
    };
    tokens.insert(&session("tok_acc1", "ac00000001", "usr_acc1")).await.unwrap();
    tokens.insert(&session("tok_acc2", "ac00000002", "usr_acc2")).await.unwrap();
    tokens.insert(&session("tok_acc3", "ac00000003", "usr_acc1")).await.unwrap();
    assert!(tokens.revoke("cf-acc", "tok_acc3", 15).await.unwrap());

    assert_eq!(users.user("cf-acc", "usr_acc1").await.unwrap().unwrap().username, "ann");
    assert!(users.user("cf-other", "usr_acc1").await.unwrap().is_none(), "users: by id within the tenant only");

    // A reset replaces the hash, lifts a lockout and revokes the user's live sessions only.
    users.record_failure("cf-acc", "ann", 20, 1, 1_000).await.unwrap();
    assert!(users.set_password("cf-acc", "usr_acc1", "hash-2", 30).await.unwrap());
    assert!(!users.set_password("cf-other", "usr_acc1", "hash-x", 30).await.unwrap(), "users: another tenant's user");
    assert_eq!(users.credentials("cf-acc", "ann").await.unwrap().unwrap().1, "hash-2");
    assert_eq!(users.locked_until("cf-acc", "ann").await.unwrap(), None, "reset: the lockout is lifted");
    assert_eq!(tokens.by_prefix("ac00000001").await.unwrap().unwrap().revoked_at, Some(30), "reset: sessions end");
    assert_eq!(
        tokens.by_prefix("ac00000003").await.unwrap().unwrap().revoked_at,
        Some(15),
        "reset: revoked stays as was"
    );
    assert_eq!(tokens.by_prefix("ac00000002").await.unwrap().unwrap().revoked_at, None, "reset: other users untouched");

    // Disabling hides the credentials, revokes sessions and keeps the first time; enabling undoes it.
    tokens.insert(&session("tok_acc4", "ac00000004", "usr_acc2")).await.unwrap();
    assert!(users.set_disabled("cf-acc", "usr_acc2", Some(40), 40).await.unwrap());
    assert!(users.set_disabled("cf-acc", "usr_acc2", Some(50), 50).await.unwrap());
    assert_eq!(users.user("cf-acc", "usr_acc2").await.unwrap().unwrap().disabled_at, Some(40), "disable: idempotent");
    assert!(users.credentials("cf-acc", "bob").await.unwrap().is_none(), "disable: no sign-in");
    let row = tokens.by_prefix("ac00000004").await.unwrap().unwrap();
    assert_eq!((row.revoked_at, row.user_disabled), (Some(40), true), "disable: sessions end");
    assert!(!users.set_disabled("cf-other", "usr_acc2", None, 60).await.unwrap(), "users: another tenant's user");
    assert!(users.set_disabled("cf-acc", "usr_acc2", None, 60).await.unwrap());
    assert_eq!(users.user("cf-acc", "usr_acc2").await.unwrap().unwrap().disabled_at, None);
    assert!(users.credentials("cf-acc", "bob").await.unwrap().is_some(), "enable: sign-in again");
    assert!(!tokens.by_prefix("ac00000004").await.unwrap().unwrap().user_disabled);
    let listed: Vec<Option<i64>> = users.users("cf-acc").await.unwrap().into_iter().map(|u| u.disabled_at).collect();
    assert_eq!(listed, [None, None]);
}

/// Appending and reading the audit log.
pub async fn the_audit_log_filters_and_pages(rows: &dyn AuditRows) {
    let action = |tenant: &'static str, action: &'static str| AdminAction {
        tenant: Some(tenant),
        action,
        plugin: None,
        detail: serde_json::json!({ "n": 1 }),
    };
    for (tenant, name) in [("cf-aud", "tenant.create"), ("cf-aud2", "tenant.create"), ("cf-aud", "token.issue")] {
        let a = action(tenant, name);
        let entry = NewAuditEntry { at: 7, actor: "tok_cf", actor_name: "cf", request_id: "req_cf", action: &a };
        rows.append(&entry).await.unwrap();
    }
    // A backend may hold entries back while an older transaction runs (PostgreSQL: one of
    // any database on the server), so that no page skips one committing later: wait for them.
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mine = loop {
        let page = rows.entries(Some("cf-aud"), None, 0, 10).await.unwrap();
        if page.len() >= 2 || std::time::Instant::now() > settled {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        mine.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["tenant.create", "token.issue"],
        "audit: oldest first"
    );
    assert_eq!(mine[0].detail, Some(serde_json::json!({ "n": 1 })), "audit: detail round-trips");
    assert!(mine[0].id < mine[1].id);
    let after = rows.entries(Some("cf-aud"), None, mine[0].id, 10).await.unwrap();
    assert_eq!(after.len(), 1, "audit: pages after an id");
    let creates = rows.entries(None, Some("tenant.create"), 0, 10).await.unwrap();
    assert_eq!(creates.iter().filter(|e| e.tenant.as_deref().is_some_and(|t| t.starts_with("cf-aud"))).count(), 2);
    assert_eq!(rows.entries(None, None, 0, 1).await.unwrap().len(), 1, "audit: limit");

    // Newest first, from the newest or before an id, with the same filters.
    let newest = rows.entries_before(Some("cf-aud"), None, None, 10).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.id).collect::<Vec<_>>(), [mine[1].id, mine[0].id], "audit: newest first");
    let older = rows.entries_before(Some("cf-aud"), None, Some(mine[1].id), 10).await.unwrap();
    assert_eq!(older.iter().map(|e| e.id).collect::<Vec<_>>(), [mine[0].id], "audit: pages before an id");
    let latest = rows.entries_before(None, Some("tenant.create"), None, 1).await.unwrap();
    assert_eq!((latest.len(), latest[0].action.as_str()), (1, "tenant.create"), "audit: newest first, filtered");
}

/// Plugin settings per tenant.
pub async fn settings_change_all_or_nothing(rows: &dyn SettingRows) {
    rows.apply("cf-set", "crm", &[("a", Some("1".into())), ("b", Some("2".into()))], 10, "tok_1").await.unwrap();
    rows.apply("cf-set", "hr", &[("a", Some("9".into()))], 10, "tok_1").await.unwrap();
    rows.apply("cf-set", "crm", &[("a", Some("3".into())), ("b", None)], 20, "tok_2").await.unwrap();
    let stored = rows.stored("cf-set", "crm").await.unwrap();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["a"], "settings: removed by None");
    assert_eq!(
        (stored["a"].value.as_str(), stored["a"].updated_at, stored["a"].updated_by.as_str()),
        ("3", 20, "tok_2")
    );
    assert_eq!(rows.stored("cf-set", "hr").await.unwrap()["a"].value, "9", "settings: per plugin");
    assert!(rows.stored("cf-other", "crm").await.unwrap().is_empty(), "settings: per tenant");
}

/// Installing, upgrading, switching and removing plugins.
pub async fn plugin_versions_activate_and_remove(catalog: &dyn PluginCatalog, settings: &dyn SettingRows) {
    let version = |v: &'static str, digest: &'static str, bytes: &'static [u8]| NewVersion {
        id: "cf-plugin",
        version: v,
        digest,
        manifest: "id = \"cf-plugin\"",
        bytes,
        now: 100,
        replaces: None,
        signer: None,
    };
    catalog.activate(&version("1.0.0", "d1", b"\0asm one")).await.unwrap();
    let active = catalog.active().await.unwrap();
    let mine = active.iter().find(|p| p.id == "cf-plugin").expect("catalog: installed");
    assert!(mine.enabled, "catalog: a new plugin is enabled");
    assert_eq!(
        (mine.version.as_str(), mine.digest.as_str(), mine.bytes.as_slice()),
        ("1.0.0", "d1", &b"\0asm one"[..])
    );
    catalog.set_enabled("cf-plugin", false, 150).await.unwrap();
    catalog
        .activate(&NewVersion {
            now: 200,
            replaces: Some("1.0.0"),
            signer: Some("cf-publisher"),
            ..version("1.1.0", "d2", b"\0asm two")
        })
        .await
        .unwrap();
    // Installs decided against a version that is no longer active (another host's install
    // landed first) record nothing.
    for stale in [None, Some("1.0.0")] {
        let lost =
            catalog.activate(&NewVersion { now: 250, replaces: stale, ..version("1.2.0", "d3", b"\0asm three") }).await;
        assert!(
            matches!(&lost, Err(ReindexError::Superseded { found: Some(f), .. }) if f == "1.1.0"),
            "catalog: an install over {stale:?} is superseded: {lost:?}"
        );
    }
    assert_eq!(
        catalog.digest_of("cf-plugin", "1.2.0").await.unwrap(),
        None,
        "catalog: a superseded install records nothing"
    );
    let active = catalog.active().await.unwrap();
    let mine = active.iter().find(|p| p.id == "cf-plugin").unwrap();
    assert_eq!((mine.version.as_str(), mine.digest.as_str()), ("1.1.0", "d2"), "catalog: the upgrade is active");
    assert_eq!(mine.signer.as_deref(), Some("cf-publisher"), "catalog: the version's signer is kept");
    assert_eq!(
        (mine.enabled, mine.installed_at, mine.updated_at),
        (false, 100, 200),
        "catalog: an upgrade keeps the switch"
    );
    assert_eq!(
        catalog.digest_of("cf-plugin", "1.0.0").await.unwrap().as_deref(),
        Some("d1"),
        "catalog: versions are kept"
    );
    assert_eq!(catalog.digest_of("cf-plugin", "2.0.0").await.unwrap(), None);
    let listed: Vec<_> = catalog
        .versions("cf-plugin")
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.digest, v.size, v.installed_at, v.signer))
        .collect();
    assert_eq!(
        listed,
        [
            ("1.0.0".into(), "d1".into(), 8, 100, None),
            ("1.1.0".into(), "d2".into(), 8, 200, Some("cf-publisher".into()))
        ],
        "catalog: every version, oldest first"
    );
    let old = catalog.stored_version("cf-plugin", "1.0.0").await.unwrap().expect("catalog: an older version is kept");
    assert_eq!((old.version.as_str(), old.bytes.as_slice()), ("1.0.0", &b"\0asm one"[..]));
    assert!(catalog.stored_version("cf-plugin", "9.0.0").await.unwrap().is_none());

    // A pinned active version stays active through a newer install, which is recorded.
    assert!(catalog.set_active("cf-plugin", "1.0.0", true, 300).await.unwrap(), "catalog: pinned");
    assert!(!catalog.set_active("cf-plugin", "9.0.0", true, 300).await.unwrap(), "catalog: not installed");
    catalog
        .activate(&NewVersion { now: 310, replaces: Some("1.0.0"), ..version("1.2.0", "d3", b"\0asm three") })
        .await
        .unwrap();
    let head = catalog.heads().await.unwrap().into_iter().find(|h| h.id == "cf-plugin").unwrap();
    assert_eq!((head.digest.as_str(), head.pinned), ("d1", true), "catalog: the pin holds");
    assert_eq!(catalog.digest_of("cf-plugin", "1.2.0").await.unwrap().as_deref(), Some("d3"));
    assert!(catalog.set_active("cf-plugin", "1.2.0", false, 320).await.unwrap(), "catalog: unpinned");
    let mine = catalog.active_of("cf-plugin").await.unwrap().unwrap();
    assert_eq!((mine.version.as_str(), mine.pinned), ("1.2.0", false));

    settings
        .apply("cf-cat", "cf-plugin", &[("key", Some("secret".into())), ("n", Some("1".into()))], 1, "t")
        .await
        .unwrap();
    catalog.remove("cf-plugin", false, &["key".to_owned()]).await.unwrap();
    assert!(catalog.active().await.unwrap().iter().all(|p| p.id != "cf-plugin"), "catalog: removed");
    assert_eq!(catalog.digest_of("cf-plugin", "1.0.0").await.unwrap(), None, "catalog: with its versions");
    let left = settings.stored("cf-cat", "cf-plugin").await.unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), ["n"], "catalog: secrets go, other settings stay unless purged");
    catalog.activate(&version("1.0.0", "d1", b"\0asm one")).await.unwrap();
    catalog.remove("cf-plugin", true, &[]).await.unwrap();
    assert!(settings.stored("cf-cat", "cf-plugin").await.unwrap().is_empty(), "catalog: purge removes settings");

    // Trusted keys: a name holds one key and a key one name.
    assert!(catalog.trust_key("cf-a", "ed25519:AAA", 5, "admin").await.unwrap(), "catalog: a key is trusted");
    for (name, key) in [("cf-a", "ed25519:AAA"), ("cf-a", "ed25519:BBB"), ("cf-b", "ed25519:AAA")] {
        assert!(!catalog.trust_key(name, key, 6, "admin").await.unwrap(), "catalog: {name} {key} is taken");
    }
    assert!(catalog.trust_key("cf-b", "ed25519:BBB", 7, "ops").await.unwrap());
    let keys = catalog.trusted_keys().await.unwrap();
    let names: Vec<_> = keys.iter().map(|k| (k.name.as_str(), k.public_key.as_str(), k.added_at)).collect();
    assert_eq!(names, [("cf-a", "ed25519:AAA", 5), ("cf-b", "ed25519:BBB", 7)], "catalog: trusted keys by name");
    assert!(catalog.distrust_key("cf-a").await.unwrap());
    assert!(!catalog.distrust_key("cf-a").await.unwrap(), "catalog: distrusting twice finds nothing");
    assert_eq!(catalog.trusted_keys().await.unwrap().len(), 1);
    catalog.distrust_key("cf-b").await.unwrap();
}

fn job(id: &str, tenant_plugin: &str, run_at: i64) -> NewJob {
    NewJob {
        id: id.into(),
        plugin: tenant_plugin.into(),
        kind: JobKind::Job,
        name: "work".into(),
        payload: "{}".into(),
        idempotency_key: None,
        event_id: None,
        run_at,
        max_attempts: 2,
        chain: 0,
        task: None,
    }
}

/// Claims, leases, failures, retries and schedules.
pub async fn queue(jobs: &dyn JobQueue) {
    jobs_are_claimed_once_and_taken_over_when_their_lease_ends(jobs).await;
    concurrent_claimers_take_disjoint_jobs(jobs).await;
    schedules_fire_once_per_tick(jobs).await;
    a_purge_cancels_only_its_scopes_queued_jobs(jobs).await;
}

async fn a_purge_cancels_only_its_scopes_queued_jobs(jobs: &dyn JobQueue) {
    // Due far in the future: no other check's claim takes them.
    let far = 1 << 50;
    for (tenant, id, plugin) in [
        ("cf-purge", "job_cfp1", "p"),
        ("cf-purge", "job_cfp2", "p"),
        ("cf-purge", "job_cfp3", "q"),
        ("cf-keep", "job_cfp4", "p"),
    ] {
        assert!(jobs.enqueue(tenant, &job(id, plugin, far), 1).await.unwrap());
    }
    assert_eq!(jobs.cancel_queued_of("cf-purge", "p", 2).await.unwrap(), 2, "jobs: the scope's queued jobs");
    for (tenant, id, status) in [
        ("cf-purge", "job_cfp1", JobStatus::Cancelled),
        ("cf-purge", "job_cfp3", JobStatus::Queued),
        ("cf-keep", "job_cfp4", JobStatus::Queued),
    ] {
        assert_eq!(jobs.get(tenant, id).await.unwrap().0.status, status, "jobs: {tenant}/{id}");
    }
    assert_eq!(jobs.cancel_queued_of("cf-purge", "p", 3).await.unwrap(), 0, "jobs: nothing left to cancel");
}

async fn jobs_are_claimed_once_and_taken_over_when_their_lease_ends(jobs: &dyn JobQueue) {
    let t = "cf-jobs";
    assert!(jobs.enqueue(t, &job("job_cf1", "p", 10), 1).await.unwrap());
    assert!(!jobs.enqueue(t, &job("job_cf1", "p", 10), 1).await.unwrap(), "jobs: an id is queued once");
    assert!(jobs.enqueue(t, &job("job_cf2", "p", 5_000), 1).await.unwrap());
    let policy = ClaimPolicy { limit: 10, tenant_room: 10, ..ClaimPolicy::default() };
    let claimed = jobs.claim("w1", 100, 1_000, &policy).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.lease.job_id.as_str()).collect::<Vec<_>>(), ["job_cf1"], "jobs: only due work");
    assert_eq!((claimed[0].lease.attempt, claimed[0].lease_until), (1, 1_100));
    assert!(jobs.claim("w2", 200, 1_000, &policy).await.unwrap().is_empty(), "jobs: a leased job is not claimed again");

    // The lease expires: another worker takes the job over; the first worker's outcome is void.
    let taken = jobs.claim("w2", 1_200, 1_000, &policy).await.unwrap();
    assert_eq!((taken.len(), taken[0].lease.attempt, taken[0].lease.owner.as_str()), (1, 2, "w2"));
    assert_eq!(jobs.fail(&claimed[0].lease, 1_300, "late", 1_400, false).await.unwrap(), None, "jobs: a lost lease");
    assert!(!jobs.defer(&claimed[0].lease, 1_300, "late", 1_400).await.unwrap());
    // Deferred without using an attempt, then failed for good.
    assert!(jobs.defer(&taken[0].lease, 1_300, "no room", 1_400).await.unwrap());
    let again = jobs.claim("w1", 1_400, 1_000, &policy).await.unwrap();
    assert_eq!(
        (again[0].lease.job_id.as_str(), again[0].lease.attempt),
        ("job_cf1", 2),
        "jobs: a deferral is no attempt"
    );
    assert_eq!(jobs.fail(&again[0].lease, 1_401, "fatal", 1_500, true).await.unwrap(), Some(JobStatus::Dead));
    let (record, runs) = jobs.get(t, "job_cf1").await.unwrap();
    assert_eq!((record.status, record.last_error.as_deref()), (JobStatus::Dead, Some("fatal")));
    let outcomes: Vec<_> = runs.iter().map(|r| r.outcome.map(|o| o.as_str())).collect();
    assert_eq!(outcomes, [Some("lost"), Some("deferred"), Some("failed")], "jobs: one run per attempt");

    // A failure with attempts left goes back to the queue; the last one is dead; retry revives.
    let first = jobs.claim("w1", 5_000, 1_000, &policy).await.unwrap();
    assert_eq!(first[0].lease.job_id, "job_cf2");
    assert_eq!(jobs.fail(&first[0].lease, 5_001, "boom", 5_100, false).await.unwrap(), Some(JobStatus::Queued));
    assert!(jobs.claim("w1", 5_050, 1_000, &policy).await.unwrap().is_empty(), "jobs: not before its retry time");
    let last = jobs.claim("w1", 5_100, 1_000, &policy).await.unwrap();
    assert_eq!(jobs.fail(&last[0].lease, 5_101, "boom", 5_200, false).await.unwrap(), Some(JobStatus::Dead));
    assert!(matches!(jobs.cancel(t, "job_cf2", 5_102).await, Err(JobStoreError::WrongState { .. })));
    assert_eq!(jobs.retry(t, "job_cf2", 5_103).await.unwrap().status, JobStatus::Queued);
    assert!(matches!(jobs.get("cf-other", "job_cf2").await, Err(JobStoreError::NotFound(_))), "jobs: per tenant");
    let filter = JobFilter { status: Some(JobStatus::Queued), limit: 10, ..JobFilter::default() };
    assert_eq!(jobs.list(t, &filter).await.unwrap().len(), 1);
    assert_eq!(jobs.cancel(t, "job_cf2", 5_104).await.unwrap().status, JobStatus::Cancelled);
    assert!(jobs.count(JobStatus::Cancelled).await.unwrap() >= 1);
}

async fn concurrent_claimers_take_disjoint_jobs(jobs: &dyn JobQueue) {
    for i in 0..40 {
        jobs.enqueue("cf-race", &job(&format!("job_cf_race{i:02}"), "p", 0), 0).await.unwrap();
    }
    let policy = ClaimPolicy { limit: 8, tenant_room: 8, ..ClaimPolicy::default() };
    let mut seen = BTreeSet::new();
    loop {
        let (a, b, c) = tokio::join!(
            jobs.claim("wa", 10, 60_000, &policy),
            jobs.claim("wb", 10, 60_000, &policy),
            jobs.claim("wc", 10, 60_000, &policy)
        );
        let batch: Vec<_> = [a.unwrap(), b.unwrap(), c.unwrap()].into_iter().flatten().collect();
        if batch.is_empty() {
            break;
        }
        for claimed in batch.into_iter().filter(|j| j.tenant == "cf-race") {
            assert!(seen.insert(claimed.lease.job_id.clone()), "claims: {} was claimed twice", claimed.lease.job_id);
        }
    }
    assert_eq!(seen.len(), 40, "claims: every job once");
}

async fn schedules_fire_once_per_tick(jobs: &dyn JobQueue) {
    jobs.upsert_schedule("cf-sch", "p", "nightly", "0 2 * * * UTC", 1_000).await.unwrap();
    let due = jobs.due_schedules(1_000).await.unwrap();
    let mine: Vec<_> = due.into_iter().filter(|s| s.tenant == "cf-sch").collect();
    assert_eq!(mine.len(), 1);
    let fired = job("job_cf_sched", "p", 1_000);
    assert!(jobs.fire_schedule(&mine[0], 2_000, Some(&fired), 1_000).await.unwrap(), "schedules: the tick fires");
    assert!(!jobs.fire_schedule(&mine[0], 2_000, Some(&fired), 1_000).await.unwrap(), "schedules: and only once");
    let listed = jobs.list_schedules("cf-sch").await.unwrap();
    assert_eq!((listed[0].next_run_at, listed[0].last_job_id.as_deref()), (2_000, Some("job_cf_sched")));
    assert!(jobs.due_schedules(1_500).await.unwrap().iter().all(|s| s.tenant != "cf-sch"));
}

fn put(key: &str, body: &str) -> Write {
    Write {
        collection: "notes".into(),
        key: key.into(),
        condition: Condition::Any,
        version: 1,
        op: WriteOp::Put { body: body.into(), index: vec![], search: None },
    }
}

fn audit() -> WriteAudit {
    WriteAudit { actor: "tok_cf".into(), actor_name: "cf".into(), request_id: "req_cf_commit".into() }
}

async fn a_commit_lands_documents_events_jobs_and_audit_together(b: &Backend) {
    let t = "cf-commit";
    let s = Scope { tenant: t.into(), plugin: "p".into() };
    let delivery = NewJob { kind: JobKind::Event, event_id: Some("evt_cf1".into()), ..job("job_cf_del", "q", 0) };
    let background = Background {
        events: vec![NewEvent {
            id: "evt_cf1".into(),
            topic: "p.noted".into(),
            payload: "{\"k\":1}".into(),
            request_id: "req_cf_commit".into(),
            deliveries: vec![delivery],
        }],
        jobs: vec![job("job_cf_follow", "p", 0)],
        ..Background::default()
    };
    // A failing condition: none of it lands.
    let refused = vec![put("a", "{}"), Write { condition: Condition::Version(7), ..put("b", "{}") }];
    let err = b.documents.commit_with(&s, &refused, &[], &background, 10, &audit()).await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "commit: {err:?}");
    assert!(b.documents.get(&s, "notes", "a").await.unwrap().is_none(), "commit: no document");
    assert!(b.jobs.list_events(t, None, 0, 10).await.unwrap().is_empty(), "commit: no event");
    assert!(
        b.jobs.list(t, &JobFilter { limit: 10, ..JobFilter::default() }).await.unwrap().is_empty(),
        "commit: no job"
    );
    assert!(b.audit.entries(Some(t), None, 0, 10).await.unwrap().is_empty(), "commit: no audit entry");

    b.documents.commit_with(&s, &[put("a", "{}")], &[], &background, 10, &audit()).await.unwrap();
    assert!(b.documents.get(&s, "notes", "a").await.unwrap().is_some());
    // Like the audit log's, event pages may wait for older transactions (see above).
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let page = b.jobs.list_events(t, None, 0, 10).await.unwrap();
        if !page.is_empty() || std::time::Instant::now() > settled {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), 1, "commit: one event");
    assert_eq!((events[0].id.as_str(), events[0].topic.as_str()), ("evt_cf1", "p.noted"));
    assert_eq!(b.jobs.event("evt_cf1").await.unwrap().unwrap().payload, "{\"k\":1}");
    let mut queued: Vec<String> = b
        .jobs
        .list(t, &JobFilter { limit: 10, ..JobFilter::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    queued.sort();
    assert_eq!(queued, ["job_cf_del", "job_cf_follow"], "commit: the delivery and the job");
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let entries = loop {
        let page = b.audit.entries(Some(t), None, 0, 10).await.unwrap();
        if !page.is_empty() || std::time::Instant::now() > settled {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(entries.len(), 1, "commit: one audit entry per write");
    assert_eq!(
        (entries[0].action.as_str(), entries[0].key.as_deref(), entries[0].request_id.as_deref()),
        ("document.put", Some("a"), Some("req_cf_commit"))
    );
}

async fn a_commit_with_a_lost_lease_applies_nothing(b: &Backend) {
    let t = "cf-fence";
    let s = Scope { tenant: t.into(), plugin: "p".into() };
    b.jobs.enqueue(t, &job("job_cf_fence", "p", 0), 0).await.unwrap();
    // Room for this tenant only: other checks leave work of their own queued.
    let policy = ClaimPolicy { limit: 1, tenant_room: 0, room: [(t.to_owned(), 1)].into(), ..ClaimPolicy::default() };
    let first = b.jobs.claim("w1", 100, 1_000, &policy).await.unwrap();
    let second = b.jobs.claim("w2", 1_200, 1_000, &policy).await.unwrap();
    assert_eq!((first[0].lease.job_id.as_str(), second[0].lease.attempt), ("job_cf_fence", 2));
    let stale = Background { finishes: Some(first[0].lease.clone()), ..Background::default() };
    let refused = b.documents.commit_with(&s, &[put("k", "{}")], &[], &stale, 1_300, &audit()).await;
    assert!(matches!(refused, Err(StoreError::LeaseLost(_))), "fence: {refused:?}");
    assert!(b.documents.get(&s, "notes", "k").await.unwrap().is_none(), "fence: nothing of it was applied");
    let current = Background { finishes: Some(second[0].lease.clone()), ..Background::default() };
    b.documents.commit_with(&s, &[put("k", "{}")], &[], &current, 1_300, &audit()).await.unwrap();
    assert_eq!(b.jobs.get(t, "job_cf_fence").await.unwrap().0.status, JobStatus::Done, "fence: the holder finishes it");
    assert!(b.documents.get(&s, "notes", "k").await.unwrap().is_some());
}
