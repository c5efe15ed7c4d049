//! What the plugins a tenant has switched on require of each other: the department
//! interfaces one imports (`requires`) and another exports (`provides`).
//!
//! The rules, checked when a tenant admin switches a plugin on or off:
//! - switching a plugin on is allowed whatever it is missing; what it requires that no
//!   plugin switched on in the tenant provides is listed in the answer (`missing`), and its
//!   calls there fail with
//!   `department-unavailable` until a provider is switched on. Setup can go in any order,
//!   and a department that uses another for part of its work (the CRM escalating to the
//!   helpdesk) runs without it;
//! - switching a provider on is refused while plugins switched on there import functions of
//!   its interface it lacks or types otherwise ([`unserved`]): a swap of providers goes
//!   through only to one that serves every caller as it is;
//! - switching a plugin off is refused while it is the last provider of an interface another
//!   plugin switched on in the tenant requires: the refusal names each dependent and what it
//!   would lose. Forcing it goes ahead (the dependents then get `department-unavailable`).
//!
//! A plugin's own exports count as providers of its imports, as they do when calls are
//! linked (`departments`): one that provides and requires an interface calls itself.

use crate::manifest::InterfaceRef;
use crate::plugins::LoadedPlugin;
use crate::runtime::compat::{self, Break};
use std::sync::Arc;

/// One plugin switched on in the tenant (on for the platform and for the tenant).
#[derive(Debug, Clone, Copy)]
pub struct Enabled<'a> {
    pub id: &'a str,
    pub provides: &'a [InterfaceRef],
    pub requires: &'a [InterfaceRef],
}

/// A plugin that would lose the only provider of what it requires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Dependent {
    pub plugin: String,
    /// The interfaces it requires that would have no provider, as `name@version`.
    pub interfaces: Vec<String>,
}

