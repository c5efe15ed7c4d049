//! Host-side bindings generated from `wit/`, for the `department` world (a superset of
//! `plugin` and `worker-plugin`): the imports are the same for all, and the `worker` and
//! `importer` exports are looked up per component, so plugins without them still load. Storage is async (it awaits the database);
//! the other imports answer from memory.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:platform/department",
    imports: { "keel:platform/storage": async, "keel:platform/sequences": async },
    exports: { default: async },
});
