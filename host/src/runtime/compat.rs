//! Whether a provider of a department interface still serves what its callers expect.
//!
//! A call between plugins goes through only when the caller's function type equals the
//! provider's, structurally (`interop::same_signature`): names of functions, parameters,
//! record fields and variant cases, and every type, exactly. So within a major version a
//! provider may add functions, but every function it had must keep its type; a record that
//! gains a field is a change too (a caller built against the old record cannot read it).
//!
//! Checked twice:
//! - at install, a new version of a provider against the version it replaces, for each
//!   interface both provide under compatible versions: a removed or changed function is
//!   refused, naming it and the change;
//! - when a tenant switches a provider on, against the functions each plugin switched on
//!   there that requires the interface actually imports: a provider that lacks one, or types
//!   it otherwise, is refused (the swap of one provider for another).

use crate::manifest::InterfaceRef;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

/// The functions of one department interface, by name, as a component exports or imports
/// them.
pub type Functions = Vec<(String, ComponentFunc)>;

/// One function a provider would break.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Break {
    pub function: String,
    /// What changed: `it is gone`, or where its type differs.
    pub change: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.function, self.change)
    }
}

fn functions_of(engine: &Engine, item: ComponentItem) -> Functions {
    let ComponentItem::ComponentInstance(instance) = item else { return Vec::new() };
    instance
        .exports(engine)
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentFunc(f) => Some((name.to_owned(), f)),
            _ => None,
        })
        .collect()
}

/// What `component` exports for `interface` (its exact name and version), if it does.
pub fn exported(engine: &Engine, component: &Component, interface: &InterfaceRef) -> Option<Functions> {
    component.component_type().exports(engine).find_map(|(name, item)| {
        let parsed = InterfaceRef::parse(name)?;
        (parsed.name == interface.name && parsed.version == interface.version).then(|| functions_of(engine, item.ty))
    })
}

/// What `component` imports from the department interface named `name` (any version).
pub fn imported(engine: &Engine, component: &Component, name: &str) -> Functions {
    component
        .component_type()
        .imports(engine)
        .filter(|(import, _)| InterfaceRef::parse(import).is_some_and(|i| i.name == name))
        .flat_map(|(_, item)| functions_of(engine, item.ty))
        .collect()
}

/// Each function of `expected` that `provider` lacks or types otherwise.
pub fn breaks(expected: &Functions, provider: &Functions) -> Vec<Break> {
    expected
        .iter()
        .filter_map(|(name, want)| {
            let change = match provider.iter().find(|(n, _)| n == name) {
                None => "it is gone".to_owned(),
                Some((_, have)) => function_difference(want, have)?,
            };
            Some(Break { function: name.clone(), change })
        })
        .collect()
}

/// Where two function types differ, if they do.
fn function_difference(was: &ComponentFunc, now: &ComponentFunc) -> Option<String> {
    let (old, new): (Vec<_>, Vec<_>) = (was.params().collect(), now.params().collect());
    if old.len() != new.len() {
        return Some(format!("it took {} parameters, now {}", old.len(), new.len()));
    }
    for ((old_name, old_ty), (new_name, new_ty)) in old.iter().zip(&new) {
        if old_name != new_name {
            return Some(format!("parameter `{old_name}` is now `{new_name}`"));
        }
        if let Some(d) = difference(&format!("parameter `{old_name}`"), old_ty, new_ty) {
            return Some(d);
        }
    }
    let (old, new): (Vec<_>, Vec<_>) = (was.results().collect(), now.results().collect());
    if old.len() != new.len() {
        return Some(format!("it returned {} values, now {}", old.len(), new.len()));
    }
    old.iter().zip(&new).find_map(|(a, b)| difference("the result", a, b))
}

