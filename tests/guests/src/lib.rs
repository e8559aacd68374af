//! The bundled guests of `guest-components/`, built for `wasm32-wasip2` by this crate's build
//! script, for the host's tests and benchmarks.
//!
//! The Rust guests ([`ALL`]) are always built (or the build fails). The JavaScript guest
//! [`JS_GUEST`] (`guest-components/js-validate`, componentize-js) needs node, npm and the npm
//! registry at build time; without them the build goes on without it (with a cargo warning),
//! and [`JS_GUEST_BUILT`] is false. Use [`available`] for every guest that was built.
//!
//! Besides the guests with a folder of their own, [`COMPOSED_ADDER`] is two components composed
//! by the build script (`wac-graph`): the validation function [`ADDER_SOCKET`]
//! (`guest-components/adder-socket`, also built alone, not in [`ALL`]: its import is
//! unsatisfied) and the library `guest-components/codec-lib`.
//!
//! [`batches`] makes the block data of `sig_verify` and `sig_verify_wasm` (batches of
//! ed25519-signed messages) and tells their verdicts.
//!
//! [`bombs`] makes *compile bombs*: `adder` plus one extra core module whose compilation takes
//! about 2 GB of memory ([`bombs::memory_bomb_component`]) or about 10 s of CPU time
//! ([`bombs::cpu_bomb_component`]), with scaled versions for tests of preparation limits.

use std::path::PathBuf;

/// Block data for `sig_verify` and `sig_verify_wasm`: signed batches, bad and malformed ones,
/// and the verdict both guests give.
pub mod batches;
/// Compile bombs for the tests and benchmarks of preparation limits (memory and CPU caps).
pub mod bombs;

/// The directory holding `<name>.wasm` for every bundled guest.
pub const GUEST_DIR: &str = env!("PVF_GUEST_DIR");

/// The names of the bundled Rust guests, always built: their folder names in `guest-components/`
/// with `-` written `_` (the names of the built `.wasm` files), and the composed guest
/// [`COMPOSED_ADDER`]. Every one is a valid guest for a host that provides `pvf:crypto`
/// (`sig_verify` imports `pvf:crypto/signatures`). It does not hold the JavaScript guest
/// [`JS_GUEST`], which may be missing (see [`available`]), nor [`ADDER_SOCKET`], which no host
/// can run alone.
///
/// - `sig_verify`, `sig_verify_wasm`: the block data is a batch of ed25519-signed messages
///   ([`batches`]); the first checks each with the host's `ed25519-verify`, the second
///   in the guest (ed25519-zebra); same verdicts, byte for byte.
/// - `composed_adder`: the verdicts of `adder`, made of two components ([`COMPOSED_ADDER`]).
/// - `crypto_probe`: calls every function of `pvf:crypto` with arguments from the block data and
///   returns the answers as its head, for comparison with the native functions.
pub const ALL: &[&str] = &[
    "adder",
    "undying",
    "halt",
    "reject",
    "trap",
    "memory_bomb",
    "alloc",
    "stack_bomb",
    "nondeterminism_probe",
    "sandbox_escape",
    "stdout_flood",
    "bulky",
    "hostile",
    "sig_verify",
    "sig_verify_wasm",
    "composed_adder",
    "crypto_probe",
];

/// The validation function of [`COMPOSED_ADDER`] alone (`guest-components/adder-socket`): its
/// import `pvf-guests:codec/le@0.1.0` is unsatisfied, so a host must refuse it at preparation.
/// Not in [`ALL`].
pub const ADDER_SOCKET: &str = "adder_socket";

/// The composed guest: [`ADDER_SOCKET`] with its codec import plugged by the library component
/// `guest-components/codec-lib` (`wac-graph`, in the build script). It has the verdicts of
/// `adder`, error texts included.
pub const COMPOSED_ADDER: &str = "composed_adder";

/// The JavaScript guest (`guest-components/js-validate`): the rules of `adder` in JavaScript,
/// a component of about 12 MB (the SpiderMonkey engine, StarlingMonkey) made by componentize-js.
pub const JS_GUEST: &str = "js_validate";

/// Whether [`JS_GUEST`] was built: the build script skips it, with a warning, when node, npm or
/// the npm registry is unavailable (or `PVF_JS_GUEST_BUILD=off`).
pub const JS_GUEST_BUILT: bool = {
    let flag = env!("PVF_JS_GUEST").as_bytes();
    flag.len() == 1 && flag[0] == b'1'
};

/// Every guest that was built: [`ALL`], then [`JS_GUEST`] when [`JS_GUEST_BUILT`].
pub fn available() -> Vec<&'static str> {
    let mut names = ALL.to_vec();
    if JS_GUEST_BUILT {
        names.push(JS_GUEST);
    }
    names
}

/// The path of the built component of guest `name` (e.g. `"adder"`).
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(GUEST_DIR).join(format!("{name}.wasm"))
}

/// The bytes of the built component of guest `name`.
///
/// # Panics
/// When the guest was not built (an unknown name): this crate is for tests.
pub fn bytes(name: &str) -> Vec<u8> {
    let path = path(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("guest {name} not found at {}: {e}", path.display()))
}

#[cfg(test)]
mod run_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_guest_was_built() {
        let names = available();
        assert_eq!(names.len(), ALL.len() + usize::from(JS_GUEST_BUILT));
        for name in names.into_iter().chain([ADDER_SOCKET]) {
            assert!(
                path(name).is_file(),
                "{name} missing at {}",
                path(name).display()
            );
        }
    }
}
