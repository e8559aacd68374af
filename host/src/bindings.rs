//! Host bindings generated from `wit/validation.wit`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "validation-function",
    path: "../wit",
});