/// Where `now` differs from `was`, as a path from `at` (`the result: ok: field `email` was
/// removed`); `None` when they are equal.
fn difference(at: &str, was: &Type, now: &Type) -> Option<String> {
    if was == now {
        return None;
    }
    let names = |a: Vec<&str>, b: Vec<&str>, what: &str| -> String {
        if let Some(gone) = a.iter().find(|n| !b.contains(n)) {
            return format!("{at}: {what} `{gone}` was removed");
        }
        if let Some(added) = b.iter().find(|n| !a.contains(n)) {
            return format!("{at}: {what} `{added}` was added");
        }
        format!("{at}: its {what}s were reordered")
    };
    let found = match (was, now) {
        (Type::Record(a), Type::Record(b)) => {
            let (fa, fb): (Vec<_>, Vec<_>) = (a.fields().collect(), b.fields().collect());
            let inner = fa.iter().find_map(|f| {
                let g = fb.iter().find(|g| g.name == f.name)?;
                difference(&format!("{at}: field `{}`", f.name), &f.ty, &g.ty)
            });
            inner.unwrap_or_else(|| {
                names(fa.iter().map(|f| f.name).collect(), fb.iter().map(|f| f.name).collect(), "field")
            })
        }
        (Type::Variant(a), Type::Variant(b)) => {
            let (ca, cb): (Vec<_>, Vec<_>) = (a.cases().collect(), b.cases().collect());
            let inner = ca.iter().find_map(|c| {
                let d = cb.iter().find(|d| d.name == c.name)?;
                match (&c.ty, &d.ty) {
                    (Some(x), Some(y)) => difference(&format!("{at}: case `{}`", c.name), x, y),
                    (None, None) => None,
                    _ => Some(format!(
                        "{at}: case `{}` carries {}",
                        c.name,
                        if d.ty.is_some() { "a value now" } else { "nothing now" }
                    )),
                }
            });
            inner.unwrap_or_else(|| {
                names(ca.iter().map(|c| c.name).collect(), cb.iter().map(|c| c.name).collect(), "case")
            })
        }
        (Type::Enum(a), Type::Enum(b)) => names(a.names().collect(), b.names().collect(), "case"),
        (Type::Flags(a), Type::Flags(b)) => names(a.names().collect(), b.names().collect(), "flag"),
        (Type::List(a), Type::List(b)) => difference(&format!("{at}: items"), &a.ty(), &b.ty())?,
        (Type::Option(a), Type::Option(b)) => difference(&format!("{at}: some"), &a.ty(), &b.ty())?,
        (Type::Result(a), Type::Result(b)) => {
            let side = |x: Option<Type>, y: Option<Type>, name: &str| match (x, y) {
                (Some(x), Some(y)) => difference(&format!("{at}: {name}"), &x, &y),
                (None, None) => None,
                (x, _) => Some(format!(
                    "{at}: {name} {}",
                    if x.is_some() { "carries nothing now" } else { "carries a value now" }
                )),
            };
            side(a.ok(), b.ok(), "ok").or_else(|| side(a.err(), b.err(), "error"))?
        }
        (Type::Tuple(a), Type::Tuple(b)) => {
            let (ta, tb): (Vec<_>, Vec<_>) = (a.types().collect(), b.types().collect());
            if ta.len() != tb.len() {
                format!("{at}: a tuple of {} is now of {}", ta.len(), tb.len())
            } else {
                ta.iter().zip(&tb).enumerate().find_map(|(i, (x, y))| difference(&format!("{at}: item {i}"), x, y))?
            }
        }
        _ => format!("{at}: was {}, now {}", kind(was), kind(now)),
    };
    Some(found)
}

fn kind(t: &Type) -> &'static str {
    match t {
        Type::Bool => "bool",
        Type::S8 => "s8",
        Type::U8 => "u8",
        Type::S16 => "s16",
        Type::U16 => "u16",
        Type::S32 => "s32",
        Type::U32 => "u32",
        Type::S64 => "s64",
        Type::U64 => "u64",
        Type::Float32 => "f32",
        Type::Float64 => "f64",
        Type::Char => "char",
        Type::String => "string",
        Type::List(_) => "a list",
        Type::Map(_) => "a map",
        Type::Record(_) => "a record",
        Type::Tuple(_) => "a tuple",
        Type::Variant(_) => "a variant",
        Type::Enum(_) => "an enum",
        Type::Option(_) => "an option",
        Type::Result(_) => "a result",
        Type::Flags(_) => "flags",
        Type::Own(_) | Type::Borrow(_) => "a resource",
        Type::Future(_) => "a future",
        Type::Stream(_) => "a stream",
        Type::ErrorContext => "an error context",
        Type::FixedLengthList(_) => "a fixed-length list",
    }
}
