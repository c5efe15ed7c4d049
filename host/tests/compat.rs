//! The compatibility rule of department interfaces on real components: a provider may add
//! functions, never drop or retype one (`runtime::compat`).

use keel_host::manifest::InterfaceRef;
use keel_host::runtime::compat::{Functions, breaks, exported, imported};
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

fn component(engine: &Engine, name: &str) -> Component {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/keel-plugins/fixtures/{name}.wasm"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("missing {} ({e}); run `cargo xtask build-plugins`", path.display()));
    Component::new(engine, bytes).expect("a fixture compiles")
}

fn directory(version: &str) -> InterfaceRef {
    InterfaceRef::parse(&format!("keel:hr/directory@{version}")).unwrap()
}

fn without(functions: &Functions, name: &str) -> Functions {
    functions.iter().filter(|(n, _)| n != name).cloned().collect()
}

#[test]
fn a_provider_may_add_functions_but_not_drop_or_retype_one() {
    let engine = Engine::default();
    let full = exported(&engine, &component(&engine, "directory"), &directory("0.2.2")).expect("it exports 0.2.2");
    assert!(full.iter().any(|(n, _)| n == "working-times"), "test setup: the 0.2.2 contract has working-times");
    assert!(exported(&engine, &component(&engine, "directory"), &directory("0.2.3")).is_none(), "exact versions");

    // An older version without `working-times`, upgraded to one with it: an addition.
    assert_eq!(breaks(&without(&full, "working-times"), &full), []);
    // The other way round: the function is gone.
    let gone = breaks(&full, &without(&full, "working-times"));
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].function.as_str(), gone[0].change.as_str()), ("working-times", "it is gone"));

    // A record changed under every function that returns it, each named with the path.
    let broken = exported(&engine, &component(&engine, "directory-broken"), &directory("0.2.4")).unwrap();
    let changed = breaks(&full, &broken);
    let change = |f: &str| changed.iter().find(|b| b.function == f).map(|b| b.change.clone());
    assert_eq!(change("get-employee").as_deref(), Some("the result: ok: field `email` was removed"));
    assert_eq!(
        change("list-employees").as_deref(),
        Some("the result: ok: field `employees`: items: field `email` was removed")
    );
    assert_eq!(change("get-manager").as_deref(), Some("the result: ok: some: field `email` was removed"));
    assert_eq!(change("get-working-time").as_deref(), Some("it is gone"));

    // A caller is served by what it imports only: the roster's imports are all in `full`.
    let roster = imported(&engine, &component(&engine, "roster"), "keel:hr/directory");
    assert!(!roster.is_empty() && roster.len() < full.len(), "the roster imports a few functions");
    assert_eq!(breaks(&roster, &full), []);
    assert!(!breaks(&roster, &broken).is_empty());
}
