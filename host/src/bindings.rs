//! Host bindings generated from `wit/validation.wit`.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "validation-function",
    path: "../wit",
    // Lists in parameters are borrowed (`&[u8]`): a call passes the candidate's bytes to the
    // guest without copying them first.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});
