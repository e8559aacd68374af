//! The bundled guests of `guest-components/`, built for `wasm32-wasip2` by this crate's build
//! script, for the host's tests and benchmarks.

use std::path::PathBuf;

/// The directory holding `<name>.wasm` for every bundled guest.
pub const GUEST_DIR: &str = env!("PVF_GUEST_DIR");

/// The names of every bundled guest: their folder names in `guest-components/` with `-` written
/// `_` (the names of the built `.wasm` files).
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
];

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
