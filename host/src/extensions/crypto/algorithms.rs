// TEMPORARY STUB (not committed): the helper's file replaces it.
#![allow(missing_docs, unused_variables)]
pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    [0; 32]
}
pub fn keccak_256(data: &[u8]) -> [u8; 32] {
    [0; 32]
}
pub fn sha2_256(data: &[u8]) -> [u8; 32] {
    [0; 32]
}
pub fn blake3(data: &[u8]) -> [u8; 32] {
    *::blake3::hash(data).as_bytes()
}
pub fn twox_128(data: &[u8]) -> [u8; 16] {
    [0; 16]
}
pub fn ed25519_verify(signature: &[u8], message: &[u8], public_key: &[u8]) -> bool {
    false
}
pub fn sr25519_verify(signature: &[u8], message: &[u8], public_key: &[u8]) -> bool {
    false
}
pub fn secp256k1_ecdsa_recover(signature: &[u8], message_hash: &[u8]) -> Option<[u8; 64]> {
    None
}
pub const RULES: &str = "stub";
