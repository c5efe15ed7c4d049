//! Linking department interfaces between plugins, per tenant, at call time: the
//! [`Interop`](crate::runtime::Interop) the runtime asks when a plugin calls an interface it
//! imports (`keel:hr/directory`, ...).
//!
//! The provider is whichever plugin enabled in the caller's tenant provides a
//! semver-compatible version (the newest, if several), so an admin swaps a provider by
//! enabling another one; the caller needs no change or restart. The provider runs with the
//! caller's identity (its permissions among the provider's) and its own storage; its writes,
//! events and jobs commit when its function returns `ok`, as their own unit of work.

use crate::calls::{CallPlan, Calls, Save};
use crate::identity::Principal;
use crate::runtime::interop::Unavailable;
use crate::runtime::{CallLabels, ExportError, Interop};
use crate::storage::WriteAudit;
use std::sync::Arc;
use wasmtime::component::Val;
use wasmtime::component::types::ComponentFunc;

/// What every cross-plugin call needs; one per server.
pub struct Departments {
    /// A provider's call is a call like any other; its metrics are counted like requests'
    /// (traps and timeouts show per plugin).
    pub calls: Arc<Calls>,
    /// Calls deeper than this fail with `unavailable` (this bounds cycles too).
    pub max_depth: u32,
    /// Work started down a chain longer than this is refused (see `jobs.max-chain`).
    pub max_chain: u32,
}

/// Cross-plugin calls made on behalf of one caller.
#[derive(Clone)]
pub struct DepartmentCalls {
    shared: Arc<Departments>,
    /// `None` for background work, which passes no user permissions on.
    principal: Option<Arc<Principal>>,
}

impl Departments {
    /// The interop for a call by `principal` (or by background work).
    pub fn for_caller(self: &Arc<Self>, principal: Option<&Principal>) -> Arc<dyn Interop> {
        Arc::new(DepartmentCalls { shared: self.clone(), principal: principal.map(|p| Arc::new(p.clone())) })
    }
}

#[async_trait::async_trait]
impl Interop for DepartmentCalls {
    async fn call(
        &self,
        from: &CallLabels,
        depth: u32,
        interface: &str,
        function: &str,
        signature: &ComponentFunc,
        params: &[Val],
    ) -> Result<Vec<Val>, Unavailable> {
        let shared = &self.shared;
        let calls = &shared.calls;
        if depth >= shared.max_depth {
            return Err(Unavailable::TooDeep {
                depth: depth + 1,
                limit: shared.max_depth,
                caller: from.plugin.clone(),
                interface: interface.to_owned(),
            });
        }
        let caller =
            calls.registry.for_tenant(&calls.tenancy, &from.tenant, &from.plugin).ok_or(Unavailable::CallerGone)?;
        let required =
            caller.record.manifest.required().into_iter().find(|r| r.name == interface).ok_or_else(|| {
                Unavailable::NotRequired { caller: from.plugin.clone(), interface: interface.to_owned() }
            })?;
        let (provided, provider) = calls
            .registry
            .serving_tenant(&calls.tenancy, &from.tenant)
            .into_iter()
            .filter_map(|p| {
                let provided = p.record.manifest.provided().iter().find(|x| x.satisfies(required))?.clone();
                Some((provided, p))
            })
            .max_by(|(a, pa), (b, pb)| a.version.cmp(&b.version).then_with(|| pb.record.id.cmp(&pa.record.id)))
            .ok_or_else(|| Unavailable::NoProvider { tenant: from.tenant.clone(), required: required.to_string() })?;
        let export = provider
            .pre
            .export_of(interface)
            .ok_or_else(|| Unavailable::ExportGone {
                provider: provider.record.id.clone(),
                provided: provided.to_string(),
            })?
            .to_owned();
        let permissions = match &self.principal {
            Some(principal) => provider
                .record
                .manifest
                .permissions
                .keys()
                .filter(|p| calls.tenancy.allows(principal, p))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let plan = CallPlan {
            plugin: &provider,
            tenant: &from.tenant,
            request_id: &from.request_id,
            lane: from.lane,
            chain: from.chain,
            depth: depth + 1,
            task: None,
            permissions,
            interop: Some(Arc::new(self.clone())),
            limits: None,
        };
        let context = calls
            .context(plan)
            .await
            .map_err(|e| Unavailable::Settings { provider: provider.record.id.clone(), reason: e.to_string() })?;
        let started = std::time::Instant::now();
        let outcome = calls.runtime.call_export(&provider.pre, &export, function, signature, params, context).await;
        let kind = match &outcome {
            Ok(_) => "ok",
            Err(ExportError::Call(e)) => e.kind(),
            Err(ExportError::Missing(_) | ExportError::Mismatch(_)) => "mismatch",
        };
        calls.metrics.record_call(&provider.record.id, kind, started.elapsed());
        let outcome = outcome.map_err(|error| Unavailable::Failed { provider: provider.record.id.clone(), error })?;
        let succeeded = matches!(outcome.results.first(), Some(Val::Result(Ok(_))));
        if succeeded && !outcome.outbox.is_empty() && from.chain > shared.max_chain {
            // A loop of jobs through department calls ends here as it would through jobs.
            return Err(Unavailable::TooManyJobs {
                provider: provider.record.id.clone(),
                chain: from.chain,
                limit: shared.max_chain,
            });
        }
        if succeeded && (outcome.uow.pending_writes() > 0 || !outcome.outbox.is_empty()) {
            let audit = match &self.principal {
                Some(p) => WriteAudit {
                    actor: p.token_id.clone(),
                    actor_name: p.name.clone(),
                    request_id: from.request_id.clone(),
                },
                None => WriteAudit {
                    actor: "system:call".into(),
                    actor_name: format!("call from {}", from.plugin),
                    request_id: from.request_id.clone(),
                },
            };
            calls
                .commit(&provider, outcome.uow, outcome.outbox, Save::new(&from.request_id, from.chain, audit))
                .await
                .map_err(|error| Unavailable::NotSaved { provider: provider.record.id.clone(), error })?;
        }
        Ok(outcome.results)
    }
}
