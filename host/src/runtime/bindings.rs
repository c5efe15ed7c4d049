//! Host-side bindings generated from `wit/`, for the `worker-plugin` world (a superset of
//! `plugin`): the imports are the same for both, and the `worker` export is looked up per
//! component, so plugins without it still load. Storage is async (it awaits the database);
//! the other imports answer from memory.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:platform/worker-plugin",
    imports: { "keel:platform/storage": async, "keel:platform/sequences": async },
    exports: { default: async },
});
