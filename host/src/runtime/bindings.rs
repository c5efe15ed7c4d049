//! Host-side bindings generated from `wit/`. Storage is async (it awaits the database);
//! the other imports answer from memory.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "keel:platform/plugin",
    imports: { "keel:platform/storage": async },
    exports: { default: async },
});
