//! Which version of a plugin each tenant runs, and moving tenants between versions.
//!
//! Installing a version makes it the plugin's *active* version: the one a tenant switching
//! the plugin on for the first time gets. Tenants already running the plugin keep their
//! version (also while they have it switched off) until they are moved: one tenant by its
//! admin (`upgrade`), or many by a platform admin (`rollout`, tenant by tenant, stopping at
//! the first failure). A move rewrites only that tenant's index entries and changes its row
//! in one transaction (`PluginRegistry::move_tenant`); requests in flight finish on the
//! version they started on, and background work enqueued before runs on the new one.

use crate::calls::{CallPlan, Calls, Save};
use crate::dependencies::{self, Dependent, Enabled, Unserved};
use crate::jobs::PendingOutbox;
use crate::manifest::Manifest;
use crate::plugins::{LoadedPlugin, MigrationReport, MoveError, Moved, PluginRegistry};
use crate::runtime::{CallContext, Lane};
use crate::storage::{Scope, StoreError, UnitOfWork, UnitOfWorkError, WriteAudit};
use crate::tenancy::{TenancyError, TenantStore};
use serde::Serialize;
use std::collections::BTreeSet;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
}

/// Switches `plugin` on for `tenant`: at the version it ran before it was switched off, or
/// on a first switch-on at the active version (its index entries built then). Returns the
/// move when there was one.
pub async fn switch_on(
    registry: &PluginRegistry,
    tenancy: &TenantStore,
    tenant: &str,
    plugin: &str,
) -> Result<Option<Moved>, LifecycleError> {
    if tenancy.version_of(tenant, plugin).is_some() {
        tenancy.set_enabled(tenant, plugin, true).await?;
        return Ok(None);
    }
    let active = registry.get(plugin).ok_or_else(|| MoveError::NotFound(plugin.to_owned()))?;
    Ok(Some(registry.move_tenant(tenancy, tenant, plugin, &active.record.version, Some(true)).await?))
}

/// What `target` asks for beyond `current` (see [`new_asks`]), unless `approved` lists
/// exactly that: None when the move may go ahead.
pub fn approval_needed(current: &LoadedPlugin, target: &LoadedPlugin, approved: &[String]) -> Option<Vec<String>> {
    let requested = new_asks(&current.record.manifest, &target.record.manifest);
    let approved: BTreeSet<&str> = approved.iter().map(String::as_str).collect();
    let exact = requested.len() == approved.len() && requested.iter().all(|r| approved.contains(r.as_str()));
    (!exact).then_some(requested)
}

/// One tenant's move in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RolloutStep {
    pub tenant: String,
    pub from: String,
    pub entries_rewritten: u64,
}

/// A tenant a rollout left on its version until its admin approves what the new one asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AwaitingApproval {
    pub tenant: String,
    pub from: String,
    /// What the version asks for that the tenant's does not (see [`new_asks`]).
    pub requested: Vec<String>,
}

/// The tenant a rollout stopped at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RolloutFailure {
    pub tenant: String,
    pub from: String,
    /// A stable code: `not-switched-on`, `interface-incompatible`, `provider-required`,
    /// `index-data-mismatch`, `move-conflict`, `version-not-found`, `unavailable`.
    pub code: String,
    pub detail: String,
}

/// What a rollout did: the tenants moved (in order), the one it stopped at, and those it
/// did not reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RolloutReport {
    pub plugin: String,
    pub version: String,
    pub moved: Vec<RolloutStep>,
    /// Already on the version.
    pub unchanged: Vec<String>,
    /// Not moved: the version asks for more than the one they run, which their admin must
    /// approve (`new_asks`); each waits on its version.
    pub awaiting_approval: Vec<AwaitingApproval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<RolloutFailure>,
    /// Not tried, because the rollout stopped.
    pub remaining: Vec<String>,
    pub complete: bool,
}

/// The stable code of a move's failure.
pub fn move_code(e: &MoveError) -> &'static str {
    match e {
        MoveError::NotFound(_) => "plugin-not-found",
        MoveError::VersionNotFound { .. } => "version-not-found",
        MoveError::Reindex(_) => "index-data-mismatch",
        MoveError::Superseded { .. } => "move-conflict",
        MoveError::MigrationFailed { .. } => "migration-failed",
        MoveError::MigrationIrreversible { .. } => "migration-irreversible",
        MoveError::MigrationSkipped { .. } => "migration-skipped",
        MoveError::MigrationConflict { .. } => "migration-conflict",
        MoveError::Registry(_) => "unavailable",
    }
}

