//! Preparation: decompress and bound the code, check it is a component of the right world, and
//! compile it with the fixed engine configuration.

use std::borrow::Cow;
use std::io::Read;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::ValidationFunctionPre;
use crate::contract::check_exports;
use crate::error::PrepareError;
use crate::execute::HostState;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a core module (`01 00 00 00`); components use `0d 00 01 00`.
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Returns the code itself, or its zstd decompression, refusing anything over `limit` bytes
/// without ever holding more than `limit + 1` decompressed bytes.
pub(crate) fn decode(raw: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, PrepareError> {
    if !raw.starts_with(&ZSTD_MAGIC) {
        if raw.len() > limit {
            return Err(PrepareError::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(raw));
    }
    let decoder = zstd::stream::read::Decoder::new(raw)
        .map_err(|e| PrepareError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PrepareError::Decompress(e.to_string()))?;
    if out.len() > limit {
        return Err(PrepareError::TooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

/// Compiles `code` and checks it targets the `validation-function` world against `linker`.
pub(crate) fn compile(
    engine: &Engine,
    linker: &Linker<HostState>,
    code: &[u8],
) -> Result<(Component, ValidationFunctionPre<HostState>), PrepareError> {
    let component = compile_component(engine, code)?;
    let pre = link(linker, &component)?;
    Ok((component, pre))
}

/// Compiles `code` into a component, without linking it (a worker's part: the host links the
/// artifact it loads, and a link failure there is the same `WrongWorld` or `MissingImports`).
pub(crate) fn compile_component(engine: &Engine, code: &[u8]) -> Result<Component, PrepareError> {
    if !code.starts_with(&WASM_MAGIC) {
        return Err(PrepareError::InvalidCode(
            "not a WebAssembly binary (no \\0asm magic)".into(),
        ));
    }
    if code.get(4..8) == Some(&CORE_MODULE_VERSION[..]) {
        return Err(PrepareError::InvalidCode(
            "a core WebAssembly module, not a component".into(),
        ));
    }
    Component::new(engine, code).map_err(compile_error)
}

/// Classifies a failure of `Component::new`: an operating-system error anywhere in its chain
/// (mapping executable memory, spawning a compile thread, ...) is a local fault of this host;
/// anything else is the code's (it does not validate, or cannot be compiled by this compiler).
///
/// This is the first half of the rule "only wasm validation errors, contract mismatches and
/// measured limits are deterministic preparation failures"; compiling in a confined worker
/// process, whose death is indeterminate, is the second.
pub(crate) fn compile_error(err: wasmtime::Error) -> PrepareError {
    let os_error = err
        .chain()
        .any(|e| e.is::<std::io::Error>() || e.is::<rustix::io::Errno>());
    if os_error {
        PrepareError::Host(format!("{err:#}"))
    } else {
        PrepareError::InvalidCode(format!("{err:#}"))
    }
}

/// Links `component` against the host's imports (WASI and the registered extensions) and finds
/// the `validate-block` export: a wrong export is [`PrepareError::WrongWorld`], an import the
/// linker does not satisfy is [`PrepareError::MissingImports`] (wasmtime's message names it).
pub(crate) fn link(
    linker: &Linker<HostState>,
    component: &Component,
) -> Result<ValidationFunctionPre<HostState>, PrepareError> {
    check_exports(component).map_err(PrepareError::WrongWorld)?;
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| PrepareError::MissingImports(format!("{e:#}")))?;
    ValidationFunctionPre::new(instance_pre).map_err(|e| PrepareError::WrongWorld(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_while_compiling_is_the_hosts_fault_not_the_codes() {
        let refused = wasmtime::Error::new(std::io::Error::from_raw_os_error(12))
            .context("mmap failed to allocate 0x2959000 bytes");
        assert!(matches!(compile_error(refused), PrepareError::Host(_)));
        let errno = wasmtime::Error::new(rustix::io::Errno::NOMEM).context("compiling");
        assert!(matches!(compile_error(errno), PrepareError::Host(_)));
        let invalid = wasmtime::Error::msg("type mismatch: expected i32");
        assert!(matches!(
            compile_error(invalid),
            PrepareError::InvalidCode(_)
        ));
        // And real invalid code stays the code's fault.
        let engine = Engine::default();
        let err = Component::new(&engine, b"\0asm\x0d\0\x01\0garbage").unwrap_err();
        assert!(matches!(compile_error(err), PrepareError::InvalidCode(_)));
    }
}