/// What `requires` lists that none of `enabled` (the plugin itself among them, or not yet)
/// provides, as `name@version`.
pub fn missing(requires: &[InterfaceRef], own: &[InterfaceRef], enabled: &[Enabled<'_>]) -> Vec<String> {
    requires
        .iter()
        .filter(|r| {
            !own.iter().any(|p| p.satisfies(r)) && !enabled.iter().any(|e| e.provides.iter().any(|p| p.satisfies(r)))
        })
        .map(ToString::to_string)
        .collect()
}

/// The plugins of `enabled` that require something only `plugin` provides there (in
/// `enabled`'s order), each with what it would lose.
pub fn dependents(plugin: &str, enabled: &[Enabled<'_>]) -> Vec<Dependent> {
    let Some(leaving) = enabled.iter().find(|e| e.id == plugin) else { return Vec::new() };
    let remaining: Vec<Enabled<'_>> = enabled.iter().filter(|e| e.id != plugin).copied().collect();
    remaining
        .iter()
        .filter_map(|e| {
            let lost: Vec<String> = e
                .requires
                .iter()
                .filter(|r| leaving.provides.iter().any(|p| p.satisfies(r)))
                .filter(|r| !remaining.iter().any(|other| other.provides.iter().any(|p| p.satisfies(r))))
                .map(ToString::to_string)
                .collect();
            (!lost.is_empty()).then(|| Dependent { plugin: e.id.to_owned(), interfaces: lost })
        })
        .collect()
}

/// A plugin switched on in the tenant that a provider about to be switched on would fail:
/// it imports functions of the interface the provider lacks or types otherwise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Unserved {
    pub plugin: String,
    /// As the provider provides it, `name@version`.
    pub interface: String,
    pub breaks: Vec<Break>,
}

/// The plugins of `enabled` (other than `provider`) that require an interface `provider`
/// provides, under a compatible version, and import a function of it that `provider` lacks
/// or types otherwise. Switching such a provider on would leave them calling a function
/// that is not there: the swap of one provider for another is checked here.
pub fn unserved(engine: &wasmtime::Engine, provider: &LoadedPlugin, enabled: &[Arc<LoadedPlugin>]) -> Vec<Unserved> {
    let mut found = Vec::new();
    for provided in provider.record.manifest.provided() {
        let exports = compat::exported(engine, provider.pre.component(), provided).unwrap_or_default();
        for caller in enabled.iter().filter(|c| c.record.id != provider.record.id) {
            if !caller.record.manifest.required().iter().any(|r| provided.satisfies(r)) {
                continue;
            }
            let imports = compat::imported(engine, caller.pre.component(), &provided.name);
            let breaks = compat::breaks(&imports, &exports);
            if !breaks.is_empty() {
                found.push(Unserved { plugin: caller.record.id.clone(), interface: provided.to_string(), breaks });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> InterfaceRef {
        InterfaceRef::parse(text).expect("an interface")
    }

    #[test]
    fn what_no_enabled_plugin_provides_is_missing_and_compatible_versions_count() {
        let directory = [r("keel:hr/directory@0.2.3")];
        let payroll = [r("keel:hr/directory@0.2.2")];
        let hr = Enabled { id: "hr", provides: &directory, requires: &[] };
        assert_eq!(missing(&payroll, &[], &[]), ["keel:hr/directory@0.2.2"]);
        assert!(missing(&payroll, &[], &[hr]).is_empty(), "0.2.3 serves a caller of 0.2.2");
        let older = [r("keel:hr/directory@0.2.1")];
        let old_hr = Enabled { id: "hr", provides: &older, requires: &[] };
        assert_eq!(missing(&payroll, &[], &[old_hr]), ["keel:hr/directory@0.2.2"], "older than required");
        assert!(missing(&payroll, &payroll, &[]).is_empty(), "its own export serves its import");
    }

    #[test]
    fn the_last_provider_has_dependents_and_a_second_provider_frees_it() {
        let directory = [r("keel:hr/directory@0.2.2")];
        let tickets = [r("keel:helpdesk/tickets@0.1.0")];
        let hr = Enabled { id: "hr", provides: &directory, requires: &[] };
        let payroll = Enabled { id: "payroll", provides: &[], requires: &directory };
        let crm = Enabled { id: "crm", provides: &[], requires: &tickets };
        let enabled = [hr, payroll, crm];
        assert_eq!(
            dependents("hr", &enabled),
            [Dependent { plugin: "payroll".into(), interfaces: vec!["keel:hr/directory@0.2.2".into()] }]
        );
        assert!(dependents("payroll", &enabled).is_empty(), "nobody requires payroll");
        assert!(dependents("helpdesk", &enabled).is_empty(), "not enabled: nothing to lose");
        let alt = Enabled { id: "directory-alt", provides: &directory, requires: &directory };
        assert!(dependents("hr", &[hr, payroll, alt]).is_empty(), "another provider remains");
        // A plugin that provides what it requires loses nothing by another's going.
        assert!(dependents("hr", &[hr, alt]).is_empty());
    }

    #[test]
    fn what_remains_must_serve_the_version_required_and_every_loss_is_listed() {
        let newer = [r("keel:hr/directory@0.2.3"), r("keel:helpdesk/tickets@0.1.0")];
        let older = [r("keel:hr/directory@0.2.1")];
        let needs_both = [r("keel:hr/directory@0.2.2"), r("keel:helpdesk/tickets@0.1.0")];
        let suite = Enabled { id: "suite", provides: &newer, requires: &[] };
        let legacy = Enabled { id: "legacy", provides: &older, requires: &[] };
        let caller = Enabled { id: "caller", provides: &[], requires: &needs_both };
        assert_eq!(
            dependents("suite", &[suite, legacy, caller]),
            [Dependent {
                plugin: "caller".into(),
                interfaces: vec!["keel:hr/directory@0.2.2".into(), "keel:helpdesk/tickets@0.1.0".into()]
            }],
            "0.2.1 is too old for a caller of 0.2.2; both interfaces are lost"
        );
        // The newer provider going while a compatible older one stays loses nothing.
        let old_enough = [r("keel:hr/directory@0.2.2")];
        let kept = Enabled { id: "kept", provides: &old_enough, requires: &[] };
        let directory_only = [r("keel:hr/directory@0.2.2")];
        let reader = Enabled { id: "reader", provides: &[], requires: &directory_only };
        assert!(dependents("suite", &[suite, kept, reader]).is_empty());
    }
}
