//! Puts the registered extensions' functions into the host's linker, each wrapped so that its
//! price is charged from the guest's fuel before its body runs.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, WasmList};

use super::{Body, ExtensionSet, HostFunction};
use crate::guest_wasi::charge;

/// Adds every function of `extensions` to `linker`. Fails when a name is already defined (an
/// extension may not replace WASI or another extension).
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    extensions: &ExtensionSet,
) -> wasmtime::Result<()> {
    for extension in extensions.iter() {
        for function in extension.functions() {
            let mut instance = linker.instance(function.interface())?;
            add_function(&mut instance, &function).map_err(|e| {
                e.context(format!(
                    "extension {}: cannot define {}#{}",
                    extension.id(),
                    function.interface(),
                    function.name()
                ))
            })?;
        }
    }
    Ok(())
}

/// The bytes of a list argument, read in place from the guest's memory.
fn bytes<'a, T: 'static>(cx: &'a StoreContextMut<'_, T>, list: &'a WasmList<u8>) -> &'a [u8] {
    list.as_le_slice(cx)
}

/// Defines `function` in `instance`: charge `base + per_byte × argument bytes`, then run the body.
fn add_function<T: 'static>(
    instance: &mut LinkerInstance<'_, T>,
    function: &HostFunction,
) -> wasmtime::Result<()> {
    let price = function.price();
    let name = function.name();
    // One wrapper per arity: lift the lists without copying, charge, run, lower the result.
    macro_rules! wrap {
        ($f:ident, $($arg:ident),+) => {
            instance.func_wrap(
                name,
                move |mut cx: StoreContextMut<'_, T>, ($($arg,)+): ($(wrap!(@list $arg),)+)| {
                    let len = 0usize$(.saturating_add($arg.len()))+;
                    charge(&mut cx, price.of(len))?;
                    Ok(($f($(bytes(&cx, &$arg)),+),))
                },
            )
        };
        (@list $arg:ident) => { WasmList<u8> };
    }
    match function.body() {
        Body::BytesToBytes(f) => wrap!(f, a),
        Body::Bytes2ToBytes(f) => wrap!(f, a, b),
        Body::BytesToBool(f) => wrap!(f, a),
        Body::Bytes2ToBool(f) => wrap!(f, a, b),
        Body::Bytes3ToBool(f) => wrap!(f, a, b, c),
        Body::BytesToOptionBytes(f) => wrap!(f, a),
        Body::Bytes2ToOptionBytes(f) => wrap!(f, a, b),
        Body::BytesToU64(f) => wrap!(f, a),
    }
}