/// Moves `tenants` (every tenant that runs another version of the plugin, when None) to
/// `version`, one after the other, stopping at the first that fails.
pub async fn rollout(
    calls: &Calls,
    plugin: &str,
    version: &str,
    tenants: Option<Vec<String>>,
) -> Result<RolloutReport, MoveError> {
    let (registry, tenancy) = (calls.registry.as_ref(), calls.tenancy.as_ref());
    let engine = registry.engine();
    let target = registry.ensure_version(plugin, version).await?;
    let running = tenancy.versions_of(plugin);
    let targets: Vec<(String, Option<String>)> = match tenants {
        None => running.into_iter().map(|(t, v)| (t, Some(v))).collect(),
        Some(list) => list
            .into_iter()
            .map(|t| {
                let v = running.iter().find(|(r, _)| *r == t).map(|(_, v)| v.clone());
                (t, v)
            })
            .collect(),
    };
    let mut report = RolloutReport {
        plugin: plugin.to_owned(),
        version: version.to_owned(),
        moved: vec![],
        unchanged: vec![],
        awaiting_approval: vec![],
        failed: None,
        remaining: vec![],
        complete: false,
    };
    let mut rest = targets.into_iter();
    for (tenant, from) in rest.by_ref() {
        let Some(from) = from else {
            // Never switched on: nothing to move; it gets the active version when it does.
            report.failed = Some(RolloutFailure {
                tenant,
                from: String::new(),
                code: "not-switched-on".into(),
                detail: format!("the tenant never switched `{plugin}` on"),
            });
            break;
        };
        if from == version {
            report.unchanged.push(tenant);
            continue;
        }
        // What asks for more waits for the tenant's admin; the rollout goes on.
        let current = match registry.ensure_version(plugin, &from).await {
            Ok(current) => current,
            Err(e) => {
                report.failed =
                    Some(RolloutFailure { tenant, from, code: move_code(&e).into(), detail: e.to_string() });
                break;
            }
        };
        let requested = new_asks(&current.record.manifest, &target.record.manifest);
        if !requested.is_empty() {
            report.awaiting_approval.push(AwaitingApproval { tenant, from, requested });
            continue;
        }
        // The same checks as a tenant admin's upgrade, with no force.
        if let Err(refusal) = check_move(registry, tenancy, engine, &tenant, &target) {
            let (code, detail) = match refusal {
                Refusal::Unserved(u) => (
                    "interface-incompatible",
                    u.iter()
                        .map(|u| format!("{} imports of {} what {version} lacks", u.plugin, u.interface))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                Refusal::ProviderRequired(d) => (
                    "provider-required",
                    d.iter()
                        .map(|d| format!("{} requires {}", d.plugin, d.interfaces.join(", ")))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            report.failed = Some(RolloutFailure { tenant, from, code: code.into(), detail });
            break;
        }
        match move_tenant(calls, &tenant, plugin, version).await {
            Ok(moved) => report.moved.push(RolloutStep { tenant, from, entries_rewritten: moved.entries_rewritten }),
            Err(e) => {
                tracing::warn!(%tenant, %plugin, %version, error = %e, "rollout stopped");
                report.failed =
                    Some(RolloutFailure { tenant, from, code: move_code(&e).into(), detail: e.to_string() });
                break;
            }
        }
    }
    report.remaining = rest.map(|(t, _)| t).collect();
    report.complete = report.failed.is_none() && report.awaiting_approval.is_empty();
    Ok(report)
}

/// What a move to a version leaves the tenant with.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// What the version requires that no plugin switched on in the tenant provides (its
    /// calls there fail with `department-unavailable` until one is).
    pub missing: Vec<String>,
    /// Plugins the move would leave without a provider (only when forced).
    pub dependents: Vec<Dependent>,
}

/// Why a move to a version is refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The version does not serve what plugins switched on in the tenant import of it.
    Unserved(Vec<Unserved>),
    /// The version stops providing what these plugins switched on in the tenant require,
    /// and nothing else there provides it.
    ProviderRequired(Vec<Dependent>),
}

/// Checks moving `tenant` to `target` (a version of one of its plugins) against the plugins
/// it has switched on, with this one at `target`.
pub fn check_move(
    registry: &PluginRegistry,
    tenancy: &TenantStore,
    engine: &wasmtime::Engine,
    tenant: &str,
    target: &LoadedPlugin,
) -> Result<Checked, Refusal> {
    let plugin = target.record.id.as_str();
    let before = registry.serving_tenant(tenancy, tenant);
    let others: Vec<_> = before.iter().filter(|p| p.record.id != plugin).cloned().collect();
    let unserved = dependencies::unserved(engine, target, &others);
    if !unserved.is_empty() {
        return Err(Refusal::Unserved(unserved));
    }
    let on_here = before.iter().any(|p| p.record.id == plugin) && target.record.enabled;
    fn enabled(p: &LoadedPlugin) -> Enabled<'_> {
        Enabled {
            id: p.record.id.as_str(),
            provides: p.record.manifest.provided(),
            requires: p.record.manifest.required(),
        }
    }
    let mut after: Vec<Enabled<'_>> = others.iter().map(|p| enabled(p)).collect();
    if on_here {
        after.push(enabled(target));
    }
    let was: Vec<Enabled<'_>> = before.iter().map(|p| enabled(p)).collect();
    // Only what this move takes away: what was unserved before stays so either way.
    let dependents: Vec<Dependent> = others
        .iter()
        .filter_map(|p| {
            let (requires, own) = (p.record.manifest.required(), p.record.manifest.provided());
            let without = |set: &[Enabled<'_>]| -> Vec<String> {
                let rest: Vec<Enabled<'_>> = set.iter().filter(|e| e.id != p.record.id).copied().collect();
                dependencies::missing(requires, own, &rest)
            };
            let earlier = without(&was);
            let lost: Vec<String> = without(&after).into_iter().filter(|i| !earlier.contains(i)).collect();
            (!lost.is_empty()).then(|| Dependent { plugin: p.record.id.clone(), interfaces: lost })
        })
        .collect();
    let manifest = &target.record.manifest;
    let missing = dependencies::missing(manifest.required(), manifest.provided(), &after);
    match dependents.is_empty() {
        true => Ok(Checked { missing, dependents }),
        false => Err(Refusal::ProviderRequired(dependents)),
    }
}

