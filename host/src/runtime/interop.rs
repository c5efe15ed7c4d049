//! Typed calls between plugins through department interfaces (`keel:hr/directory`, ...).
//!
//! A consumer's imports of a department interface are linked to dynamic host functions.
//! When one is called, the host asks the call's [`Interop`] for a provider enabled in the
//! caller's tenant, runs the provider's export in a fresh instance of its own, and forwards
//! the values. The consumer's function type and the provider's must be equal (checked per
//! call, structurally); when they are not, or no provider is enabled, or the chain is too
//! deep, the host answers the interface's `unavailable` error itself, so a consumer never
//! traps because another department is missing.

use super::host::HostState;
use super::{CallLabels, PrepareError};
use crate::manifest::{InterfaceRef, Manifest};
use std::collections::HashSet;
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, Linker, Val};

/// Why the host answered a department call `unavailable` itself (the text becomes the
/// problem's detail).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("calls to other plugins are not available in this context")]
    NoInterop,
    #[error("the call chain is {depth} calls deep, the limit ({limit}); `{caller}` cannot call {interface}")]
    TooDeep { depth: u32, limit: u32, caller: String, interface: String },
    #[error("the calling plugin is no longer installed")]
    CallerGone,
    #[error("`{caller}` does not require {interface}")]
    NotRequired { caller: String, interface: String },
    #[error("no plugin enabled for tenant `{tenant}` provides {required}")]
    NoProvider { tenant: String, required: String },
    #[error("`{provider}` no longer exports {provided}")]
    ExportGone { provider: String, provided: String },
    #[error("provider `{provider}`'s settings cannot be read: {reason}")]
    Settings { provider: String, reason: String },
    #[error("provider `{provider}` failed: {error}")]
    Failed { provider: String, error: super::ExportError },
    #[error(
        "too-many-jobs: provider `{provider}` would start the {chain}th job of one chain; jobs.max-chain is {limit}"
    )]
    TooManyJobs { provider: String, chain: u32, limit: u32 },
    #[error("provider `{provider}`'s writes could not be saved: {error}")]
    NotSaved { provider: String, error: crate::storage::UnitOfWorkError },
    #[error("the provider answered the wrong shape")]
    WrongShape,
}

/// Resolves and runs a cross-plugin call on behalf of one caller. Built per request (it
/// carries the caller's identity) by the layer that knows plugins and tenants.
#[async_trait::async_trait]
pub trait Interop: Send + Sync {
    /// Calls `function` of `interface` (`namespace:package/interface`, no version) for the
    /// plugin in `from`, whose call is `depth` calls deep. `Err` is why the interface is
    /// unavailable.
    async fn call(
        &self,
        from: &CallLabels,
        depth: u32,
        interface: &str,
        function: &str,
        signature: &ComponentFunc,
        params: &[Val],
    ) -> Result<Vec<Val>, Unavailable>;
}

/// The code of the `unavailable` problems the host answers itself.
pub const UNAVAILABLE_CODE: &str = "department-unavailable";

