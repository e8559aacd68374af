//! The first-party extension `pvf:crypto@0.1.0` (WIT: `wit/crypto/crypto.wit`): the hash
//! functions and signature checks that validation functions use on every block, natively.
//!
//! The functions themselves, and the consensus rules they follow (ZIP-215 for ed25519, the
//! `substrate` signing context for sr25519, which recovery ids and signatures secp256k1
//! accepts), are in [`algorithms`]. Malformed inputs are `false` / `none`, never a trap.
//!
//! ## Prices
//!
//! Each price is in fuel (one unit is about one wasm instruction, roughly a nanosecond of
//! compiled wasm on the reference machine) and errs high: a per-call base for the fixed work
//! (a signature check's curve arithmetic) plus a per-byte cost for the data hashed. The
//! measurements behind them are in BENCHMARKS.md ("Crypto extension prices").
//!
//! | function | base | per byte |
//! |---|---|---|
//! | `blake2b-256` | 1 000 | 4 |
//! | `keccak-256` | 1 000 | 8 |
//! | `sha2-256` | 1 000 | 8 |
//! | `blake3` | 1 000 | 2 |
//! | `twox-128` | 500 | 1 |
//! | `ed25519-verify` | 100 000 | 8 |
//! | `sr25519-verify` | 150 000 | 8 |
//! | `secp256k1-ecdsa-recover` | 300 000 | 0 |

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
            hash("blake2b-256", Price::new(1_000, 4), blake2b_256),
            hash("keccak-256", Price::new(1_000, 8), keccak_256),
            hash("sha2-256", Price::new(1_000, 8), sha2_256),
            hash("blake3", Price::new(1_000, 2), blake3),
            hash("twox-128", Price::new(500, 1), twox_128),
            HostFunction::new(
                SIGNATURES,
                "ed25519-verify",
                Price::new(100_000, 8),
                Body::Bytes3ToBool(algorithms::ed25519_verify),
            ),
            HostFunction::new(
                SIGNATURES,
                "sr25519-verify",
                Price::new(150_000, 8),
                Body::Bytes3ToBool(algorithms::sr25519_verify),
            ),
            HostFunction::new(
                SIGNATURES,
                "secp256k1-ecdsa-recover",
                Price::new(300_000, 0),
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