/// What `to` asks a tenant for that `from` did not, each as `kind:name`, sorted: a host
/// capability (`capability:jobs`), a collection of the tenant's storage
/// (`collection:timers`), a permission its routes check (`permission:helpdesk.admin`), a
/// department interface it calls (`calls:keel:hr/directory`) or an event topic it receives
/// (`receives:hr.employee.hired`). A move to a version that asks for any of these waits
/// for a tenant admin who approves exactly this list.
pub fn new_asks(from: &Manifest, to: &Manifest) -> Vec<String> {
    fn asks(m: &Manifest) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        out.extend(m.capabilities.iter().map(|c| format!("capability:{}", c.interface())));
        out.extend(m.collections.iter().map(|c| format!("collection:{}", c.name)));
        out.extend(m.permissions.keys().map(|p| format!("permission:{p}")));
        out.extend(m.required().iter().map(|r| format!("calls:{}", r.name)));
        out.extend(m.subscriptions.iter().map(|s| format!("receives:{}", s.topic)));
        out
    }
    let before = asks(from);
    asks(to).into_iter().filter(|a| !before.contains(a)).collect()
}

/// Documents one migration may rewrite (its chunks share one unit of work).
const MIGRATION_MAX_DOCUMENTS: usize = 100_000;
/// Bytes one migration may write.
const MIGRATION_MAX_BYTES: usize = 64 << 20;
/// Chunks one migration may take.
const MIGRATION_MAX_CHUNKS: u32 = 10_000;
/// Runs of a migration whose commit found the data changed under it.
const MIGRATION_ATTEMPTS: u32 = 3;

/// Which migration a move runs: the hook of `runner`, `direction`, with `other` the version
/// on the other side.
struct MigrationPlan {
    runner: std::sync::Arc<LoadedPlugin>,
    direction: crate::runtime::Direction,
    other: String,
}