/// The `unavailable` value of a department function's result type, if it has one:
/// `result<_, E>` with `E` a variant whose `unavailable` case carries nothing, a string (the
/// reason), or a problem record of strings and options (`code` gets
/// [`UNAVAILABLE_CODE`], every other string the reason, every option `none`).
pub fn unavailable(signature: &ComponentFunc, reason: &str) -> Option<Val> {
    let mut results = signature.results();
    let (Some(Type::Result(result)), None) = (results.next(), results.next()) else { return None };
    let Some(Type::Variant(error)) = result.err() else { return None };
    let case = error.cases().find(|c| c.name == "unavailable")?;
    let payload = match case.ty {
        None => None,
        Some(Type::String) => Some(Box::new(Val::String(reason.to_owned()))),
        Some(Type::Record(record)) => {
            let fields = record
                .fields()
                .map(|field| match field.ty {
                    Type::String if field.name == "code" => {
                        Some((field.name.to_owned(), Val::String(UNAVAILABLE_CODE.into())))
                    }
                    Type::String => Some((field.name.to_owned(), Val::String(reason.to_owned()))),
                    Type::Option(_) => Some((field.name.to_owned(), Val::Option(None))),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Box::new(Val::Record(fields)))
        }
        Some(_) => return None,
    };
    Some(Val::Result(Err(Some(Box::new(Val::Variant("unavailable".into(), payload))))))
}

/// Whether two function types are the same, structurally (they come from different
/// components, so identity cannot be compared).
pub fn same_signature(a: &ComponentFunc, b: &ComponentFunc) -> bool {
    a.params().map(|(_, t)| t).eq(b.params().map(|(_, t)| t)) && a.results().eq(b.results())
}

/// Checks a component's department imports against the manifest's `requires` and that each
/// function can express `unavailable`; links each function to the dynamic dispatcher.
pub(super) fn link_department_imports(
    engine: &Engine,
    linker: &mut Linker<HostState>,
    linked: &mut HashSet<String>,
    component: &Component,
    manifest: &Manifest,
) -> Result<(), PrepareError> {
    let required = manifest.required();
    for (name, item) in component.component_type().imports(engine) {
        if name.starts_with("keel:platform/") || name.starts_with("wasi:") {
            continue;
        }
        let Some(imported) = InterfaceRef::parse(name) else {
            return Err(PrepareError::UnknownImport(name.to_owned()));
        };
        if !required.iter().any(|r| r.name == imported.name) {
            return Err(PrepareError::UndeclaredRequirement { import: name.to_owned() });
        }
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(PrepareError::UnknownImport(name.to_owned()));
        };
        for (function, item) in instance.exports(engine) {
            let signature = match item.ty {
                ComponentItem::ComponentFunc(signature) => signature,
                // Records and variants the functions use.
                ComponentItem::Type(_) => continue,
                _ => {
                    return Err(PrepareError::DepartmentSignature {
                        function: format!("{name}.{function}"),
                        reason: "is not a function or a plain type (department interfaces carry no resources)".into(),
                    });
                }
            };
            if unavailable(&signature, "").is_none() {
                return Err(PrepareError::DepartmentSignature {
                    function: format!("{name}.{function}"),
                    reason: "must return result<_, E> where E is a variant with an `unavailable` case carrying nothing, a string or a problem record".into(),
                });
            }
            let key = format!("{name}#{function}");
            if linked.contains(&key) {
                continue;
            }
            let interface = imported.name.clone();
            let function_name = function.to_owned();
            let mut instance_linker =
                linker.instance(name).map_err(|e| PrepareError::WorldMismatch(format!("{e:#}")))?;
            let defined = instance_linker.func_new_async(function, move |mut store, signature, params, results| {
                let interface = interface.clone();
                let function = function_name.clone();
                Box::new(async move {
                    let state = store.data_mut();
                    state.called_departments |= state.interop.is_some();
                    let (interop, labels, depth) = (state.interop.clone(), state.labels.clone(), state.depth);
                    let answer = match interop {
                        None => Err(Unavailable::NoInterop),
                        Some(interop) => {
                            interop.call(&labels, depth, &interface, &function, &signature, params).await
                        }
                    };
                    let answer = answer.and_then(|values| match values.len() == results.len() {
                        true => Ok(values),
                        false => Err(Unavailable::WrongShape),
                    });
                    match answer {
                        Ok(values) => results.clone_from_slice(&values),
                        Err(reason) => {
                            tracing::info!(target: "keel::plugin", plugin = %labels.plugin, tenant = %labels.tenant,
                                request_id = %labels.request_id, %interface, %function, %reason, "department call unavailable");
                            results[0] = unavailable_or_trap(&signature, &reason.to_string())?;
                        }
                    }
                    Ok(())
                })
            });
            // A semver-compatible import of another plugin may already be linked under the
            // same name: the dispatcher is the same, so that one serves both.
            if defined.is_ok() {
                linked.insert(key);
            }
        }
    }
    Ok(())
}

fn unavailable_or_trap(signature: &ComponentFunc, reason: &str) -> wasmtime::Result<Val> {
    unavailable(signature, reason).ok_or_else(|| wasmtime::Error::msg(format!("department call unavailable: {reason}")))
}

/// Where a provider's exports are: interface name → (export name, export index).
pub(super) fn provided_exports(
    engine: &Engine,
    component: &Component,
    manifest: &Manifest,
) -> Result<Vec<(InterfaceRef, String)>, PrepareError> {
    let exports: Vec<String> = component.component_type().exports(engine).map(|(n, _)| n.to_owned()).collect();
    manifest
        .provided()
        .into_iter()
        .map(|provided| {
            let name = exports
                .iter()
                .find(|e| {
                    InterfaceRef::parse(e).is_some_and(|x| x.name == provided.name && x.version == provided.version)
                })
                .cloned()
                .ok_or_else(|| PrepareError::MissingProvidedExport(provided.to_string()))?;
            Ok((provided.clone(), name))
        })
        .collect()
}
