//! Guest `nondeterminism-probe`: returns the clocks, hash-map order and randomness it sees; exercises what the host makes deterministic.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Pvf;
export!(Pvf);

/// 64-bit FNV-1a over `data`, continuing from `state`.
fn fnv1a(mut state: u64, data: &[u8]) -> u64 {
    for &b in data {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// The 128-byte probe, all integers little-endian, gathered in this order:
///
/// | bytes     | what                                                                         |
/// |-----------|------------------------------------------------------------------------------|
/// | 0..8      | `SystemTime::now()` seconds since the Unix epoch, u64 (0 if before it)       |
/// | 8..12     | its subsecond nanoseconds, u32 (0 if before the epoch)                       |
/// | 12..20    | nanoseconds between two `Instant::now()`, u64 (saturating)                   |
/// | 20..28    | FNV-1a 64 of the iteration order of keys 0..100u32 in a default `HashMap`,   |
/// |           | each key hashed as its 4 LE bytes, u64                                       |
/// | 28..60    | `wasi:random/random.get-random-bytes(32)`                                    |
/// | 60..92    | `wasi:random/insecure.get-insecure-random-bytes(32)`                         |
/// | 92..108   | `wasi:random/insecure-seed.insecure-seed()`, two u64                         |
/// | 108..116  | `wasi:clocks/monotonic-clock.now()`, u64 nanoseconds                         |
/// | 116..124  | `wasi:clocks/wall-clock.now()` seconds, u64                                  |
/// | 124..128  | `wasi:clocks/wall-clock.now()` nanoseconds, u32                              |
fn probe() -> Vec<u8> {
    let mut out = Vec::with_capacity(128);

    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    out.extend_from_slice(&wall.as_secs().to_le_bytes());
    out.extend_from_slice(&wall.subsec_nanos().to_le_bytes());

    let first = Instant::now();
    let second = Instant::now();
    let elapsed = u64::try_from(second.duration_since(first).as_nanos()).unwrap_or(u64::MAX);
    out.extend_from_slice(&elapsed.to_le_bytes());

    let map: HashMap<u32, ()> = (0..100u32).map(|k| (k, ())).collect();
    let order = map
        .keys()
        .fold(0xcbf2_9ce4_8422_2325, |h, k| fnv1a(h, &k.to_le_bytes()));
    out.extend_from_slice(&order.to_le_bytes());

    out.extend_from_slice(&wasip2::random::random::get_random_bytes(32));
    out.extend_from_slice(&wasip2::random::insecure::get_insecure_random_bytes(32));
    let (seed_lo, seed_hi) = wasip2::random::insecure_seed::insecure_seed();
    out.extend_from_slice(&seed_lo.to_le_bytes());
    out.extend_from_slice(&seed_hi.to_le_bytes());

    out.extend_from_slice(&wasip2::clocks::monotonic_clock::now().to_le_bytes());
    let raw_wall = wasip2::clocks::wall_clock::now();
    out.extend_from_slice(&raw_wall.seconds.to_le_bytes());
    out.extend_from_slice(&raw_wall.nanoseconds.to_le_bytes());
    out
}

impl Guest for Pvf {
    /// Head = the 128-byte probe described at [`probe`].
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        Ok(ValidationResult {
            head_data: probe(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