/// Moves `tenant` (which runs the plugin) to `to` of `plugin`, running a migration when the versions declare one (see `keel:platform/migrator`):
/// - up, to a version whose `[[migrations]]` covers the version the tenant runs: its hook
///   runs `up`;
/// - back, from a version whose migration covers the target: its hook runs `down` if it
///   declares `down`, else the move is refused (`migration-irreversible`);
/// - a move past an installed version that migrates from the tenant's (up) or to the
///   target (back) without the target doing so is refused (`migration-skipped`).
///
/// The migration's chunks share one unit of work over the tenant's data; it commits with
/// the move (index entries rewritten, the row moved) in one transaction, so until then the
/// tenant keeps running its version, and a failure leaves its data exactly as it was.
pub async fn move_tenant(calls: &Calls, tenant: &str, plugin: &str, to: &str) -> Result<Moved, MoveError> {
    let registry = &calls.registry;
    let target = registry.ensure_version(plugin, to).await?;
    let Some(from) = calls.tenancy.version_of(tenant, plugin) else {
        return registry.move_tenant(&calls.tenancy, tenant, plugin, to, None).await;
    };
    let current = registry.ensure_version(plugin, &from).await?;
    let Some(plan) = plan_migration(registry, &current, &target).await? else {
        return registry.move_tenant(&calls.tenancy, tenant, plugin, to, None).await;
    };
    let started = std::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match migrate_once(calls, tenant, &current, &target, &plan).await {
            Ok((chunks, documents)) => {
                calls.tenancy.switched(tenant, plugin, to, None).await;
                let report = MigrationReport {
                    direction: match plan.direction {
                        crate::runtime::Direction::Up => "up".into(),
                        crate::runtime::Direction::Down => "down".into(),
                    },
                    version: plan.runner.record.version.clone(),
                    chunks,
                    documents,
                    attempts,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                };
                tracing::info!(%tenant, %plugin, %from, %to, chunks, documents, attempts,
                    elapsed_ms = report.elapsed_ms, "tenant migrated to another version");
                return Ok(Moved {
                    plugin: plugin.to_owned(),
                    from: Some(from),
                    to: to.to_owned(),
                    entries_rewritten: 0,
                    migration: Some(report),
                });
            }
            Err(Attempt::Lost) if attempts < MIGRATION_ATTEMPTS => {
                tracing::info!(%tenant, %plugin, attempts, "the data changed under the migration; running it again");
            }
            Err(Attempt::Lost) => return Err(MoveError::MigrationConflict { attempts }),
            Err(Attempt::Failed(e)) => {
                tracing::warn!(%tenant, %plugin, %from, %to, error = %e, "migration failed; the tenant stays");
                return Err(e);
            }
        }
    }
}

/// Why one run of a migration did not commit.
enum Attempt {
    /// Its commit found the data changed under it: run it again.
    Lost,
    Failed(MoveError),
}

