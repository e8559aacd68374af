//! The first-party extension `pvf:crypto@0.1.0` (WIT: `wit/crypto/crypto.wit`): the hash
//! functions and signature checks that validation functions use on every block, natively.
//!
//! The functions themselves, and the consensus rules they follow (ZIP-215 for ed25519, the
//! `substrate` signing context for sr25519, which recovery ids and signatures secp256k1
//! accepts), are in [`algorithms`]. Malformed inputs are `false` / `none`, never a trap.
//!
//! ## Prices
//!
//! Each price is in fuel and is set so that a guest pays at least what the host works, with a
//! margin: one fuel unit is one wasm operator, and compiled wasm runs about 14 of them per ns on
//! the reference machine (0.072 ns per unit, measured on `undying` and on ed25519 compiled into a
//! guest alike), so a price is about 21 fuel per ns of native work (1.5x the measured cost). A
//! base covers the fixed work (a signature check's curve arithmetic), a per-byte price the data
//! hashed. Every call also costs [`HOST_CALL_FUEL`](crate::HOST_CALL_FUEL). The measurements are
//! in BENCHMARKS.md ("Crypto extension"; `cargo bench -p pvf-host --bench extensions`).
//!
//! | function | base | per byte | native cost measured (32 B / 16 KiB, or one check) |
//! |---|---|---|---|
//! | `blake2b-256` | 3 000 | 20 | 0.17 µs / 14.6 µs |
//! | `keccak-256` | 7 000 | 55 | 0.38 µs / 40.9 µs |
//! | `sha2-256` | 1 000 | 12 | 0.06 µs / 9.1 µs |
//! | `blake3` | 1 000 | 4 | 0.06 µs / 2.6 µs |
//! | `twox-128` | 500 | 3 | 0.02 µs / 2.2 µs |
//! | `ed25519-verify` | 800 000 | 12 | 36.5 µs |
//! | `sr25519-verify` | 800 000 | 55 | 37.3 µs |
//! | `secp256k1-ecdsa-recover` | 4 000 000 | 0 | 186 µs |

use super::{Body, Extension, HostFunction, Price};

pub mod algorithms;

/// The extension's id: the WIT package it implements.
pub const CRYPTO_ID: &str = "pvf:crypto@0.1.0";
/// The WIT package, as guests import it.
pub const CRYPTO_WIT: &str = include_str!("../../../../wit/crypto/crypto.wit");

const HASHING: &str = "pvf:crypto/hashing@0.1.0";
const SIGNATURES: &str = "pvf:crypto/signatures@0.1.0";

/// The `pvf:crypto@0.1.0` extension: registered by default on
/// [`Config::new`](crate::Config::new); [`Config::crypto`](crate::Config::crypto) turns it off.
#[derive(Debug, Clone, Copy, Default)]
pub struct CryptoExtension;

impl CryptoExtension {
    /// The extension.
    pub fn new() -> Self {
        Self
    }
}

fn blake2b_256(data: &[u8]) -> Vec<u8> {
    algorithms::blake2b_256(data).to_vec()
}

fn keccak_256(data: &[u8]) -> Vec<u8> {
    algorithms::keccak_256(data).to_vec()
}

fn sha2_256(data: &[u8]) -> Vec<u8> {
    algorithms::sha2_256(data).to_vec()
}

fn blake3(data: &[u8]) -> Vec<u8> {
    algorithms::blake3(data).to_vec()
}

fn twox_128(data: &[u8]) -> Vec<u8> {
    algorithms::twox_128(data).to_vec()
}

fn secp256k1_ecdsa_recover(signature: &[u8], message_hash: &[u8]) -> Option<Vec<u8>> {
    algorithms::secp256k1_ecdsa_recover(signature, message_hash).map(|key| key.to_vec())
}

impl Extension for CryptoExtension {
    fn id(&self) -> &str {
        CRYPTO_ID
    }

    /// blake3 over the id, the WIT package and [`algorithms::RULES`] (the verification rules
    /// and the versions of the crates that implement them).
    fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for part in [CRYPTO_ID, CRYPTO_WIT, algorithms::RULES] {
            hasher.update(part.as_bytes());
            hasher.update(b"\0");
        }
        *hasher.finalize().as_bytes()
    }

    fn functions(&self) -> Vec<HostFunction> {
        let hash = |name: &str, price: Price, f: fn(&[u8]) -> Vec<u8>| {
            HostFunction::new(HASHING, name, price, Body::BytesToBytes(f))
        };
        vec![
            hash("blake2b-256", Price::new(3_000, 20), blake2b_256),
            hash("keccak-256", Price::new(7_000, 55), keccak_256),
            hash("sha2-256", Price::new(1_000, 12), sha2_256),
            hash("blake3", Price::new(1_000, 4), blake3),
            hash("twox-128", Price::new(500, 3), twox_128),
            HostFunction::new(
                SIGNATURES,
                "ed25519-verify",
                Price::new(800_000, 12),
                Body::Bytes3ToBool(algorithms::ed25519_verify),
            ),
            HostFunction::new(
                SIGNATURES,
                "sr25519-verify",
                Price::new(800_000, 55),
                Body::Bytes3ToBool(algorithms::sr25519_verify),
            ),
            HostFunction::new(
                SIGNATURES,
                "secp256k1-ecdsa-recover",
                Price::new(4_000_000, 0),
                Body::Bytes2ToOptionBytes(secp256k1_ecdsa_recover),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::ExtensionSet;
    use std::sync::Arc;

    #[test]
    fn the_registration_is_well_formed_and_matches_the_wit() {
        let mut set = ExtensionSet::empty();
        set.add(Arc::new(CryptoExtension));
        assert_eq!(set.check(), Ok(()));
        // Every function of the WIT package is provided, and nothing else.
        let functions = CryptoExtension.functions();
        for f in &functions {
            let declared = format!("    {}: func(", f.name());
            assert!(
                CRYPTO_WIT.contains(&declared),
                "{} not in the WIT",
                f.name()
            );
        }
        let declared = CRYPTO_WIT.matches(": func(").count();
        assert_eq!(functions.len(), declared);
        assert!(CRYPTO_WIT.starts_with("package pvf:crypto@0.1.0;"));
    }

    #[test]
    fn the_digest_is_stable_within_a_build() {
        assert_eq!(CryptoExtension.digest(), CryptoExtension::new().digest());
    }
}