/// The migration a move from `current` to `target` runs, if any (see [`move_tenant`]).
async fn plan_migration(
    registry: &PluginRegistry,
    current: &std::sync::Arc<LoadedPlugin>,
    target: &std::sync::Arc<LoadedPlugin>,
) -> Result<Option<MigrationPlan>, MoveError> {
    let (from, to) = (&current.record.manifest.version, &target.record.manifest.version);
    if from == to {
        return Ok(None);
    }
    let up = to > from;
    // The versions installed strictly between the two, with their manifests.
    let (low, high) = if up { (from, to) } else { (to, from) };
    let (rows, _) = registry.versions(&target.record.id).await?;
    let between: Vec<Manifest> = rows
        .iter()
        .filter_map(|row| Manifest::parse(&row.manifest, registry.policy()).ok())
        .filter(|m| &m.version > low && &m.version < high)
        .collect();
    let plan = if up {
        let own = target.record.manifest.migrations.iter().any(|m| m.covers(from));
        if !own && let Some(skipped) = between.iter().find(|m| m.migrations.iter().any(|x| x.covers(from))) {
            return Err(MoveError::MigrationSkipped {
                version: skipped.version.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        own.then(|| MigrationPlan {
            runner: target.clone(),
            direction: crate::runtime::Direction::Up,
            other: from.to_string(),
        })
    } else {
        // Back past a version that migrated data up from the target: its hook must bring it back.
        if let Some(skipped) = between.iter().find(|m| m.migrations.iter().any(|x| x.covers(to))) {
            return Err(MoveError::MigrationSkipped {
                version: skipped.version.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        match current.record.manifest.migrations.iter().find(|m| m.covers(to)) {
            None => None,
            Some(m) if !m.down => {
                return Err(MoveError::MigrationIrreversible {
                    version: from.to_string(),
                    from: m.from.to_string(),
                    to: to.to_string(),
                });
            }
            Some(_) => Some(MigrationPlan {
                runner: current.clone(),
                direction: crate::runtime::Direction::Down,
                other: to.to_string(),
            }),
        }
    };
    Ok(plan)
}

/// Runs the migration's chunks over one unit of work and commits it with the move.
/// Returns (chunks, documents the hook rewrote).
async fn migrate_once(
    calls: &Calls,
    tenant: &str,
    current: &LoadedPlugin,
    target: &LoadedPlugin,
    plan: &MigrationPlan,
) -> Result<(u32, u64), Attempt> {
    let runner = &plan.runner;
    let failed = |reason: String| {
        Attempt::Failed(MoveError::MigrationFailed {
            plugin: runner.record.id.clone(),
            version: runner.record.version.clone(),
            reason,
        })
    };
    let request_id = format!("migrate-{}-{}", target.record.id, crate::jobs::random_id("m"));
    // The chunks read and write through the definitions the tenant's entries follow now
    // (the target's for collections only it declares); the commit rewrites the entries for
    // the target's after the writes.
    let mut collections = (*current.collections).clone();
    for (name, indexes) in target.collections.iter() {
        collections.entry(name.clone()).or_insert_with(|| indexes.clone());
    }
    let limits = crate::storage::StorageLimits {
        max_writes_per_call: MIGRATION_MAX_DOCUMENTS,
        max_commit_bytes: MIGRATION_MAX_BYTES.max(calls.storage_limits.max_commit_bytes),
        max_checked_documents: MIGRATION_MAX_DOCUMENTS * 2,
        max_checked_queries: MIGRATION_MAX_DOCUMENTS,
        ..calls.storage_limits.clone()
    };
    let plan_call = CallPlan {
        plugin: runner,
        tenant,
        request_id: &request_id,
        lane: Lane::Request,
        chain: 0,
        depth: 0,
        task: None,
        permissions: Vec::new(),
        interop: None,
        limits: Some(limits.clone()),
    };
    let first = calls.context(plan_call).await.map_err(|e| failed(format!("its settings cannot be read: {e}")))?;
    let scope = Scope { tenant: tenant.to_owned(), plugin: runner.record.id.clone() };
    let mut uow = UnitOfWork::new(calls.store.clone(), scope, std::sync::Arc::new(collections), limits);
    let (labels, config) = (first.labels.clone(), first.config.clone());
    let mut outbox = PendingOutbox::default();
    let (mut chunks, mut documents, mut cursor) = (0u32, 0u64, None::<String>);
    loop {
        if chunks >= MIGRATION_MAX_CHUNKS {
            return Err(failed(format!("it did not finish in {MIGRATION_MAX_CHUNKS} chunks")));
        }
        let context = CallContext {
            uow,
            labels: labels.clone(),
            config: config.clone(),
            memory_cap: runner.memory_cap,
            timeout: runner.timeout,
            interop: None,
            depth: 0,
            task: None,
        };
        chunks += 1;
        let outcome = calls
            .runtime
            .run_migration(&runner.pre, plan.direction, &plan.other, cursor.clone(), context)
            .await
            .map_err(|e| failed(format!("chunk {chunks}: {e}")))?;
        if let Some(reason) = outcome.uow.storage_unavailable() {
            return Err(Attempt::Failed(MoveError::Registry(crate::plugins::RegistryError::Database(
                crate::backend::BackendError::Unavailable(reason.to_owned()),
            ))));
        }
        uow = outcome.uow;
        outbox.events.extend(outcome.outbox.events);
        outbox.jobs.extend(outcome.outbox.jobs);
        outbox.tasks.extend(outcome.outbox.tasks);
        let step = outcome.result.map_err(|e| failed(format!("chunk {chunks} answered {e:?}")))?;
        documents += u64::from(step.migrated);
        match step.next {
            None => break,
            Some(next) if Some(&next) == cursor.as_ref() => {
                return Err(failed(format!("chunk {chunks} answered the cursor it was given: it would never finish")));
            }
            next => cursor = next,
        }
    }
    let tenant_move = crate::jobs::TenantMove {
        from: current.record.version.clone(),
        to: target.record.version.clone(),
        reindex: crate::plugins::reindex_steps(
            Some(&current.record.manifest.collection_indexes()),
            &target.record.manifest.collection_indexes(),
        ),
    };
    let audit = WriteAudit {
        actor: "system:migration".into(),
        actor_name: format!("migration of {} {}", runner.record.id, runner.record.version),
        request_id: request_id.clone(),
    };
    let save = Save { moves: Some(tenant_move), ..Save::new(&request_id, 0, audit) };
    match calls.commit(runner, uow, outbox, save).await {
        Ok(()) => Ok((chunks, documents)),
        Err(UnitOfWorkError::Store(StoreError::ReadConflict { .. } | StoreError::Conflict { .. })) => {
            Err(Attempt::Lost)
        }
        Err(UnitOfWorkError::Store(StoreError::MoveSuperseded { found })) => {
            Err(Attempt::Failed(MoveError::Superseded { found }))
        }
        Err(UnitOfWorkError::Store(StoreError::IndexDataMismatch(what))) => {
            Err(failed(format!("its data does not fit {}'s indexes: {what}", target.record.version)))
        }
        Err(e) => Err(failed(format!("its commit failed: {e}"))),
    }
}
