//! The algorithms behind the first-party crypto host extension `pvf:crypto@0.1.0`
//! (`wit/crypto/crypto.wit`): five hash functions and three signature checks, in pure Rust.
//!
//! These functions decide verdicts, so they are consensus-critical: every node must give exactly
//! the same answer for every input, including inputs crafted to sit on the edges where
//! implementations of the same algorithm disagree. Each function therefore follows one stated
//! rule, chosen to match what Polkadot's runtime host functions (`sp_io::crypto` and
//! `sp_io::hashing`) answer, and the crates that implement it are pinned to exact versions (in the
//! workspace `Cargo.toml`; a test checks `Cargo.lock` against [`RULES`]).
//!
//! Every function is total and pure: it never panics, whatever the input (a wrong length, a point
//! off the curve, a non-canonical encoding is `false` / `None`); it does not allocate (none of
//! these crates has its `alloc` feature on); it uses no randomness, no clock, no I/O and no global
//! state.
//!
//! # Hashes
//!
//! - [`blake2b_256`]: BLAKE2b (RFC 7693), unkeyed, no salt or personalisation, with a 32-byte
//!   digest length parameter (not BLAKE2b-512 truncated). Substrate's `blake2_256`.
//! - [`keccak_256`]: Keccak-256 with the original Keccak padding (`0x01 … 0x80`), as Ethereum uses
//!   it; not FIPS 202 SHA3-256 (padding `0x06`), whose digests differ. Substrate's `keccak_256`.
//! - [`sha2_256`]: SHA-256 (FIPS 180-4). Substrate's `sha2_256`.
//! - [`blake3()`]: BLAKE3 in its default hashing mode, 32-byte output.
//! - [`twox_128`]: `XXH64(data, seed 0)` then `XXH64(data, seed 1)`, each as 8 little-endian
//!   bytes. Substrate's `twox_128` (not a cryptographic hash; it is here for storage keys).
//!
//! # Signatures
//!
//! **ed25519** ([`ed25519_verify`]) follows ZIP-215 (the rules of `ed25519-zebra`, which Polkadot's
//! `sp_io::crypto::ed25519_verify` also uses, unless a node registers `UseDalekExt` to replay old
//! blocks with `ed25519-dalek`): the public key `A` and the signature's `R` must
//! decode as points of the curve, and non-canonical encodings (a `y` coordinate of `p` or more, or
//! `x = 0` with the sign bit set) and points of small order are accepted; `S` must be canonical
//! (`S < ℓ`); `k = SHA-512(R_bytes ‖ A_bytes ‖ message)` is taken over the bytes exactly as given;
//! and the *cofactored* equation `[8]([S]B − R − [k]A) = 0` must hold. This is the one rule under
//! which single and batch verification agree, which is why Zcash and Polkadot chose it. Strict
//! RFC 8032 verifiers (e.g. `ed25519-dalek`'s `verify_strict`) reject some of the signatures it
//! accepts (small-order `A` or `R`, non-canonical encodings); `true` here does not mean that every
//! other Ed25519 library would say `true`.
//!
//! **sr25519** ([`sr25519_verify`]) is `schnorrkel`'s Schnorr signature over Ristretto255 with the
//! signing context `b"substrate"`, exactly as Polkadot's `sp_io::crypto::sr25519_verify` version 2
//! (`sp_core::sr25519::Pair::verify`): `Signature::from_bytes` (64 bytes; the schnorrkel marker, bit
//! 7 of byte 63, must be set, so the pre-0.8 unmarked signatures that version 1 of the host function
//! still accepted are rejected; `s` must be canonical), `PublicKey::from_bytes` (a canonical
//! Ristretto encoding), then `verify_simple(b"substrate", message, signature)`, which accepts only
//! if the recomputed `R` compresses to exactly the signature's `R` bytes. A message longer than
//! `u32::MAX` bytes is `false` (the transcript encodes the length in 32 bits; a guest cannot pass
//! one anyway).
//!
//! **secp256k1 recovery** ([`secp256k1_ecdsa_recover`]) matches Polkadot's
//! `sp_io::crypto::secp256k1_ecdsa_recover` versions 2 and 3, which call libsecp256k1's
//! `secp256k1_ecdsa_recover`:
//! - the signature is 65 bytes `r ‖ s ‖ v` (`r`, `s` big-endian) and the message hash 32 bytes;
//! - `v` of 27 or more has 27 subtracted (so 27/28 ≡ 0/1, Ethereum's legacy `v`); the result must
//!   be a recovery id 0–3, anything else (4–26, 31–255) is `None`. Ids 2 and 3 mean `R.x = r + n`;
//!   they only succeed when `r < p − n` (about 2⁻¹²⁸ of all `r`), so no honest signer produces them,
//!   but libsecp256k1 accepts them and so do we;
//! - `r` and `s` must both be in `[1, n − 1]` (no reduction of overflowing values, unlike version 1
//!   of the host function, which used `parse_overflowing`);
//! - **high `s` is accepted**: `(r, s, id)` and `(r, n − s, id ^ 1)` recover the same key, as in
//!   libsecp256k1, whose recovery (unlike its verification) does not enforce low `s`. (k256 refuses
//!   high `s`, so it is normalised first; this is the same key by algebra, see the function.)
//!   A check that wants Ethereum's post-Homestead low-`s` rule must apply it itself;
//! - the hash is reduced modulo `n`; `R` must decompress (`x < p`, on the curve) and the recovered
//!   key must not be the point at infinity. The answer is the uncompressed key `x ‖ y`, 64 bytes
//!   big-endian, without the `0x04` prefix.

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use k256::ecdsa::{RecoveryId, Signature as EcdsaSignature, VerifyingKey};

/// A precise statement of the rules and crate versions above, hashed into the extension's digest.
///
/// Any change to verdict-relevant behaviour (a rule, or the version of a crate that implements
/// one) must change this text. The crate versions are checked against `Cargo.lock` by a unit test.
pub const RULES: &str = "\
pvf:crypto@0.1.0 rules, revision 1.
crates: blake2 0.10.6, sha2 0.10.9, sha3 0.10.9, keccak 0.1.6, blake3 1.8.7, twox-hash 2.1.5, \
ed25519-zebra 4.2.0, ed25519 2.2.3, curve25519-dalek 4.1.3, schnorrkel 0.11.5, merlin 3.0.0, \
k256 0.13.4, ecdsa 0.16.9, elliptic-curve 0.13.8, crypto-bigint 0.5.5.
all: total functions; a wrong input length gives false or none; never a trap.
blake2b-256: BLAKE2b (RFC 7693), unkeyed, no salt, no personalisation, digest length 32.
keccak-256: Keccak-256 with the original Keccak padding (Ethereum), not FIPS 202 SHA3-256.
sha2-256: SHA-256 (FIPS 180-4).
blake3: BLAKE3 default hash mode, 32-byte output.
twox-128: XXH64(data, seed 0) as 8 little-endian bytes, then XXH64(data, seed 1) likewise.
ed25519-verify: ZIP-215. signature 64 bytes R||S, public key 32 bytes A, else false. \
A and R must decode as curve points; non-canonical encodings and small-order points are \
accepted. S must be canonical (S < l). k = SHA-512(R bytes || A bytes || message) mod l over \
the bytes as given. true iff [8]([S]B - R - [k]A) is the identity (cofactored equation).
sr25519-verify: schnorrkel, as sp_io::crypto::sr25519_verify version 2. signature 64 bytes \
with the schnorrkel marker (bit 7 of byte 63) set, else false (unmarked pre-0.8 signatures are \
rejected); s (marker cleared) canonical; public key 32 bytes, a canonical Ristretto encoding; \
message at most 2^32-1 bytes. true iff verify_simple with signing context \"substrate\" \
succeeds: k from the merlin transcript (SigningContext, \"substrate\", sign-bytes message, \
proto-name Schnorr-sig, sign:pk, sign:R, challenge sign:c) and [s]B - [k]A compresses to \
exactly the signature's R bytes.
secp256k1-ecdsa-recover: as sp_io::crypto::secp256k1_ecdsa_recover versions 2 and 3 \
(libsecp256k1 secp256k1_ecdsa_recover). signature 65 bytes r||s||v (big-endian r, s), message \
hash 32 bytes, else none. id = v - 27 if v >= 27 else v; id must be 0, 1, 2 or 3, else none \
(bit 0: R.y is odd; bit 1: R.x = r + n). r and s must be in [1, n-1], else none (no \
reduction). High s is accepted: (r, s, id) and (r, n - s, id xor 1) recover the same key. \
z = hash mod n. R must decompress (x < p, on the curve), else none. Q = r^-1 (sR - zG); Q at \
infinity gives none. Output: Q uncompressed as x||y, 64 bytes big-endian, no 0x04 prefix.
";

/// The signing context of every sr25519 signature this extension checks (Substrate's).
const SR25519_SIGNING_CONTEXT: &[u8] = b"substrate";

/// BLAKE2b with a 32-byte digest (RFC 7693; unkeyed, no salt or personalisation): Substrate's
/// `blake2_256`.
pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(data).into()
}

/// Ethereum's Keccak-256 (the original Keccak padding), not FIPS 202 SHA3-256.
pub fn keccak_256(data: &[u8]) -> [u8; 32] {
    sha3::Keccak256::digest(data).into()
}

/// SHA-256 (FIPS 180-4).
pub fn sha2_256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// BLAKE3 in its default hashing mode, 32-byte output.
pub fn blake3(data: &[u8]) -> [u8; 32] {
    *::blake3::hash(data).as_bytes()
}

/// Substrate's `twox_128`: `XXH64(data, seed 0)` then `XXH64(data, seed 1)`, each as 8
/// little-endian bytes. Fast, not cryptographic.
pub fn twox_128(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let (first, second) = out.split_at_mut(8);
    first.copy_from_slice(&twox_hash::XxHash64::oneshot(0, data).to_le_bytes());
    second.copy_from_slice(&twox_hash::XxHash64::oneshot(1, data).to_le_bytes());
    out
}

/// Ed25519 verification under the ZIP-215 rules (see the module documentation): `true` iff
/// `signature` is 64 bytes, `public_key` 32 bytes, and the signature is valid for `message`.
pub fn ed25519_verify(signature: &[u8], message: &[u8], public_key: &[u8]) -> bool {
    let (Ok(signature), Ok(public_key)) = (
        <[u8; 64]>::try_from(signature),
        <[u8; 32]>::try_from(public_key),
    ) else {
        return false;
    };
    // Decoding A: any encoding of a curve point, canonical or not, of any order.
    let Ok(key) = ed25519_zebra::VerificationKey::try_from(public_key) else {
        return false;
    };
    // The S < ℓ check, the decoding of R and the cofactored equation are all inside `verify`.
    key.verify(&ed25519_zebra::Signature::from_bytes(&signature), message)
        .is_ok()
}

/// sr25519 (schnorrkel) verification with the signing context `b"substrate"`, as Polkadot's
/// `sp_io::crypto::sr25519_verify` version 2: `true` iff `signature` is a 64-byte marked
/// schnorrkel signature, `public_key` a 32-byte canonical Ristretto point, and the signature is
/// valid for `message`.
pub fn sr25519_verify(signature: &[u8], message: &[u8], public_key: &[u8]) -> bool {
    // merlin asserts that a message fits a 32-bit length; answer instead of panicking.
    if u32::try_from(message.len()).is_err() {
        return false;
    }
    // Checks the length, the marker bit and that `s` is canonical.
    let Ok(signature) = schnorrkel::Signature::from_bytes(signature) else {
        return false;
    };
    // Checks the length and decodes the Ristretto point (canonical encodings only).
    let Ok(public_key) = schnorrkel::PublicKey::from_bytes(public_key) else {
        return false;
    };
    public_key
        .verify_simple(SR25519_SIGNING_CONTEXT, message, &signature)
        .is_ok()
}

/// secp256k1 ECDSA public-key recovery, as Polkadot's `sp_io::crypto::secp256k1_ecdsa_recover`
/// (versions 2 and 3): `signature` is 65 bytes `r ‖ s ‖ v`, `message_hash` the 32-byte prehash;
/// the answer is the signer's uncompressed public key `x ‖ y` (no `0x04` prefix), or `None` if the
/// input is malformed or recovers no key. High `s` is accepted; see the module documentation.
pub fn secp256k1_ecdsa_recover(signature: &[u8], message_hash: &[u8]) -> Option<[u8; 64]> {
    let signature: &[u8; 65] = signature.try_into().ok()?;
    let message_hash: &[u8; 32] = message_hash.try_into().ok()?;
    let (rs, v) = (&signature[..64], signature[64]);
    // `v` 27/28 is Ethereum's legacy encoding of 0/1; as sp_io, subtract 27 from anything ≥ 27.
    let id = RecoveryId::from_byte(if v >= 27 { v - 27 } else { v })?;
    // r and s must each be in [1, n − 1]; an overflowing or zero value is no signature.
    let rs = EcdsaSignature::from_slice(rs).ok()?;
    // k256 checks the recovered key by verifying the signature with it, and its verification
    // refuses high s; libsecp256k1's recovery does not. Recover with (r, n − s) and the other
    // parity of R instead: Q = r⁻¹(sR − zG) and (−s)(−R) = sR, so it is the same key, and every
    // (r, s, id) that libsecp256k1 recovers from, this recovers the same key from.
    let (rs, id) = match rs.normalize_s() {
        Some(low_s) => (low_s, RecoveryId::new(!id.is_y_odd(), id.is_x_reduced())),
        None => (rs, id),
    };
    let key = VerifyingKey::recover_from_prehash(message_hash, &rs, id).ok()?;
    let encoded = key.to_encoded_point(false);
    let uncompressed: &[u8; 65] = encoded.as_bytes().try_into().ok()?;
    let mut out = [0u8; 64];
    out.copy_from_slice(&uncompressed[1..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes hex (whitespace ignored) in a test vector; panics on a malformed vector.
    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        assert!(digits.len().is_multiple_of(2), "odd-length hex: {text}");
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii hex");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    /// [`unhex`] into a fixed-size array.
    fn unhex_array<const N: usize>(text: &str) -> [u8; N] {
        unhex(text).try_into().expect("vector of the stated length")
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // ---------------------------------------------------------------------------------------
    // RULES and the lock file.

    /// Every crate that decides a verdict, at the version `RULES` states.
    const PINNED: &[(&str, &str)] = &[
        ("blake2", "0.10.6"),
        ("sha2", "0.10.9"),
        ("sha3", "0.10.9"),
        ("keccak", "0.1.6"),
        ("blake3", "1.8.7"),
        ("twox-hash", "2.1.5"),
        ("ed25519-zebra", "4.2.0"),
        ("ed25519", "2.2.3"),
        ("curve25519-dalek", "4.1.3"),
        ("schnorrkel", "0.11.5"),
        ("merlin", "3.0.0"),
        ("k256", "0.13.4"),
        ("ecdsa", "0.16.9"),
        ("elliptic-curve", "0.13.8"),
        ("crypto-bigint", "0.5.5"),
    ];

    #[test]
    fn rules_name_the_locked_versions_of_every_verdict_crate() {
        let lock = include_str!("../../../../Cargo.lock");
        let mut locked: Vec<(&str, &str)> = Vec::new();
        let mut lines = lock.lines();
        while let Some(line) = lines.next() {
            if let Some(name) = line
                .strip_prefix("name = \"")
                .and_then(|n| n.strip_suffix('"'))
            {
                let version = lines
                    .next()
                    .and_then(|l| l.strip_prefix("version = \""))
                    .and_then(|v| v.strip_suffix('"'))
                    .expect("a version line follows each name line in Cargo.lock");
                locked.push((name, version));
            }
        }
        for &(name, version) in PINNED {
            let versions: Vec<&str> = locked
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(
                versions,
                [version],
                "Cargo.lock has {name} {versions:?}; RULES says {version}. A version change of a \
                 verdict crate must be reviewed and RULES (the extension's digest) updated."
            );
            assert!(
                RULES.contains(&format!("{name} {version}")),
                "RULES must name {name} {version}"
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // Hashes.

    #[test]
    fn blake2b_256_matches_published_vectors() {
        // BLAKE2b-256 (digest length 32, unkeyed) of "" and "abc": the values in the BLAKE2
        // reference implementation's b2sum (`b2sum -l 256`) and in Substrate's blake2_256.
        assert_eq!(
            hex(&blake2b_256(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
        assert_eq!(
            hex(&blake2b_256(b"abc")),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
    }

    #[test]
    fn keccak_256_is_ethereums_keccak_not_sha3() {
        // Ethereum's well-known constants: keccak256("") (the empty code hash) and "abc".
        assert_eq!(
            hex(&keccak_256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        assert_eq!(
            hex(&keccak_256(b"abc")),
            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
        );
        // EIP-155's example: the keccak256 of its "signing data" is its "signing hash".
        assert_eq!(
            hex(&keccak_256(&unhex(
                "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080"
            ))),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
        );
        // FIPS 202 SHA3-256("") (NIST's example values) is a different digest.
        let sha3_256_empty = "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a";
        assert_ne!(hex(&keccak_256(b"")), sha3_256_empty);
        assert_eq!(hex(&sha3::Sha3_256::digest(b"")), sha3_256_empty);
    }

    #[test]
    fn sha2_256_matches_fips_180_vectors() {
        // FIPS 180-2 appendix B.1 ("abc") and B.2 (the 448-bit message), and SHA-256("").
        assert_eq!(
            hex(&sha2_256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha2_256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha2_256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn blake3_matches_official_vectors() {
        // BLAKE3's test_vectors.json: input i % 251 for i in 0..len, default hash, first 32 bytes.
        let input = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        assert_eq!(
            hex(&blake3(&input(0))),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            hex(&blake3(&input(1))),
            "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
        );
        assert_eq!(
            hex(&blake3(&input(1024))),
            "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"
        );
    }

    #[test]
    fn twox_128_matches_substrate_storage_prefixes() {
        // Substrate's storage keys are twox_128(pallet) ++ twox_128(item); these are the
        // published keys of System.Number, System.Account and Balances.TotalIssuance.
        assert_eq!(
            hex(&twox_128(b"System")),
            "26aa394eea5630e07c48ae0c9558cef7"
        );
        assert_eq!(
            hex(&twox_128(b"Number")),
            "02a5c1b19ab7a04f536c519aca4983ac"
        );
        assert_eq!(
            hex(&twox_128(b"Account")),
            "b99d880ec681799c0cf30e8886371da9"
        );
        assert_eq!(
            hex(&twox_128(b"Balances")),
            "c2261276cc9d1f8598ea4b6a74b15c2f"
        );
        assert_eq!(
            hex(&twox_128(b"TotalIssuance")),
            "57c875e4cff74148e4628f264b974c80"
        );
        // twox_128(""): Substrate's runtime-interface tests (the first half of their twox_256("")
        // vector); its first 8 bytes are XXH64("", 0) = 0xef46db3751d8e999, little-endian.
        assert_eq!(hex(&twox_128(b"")), "99e9d85137db46ef4bbea33613baafd5");
    }

    // ---------------------------------------------------------------------------------------
    // ed25519.

    /// RFC 8032 §7.1, TESTs 1, 2, 3 and SHA(abc): (public key, message, signature).
    const RFC8032: &[(&str, &str, &str)] = &[
        (
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
        (
            "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
        ),
    ];

    #[test]
    fn ed25519_accepts_rfc8032_vectors() {
        for (public_key, message, signature) in RFC8032 {
            assert!(
                ed25519_verify(&unhex(signature), &unhex(message), &unhex(public_key)),
                "RFC 8032 vector with key {public_key}"
            );
        }
    }

    #[test]
    fn ed25519_accepts_rfc8032_test_1024() {
        // RFC 8032 §7.1 TEST 1024: a 1023-byte message (vectors/rfc8032_test_1024.hex).
        let message = unhex(include_str!("vectors/rfc8032_test_1024.hex"));
        assert_eq!(message.len(), 1023);
        let public_key = unhex("278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e");
        let signature = unhex(
            "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350\
             aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03",
        );
        assert!(ed25519_verify(&signature, &message, &public_key));
        let mut altered = message.clone();
        altered[1022] ^= 1;
        assert!(!ed25519_verify(&signature, &altered, &public_key));
    }

    #[test]
    fn ed25519_rejects_any_flipped_bit() {
        let (public_key, message, signature) = RFC8032[1];
        let (public_key, message, signature) =
            (unhex(public_key), unhex(message), unhex(signature));
        for bit in 0..8 * 64 {
            let mut bad = signature.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !ed25519_verify(&bad, &message, &public_key),
                "signature bit {bit}"
            );
        }
        for bit in 0..8 * 32 {
            let mut bad = public_key.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !ed25519_verify(&signature, &message, &bad),
                "public key bit {bit}"
            );
        }
        for bit in 0..8 {
            let mut bad = message.clone();
            bad[0] ^= 1 << bit;
            assert!(
                !ed25519_verify(&signature, &bad, &public_key),
                "message bit {bit}"
            );
        }
    }

    #[test]
    fn ed25519_rejects_wrong_lengths() {
        let (public_key, message, signature) = RFC8032[2];
        let (public_key, message, signature) =
            (unhex(public_key), unhex(message), unhex(signature));
        assert!(ed25519_verify(&signature, &message, &public_key));
        assert!(!ed25519_verify(&signature[..63], &message, &public_key));
        assert!(!ed25519_verify(
            &[&signature[..], &[0]].concat(),
            &message,
            &public_key
        ));
        assert!(!ed25519_verify(&signature, &message, &public_key[..31]));
        assert!(!ed25519_verify(
            &signature,
            &message,
            &[&public_key[..], &[0]].concat()
        ));
        assert!(!ed25519_verify(&[], &message, &public_key));
        assert!(!ed25519_verify(&signature, &message, &[]));
    }

    #[test]
    fn ed25519_requires_canonical_s() {
        // ZIP-215 (like RFC 8032) requires S < ℓ: RFC 8032 TEST 1 with S + ℓ in place of S is
        // the same point equation but must be rejected.
        let (public_key, message, signature) = RFC8032[0];
        let (public_key, message, mut signature) =
            (unhex(public_key), unhex(message), unhex(signature));
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let ell = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut carry = 0u16;
        for (s, l) in signature[32..].iter_mut().zip(&ell) {
            let sum = u16::from(*s) + u16::from(*l) + carry;
            *s = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "S + ℓ fits in 256 bits");
        assert!(!ed25519_verify(&signature, &message, &public_key));
    }

    /// The canonical encodings of the eight points of small order (the 8-torsion), then the six
    /// non-canonical encodings of small-order points: `ed25519-zebra`'s `tests/small_order.rs`
    /// (`EIGHT_TORSION` and the first six of `util::non_canonical_point_encodings`), the ZIP-215
    /// conformance set.
    const SMALL_ORDER_ENCODINGS: [&str; 14] = [
        // Canonical: the identity, then points of order 8, 4, 8, 2, 8, 4 and 8.
        "0100000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        // Non-canonical: y = 1 with the sign bit set (x = 0 cannot be negative) ...
        "0100000000000000000000000000000000000000000000000000000000000080",
        // ... y = −1 with the sign bit set ...
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        // ... y = p (≡ 0), both signs, and y = p + 1 (≡ 1), both signs.
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];

    #[test]
    fn ed25519_zip215_accepts_small_order_and_non_canonical_points() {
        // With A and R of small order and S = 0, the cofactored equation
        // [8]([0]B − R − [k]A) = 0 holds for any message, so ZIP-215 accepts all 196 pairs
        // (ed25519-zebra's `small_order::conformance`, `valid_zip215 = true` for each). Strict
        // RFC 8032 verifiers reject all of them (small-order A or R), and legacy cofactorless
        // ones reject most (they need R + [k]A = 0 exactly, and canonical R).
        for message in [&b"Zcash"[..], b"", b"pvf"] {
            for a in SMALL_ORDER_ENCODINGS {
                for r in SMALL_ORDER_ENCODINGS {
                    let signature = [unhex(r), vec![0; 32]].concat();
                    assert!(
                        ed25519_verify(&signature, message, &unhex(a)),
                        "A = {a}, R = {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn ed25519_rejects_encodings_off_the_curve() {
        // y = 2 is not the y coordinate of a curve point ((y² − 1)/(d·y² + 1) is not a square
        // mod p); as A or as R it is false.
        let not_a_point = unhex("0200000000000000000000000000000000000000000000000000000000000000");
        let (public_key, message, signature) = RFC8032[1];
        let (public_key, message, signature) =
            (unhex(public_key), unhex(message), unhex(signature));
        assert!(!ed25519_verify(&signature, &message, &not_a_point));
        let bad_r = [not_a_point.clone(), signature[32..].to_vec()].concat();
        assert!(!ed25519_verify(&bad_r, &message, &public_key));
        // And with S = 0 against a small-order key, where only R's decoding can fail.
        let small_a = unhex(SMALL_ORDER_ENCODINGS[0]);
        assert!(!ed25519_verify(
            &[not_a_point, vec![0; 32]].concat(),
            b"",
            &small_a
        ));
    }

    // ---------------------------------------------------------------------------------------
    // sr25519.

    /// Alice's published sr25519 key (Substrate's `//Alice`, `sp-core`'s
    /// `derive_hard_known_pair_should_work`).
    const ALICE: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";

    /// A signature by Alice under the "substrate" context from the ink! repository's
    /// `integration-tests/internal/sr25519-verification` contract test (`test_sr25519_verify_valid`),
    /// of the 49-byte message below.
    const ALICE_SIGNATURE: &str = "0a7da2b631704cdcfe93c740e41217b9ac667a0c8755d8da1a8232db527f487c\
                                   87e780d2edc1896aeb6b1bef0bc7c38d9df2135b633eab8bfb1777e82fad3a8f";
    const ALICE_MESSAGE: &[u8] = b"<Bytes>0x46fb7408d4f285228f4af516ea25851b</Bytes>";

    #[test]
    fn sr25519_accepts_a_published_signature() {
        let (signature, public_key) = (unhex(ALICE_SIGNATURE), unhex(ALICE));
        assert!(sr25519_verify(&signature, ALICE_MESSAGE, &public_key));
        // The same vectors' negative cases: first byte of the message, key or signature + 1.
        let mut message = ALICE_MESSAGE.to_vec();
        message[0] += 1;
        assert!(!sr25519_verify(&signature, &message, &public_key));
        let mut bad_key = public_key.clone();
        bad_key[0] += 1;
        assert!(!sr25519_verify(&signature, ALICE_MESSAGE, &bad_key));
        let mut bad_signature = signature.clone();
        bad_signature[0] += 1;
        assert!(!sr25519_verify(&bad_signature, ALICE_MESSAGE, &public_key));
    }

    #[test]
    fn sr25519_rejects_unmarked_pre_0_8_signatures() {
        // sp-core's `verify_known_old_message_should_work`: a schnorrkel 0.1.1 signature that
        // `verify_deprecated` (sp_io sr25519_verify version 1) accepts and `verify` (version 2,
        // our rule) rejects, since it lacks the marker bit.
        let public_key = unhex("b4bfa1f7a5166695eb75299fd1c4c03ea212871c342f2c5dfea0902b2c246918");
        let signature = unhex(
            "5a9755f069939f45d96aaf125cf5ce7ba1db998686f87f2fb3cbdea922078741\
             a73891ba265f70c31436e18a9acd14d189d73c12317ab6c313285cd938453202",
        );
        let message =
            b"Verifying that I am the owner of 5G9hQLdsKQswNPgB499DeA5PkFBbgkLPJWkkS6FAM6xGQ8xD. Hash: 221455a3\n";
        assert_eq!(signature[63] & 0x80, 0, "no marker");
        assert!(!sr25519_verify(&signature, message, &public_key));
        // sp-core's `verify_from_old_wasm_works`: the same for schnorrkel-js output, seed zero.
        let signature = unhex(
            "28a854d54903e056f89581c691c1f7d2ff39f8f896c9e9c22475e60902cc2b35\
             47199e0e91fa32902028f2ca2355e8cdd16cfe19ba5e8b658c94aa80f3b81a00",
        );
        let public_key = keypair_from_seed(&[0; 32]).public.to_bytes();
        assert!(!sr25519_verify(&signature, b"SUBSTRATE", &public_key));
        // Setting the marker does not make such a signature valid under the current scheme.
        let mut marked = signature.clone();
        marked[63] |= 0x80;
        assert!(!sr25519_verify(&marked, b"SUBSTRATE", &public_key));
    }

    /// A deterministic stand-in for the signer's randomness, so tests can sign without an RNG
    /// (schnorrkel mixes it with the secret nonce and the transcript; any bytes make a valid
    /// signature). The verifier never uses randomness.
    struct CountingRng(u64);

    impl k256::elliptic_curve::rand_core::RngCore for CountingRng {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let word = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        }
        fn try_fill_bytes(
            &mut self,
            dest: &mut [u8],
        ) -> Result<(), k256::elliptic_curve::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl k256::elliptic_curve::rand_core::CryptoRng for CountingRng {}

    /// Substrate's `sr25519::Pair::from_seed`: a mini secret key expanded in Ed25519 mode.
    fn keypair_from_seed(seed: &[u8; 32]) -> schnorrkel::Keypair {
        schnorrkel::MiniSecretKey::from_bytes(seed)
            .expect("32 bytes")
            .expand_to_keypair(schnorrkel::ExpansionMode::Ed25519)
    }

    fn sr25519_sign(keypair: &schnorrkel::Keypair, context: &[u8], message: &[u8]) -> [u8; 64] {
        let transcript = schnorrkel::signing_context(context).bytes(message);
        keypair
            .sign(schnorrkel::context::attach_rng(transcript, CountingRng(7)))
            .to_bytes()
    }

    #[test]
    fn sr25519_accepts_signatures_from_substrate_keys() {
        // sp-core's `sr_test_vector_should_work` and `seeded_pair_should_work`: seed → public key.
        let keys = [
            (
                unhex_array::<32>(
                    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                ),
                "44a996beb1eef7bdcab976ab6d2ca26104834164ecf28fb375600576fcc6eb0f",
            ),
            (
                *b"12345678901234567890123456789012",
                "741c08a06f41c596608f6774259bd9043304adfa5d3eea62760bd9be97634d63",
            ),
        ];
        for (seed, public) in keys {
            let keypair = keypair_from_seed(&seed);
            assert_eq!(hex(&keypair.public.to_bytes()), public);
            for message in [&b""[..], b"Something important", &[0xAB; 1000]] {
                let signature = sr25519_sign(&keypair, b"substrate", message);
                assert!(sr25519_verify(&signature, message, &unhex(public)));
                // Another message, or another key, is false.
                assert!(!sr25519_verify(
                    &signature,
                    b"something else",
                    &unhex(public)
                ));
                assert!(!sr25519_verify(&signature, message, &unhex(ALICE)));
            }
        }
    }

    #[test]
    fn sr25519_rejects_another_signing_context() {
        let keypair = keypair_from_seed(b"12345678901234567890123456789012");
        let public_key = keypair.public.to_bytes();
        let message = b"pvf";
        assert!(sr25519_verify(
            &sr25519_sign(&keypair, b"substrate", message),
            message,
            &public_key
        ));
        for context in [
            &b""[..],
            b"Substrate",
            b"substrate ",
            b"polkadot",
            b"SigningContext",
        ] {
            let signature = sr25519_sign(&keypair, context, message);
            assert!(
                keypair
                    .public
                    .verify_simple(
                        context,
                        message,
                        &schnorrkel::Signature::from_bytes(&signature).expect("well formed")
                    )
                    .is_ok(),
                "a valid signature under {context:?}"
            );
            assert!(
                !sr25519_verify(&signature, message, &public_key),
                "context {context:?}"
            );
        }
    }

    #[test]
    fn sr25519_rejects_wrong_lengths_and_malformed_inputs() {
        let (signature, public_key) = (unhex(ALICE_SIGNATURE), unhex(ALICE));
        let message = ALICE_MESSAGE;
        assert!(sr25519_verify(&signature, message, &public_key));
        assert!(!sr25519_verify(&signature[..63], message, &public_key));
        assert!(!sr25519_verify(
            &[&signature[..], &[0]].concat(),
            message,
            &public_key
        ));
        assert!(!sr25519_verify(&signature, message, &public_key[..31]));
        assert!(!sr25519_verify(
            &signature,
            message,
            &[&public_key[..], &[0]].concat()
        ));
        assert!(!sr25519_verify(&[], message, &[]));
        // The marker bit cleared.
        let mut unmarked = signature.clone();
        unmarked[63] &= 0x7f;
        assert!(!sr25519_verify(&unmarked, message, &public_key));
        // A non-canonical s: every bit set (with the marker) is far above ℓ.
        let mut big_s = signature.clone();
        big_s[32..].fill(0xff);
        assert!(!sr25519_verify(&big_s, message, &public_key));
        // A key that is no canonical Ristretto encoding (a negative field element).
        let mut bad_key = public_key.clone();
        bad_key[0] |= 1;
        assert!(!sr25519_verify(&signature, message, &bad_key));
        // Flipping any bit of the signature is false.
        for bit in 0..8 * 64 {
            let mut bad = signature.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!sr25519_verify(&bad, message, &public_key), "bit {bit}");
        }
    }

    // ---------------------------------------------------------------------------------------
    // secp256k1.

    /// EIP-155's example: the legacy transaction (nonce 9, to 0x3535…35, 1 ether) signed with
    /// the private key 0x4646…46; its signing hash, and r and s from its signed transaction
    /// (v = 37, i.e. recovery id 0 on chain 1). The sender is 0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F.
    const EIP155_HASH: &str = "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53";
    const EIP155_R: &str = "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276";
    const EIP155_S: &str = "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
    const EIP155_SENDER: &str = "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f";

    /// n, the order of secp256k1's group, big-endian.
    const SECP256K1_N: &str = "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141";

    fn rsv(r: &[u8], s: &[u8], v: u8) -> Vec<u8> {
        [r, s, &[v]].concat()
    }

    /// Big-endian 256-bit `a − b` (a ≥ b).
    fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
            borrow = i16::from(d < 0);
            if d < 0 {
                d += 256;
            }
            out[i] = d as u8;
        }
        assert_eq!(borrow, 0);
        out
    }

    fn address(public_key: &[u8; 64]) -> String {
        hex(&keccak_256(public_key)[12..])
    }

    #[test]
    fn secp256k1_recovers_the_eip155_sender() {
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let key = secp256k1_ecdsa_recover(&rsv(&r, &s, 0), &hash).expect("recovers");
        assert_eq!(address(&key), EIP155_SENDER);
        // The same key that the private key 0x4646…46 has.
        let secret = k256::ecdsa::SigningKey::from_slice(&[0x46; 32]).expect("a valid scalar");
        let expected = secret.verifying_key().to_encoded_point(false);
        assert_eq!(&key[..], &expected.as_bytes()[1..]);
        // Ethereum's legacy v = 27 is the same recovery id.
        assert_eq!(secp256k1_ecdsa_recover(&rsv(&r, &s, 27), &hash), Some(key));
        // The other parity recovers some other key (it is a different point R).
        let other = secp256k1_ecdsa_recover(&rsv(&r, &s, 1), &hash).expect("recovers");
        assert_ne!(other, key);
        assert_eq!(
            secp256k1_ecdsa_recover(&rsv(&r, &s, 28), &hash),
            Some(other)
        );
        // Cross-checked with an independent big-integer implementation of SEC 1 §4.1.6.
        assert_eq!(
            hex(&other),
            "5bcb07804fccffa8628b7151c4cce54f1251d59144736ddfe3bafacf45c5f8ec\
             f48f8d6febdcc650a9e2e3cf464ef4dc31f28eb805f03f87d7ae9860703e6ad0"
        );
        // Another hash recovers another key.
        let mut other_hash = hash.clone();
        other_hash[31] ^= 1;
        let moved = secp256k1_ecdsa_recover(&rsv(&r, &s, 0), &other_hash).expect("recovers");
        assert_ne!(moved, key);
    }

    #[test]
    fn secp256k1_accepts_high_s_like_libsecp256k1_recovery() {
        // Our choice (sp_io versions 2 and 3 use libsecp256k1's recovery, which accepts high s):
        // (r, n − s) with the other parity recovers the same key as (r, s).
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let high_s = sub_be(&unhex(SECP256K1_N), &s);
        assert!(high_s[0] >= 0x80, "n − s is in the upper half");
        let key = secp256k1_ecdsa_recover(&rsv(&r, &s, 0), &hash).expect("recovers");
        assert_eq!(
            secp256k1_ecdsa_recover(&rsv(&r, &high_s, 1), &hash),
            Some(key)
        );
        assert_eq!(
            secp256k1_ecdsa_recover(&rsv(&r, &high_s, 28), &hash),
            Some(key)
        );
        // And with the same parity it is the other key, as for low s.
        let other = secp256k1_ecdsa_recover(&rsv(&r, &s, 1), &hash).expect("recovers");
        assert_eq!(
            secp256k1_ecdsa_recover(&rsv(&r, &high_s, 0), &hash),
            Some(other)
        );
    }

    #[test]
    fn secp256k1_v_is_0_to_3_or_27_to_30() {
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let ok = |v: u8| secp256k1_ecdsa_recover(&rsv(&r, &s, v), &hash).is_some();
        assert!(ok(0) && ok(1) && ok(27) && ok(28));
        // Recovery ids 2 and 3 mean R.x = r + n, which for this r (like for almost every r) is
        // not below p, so they recover nothing; see the next test for an r where they do.
        for v in [2, 3, 29, 30] {
            assert!(!ok(v), "v = {v}");
        }
        // Anything else is not a recovery id at all.
        for v in (4..=26).chain(31..=255) {
            assert!(!ok(v), "v = {v}");
        }
    }

    #[test]
    fn secp256k1_recovery_ids_2_and_3_use_r_plus_n() {
        // r = 2: both 2 and 2 + n are x coordinates of curve points (2 + n < p), so all four
        // recovery ids give a key, each a different one. Expected keys from an independent
        // big-integer implementation of SEC 1 §4.1.6 / libsecp256k1's recovery.
        let hash = unhex(EIP155_HASH);
        let mut r = [0u8; 32];
        r[31] = 2;
        let s = unhex(EIP155_S);
        let expected = [
            "f0f87119f68374f2f2a91ba0f6f37b69a49f5f89a58c05ad9b13093a6ff27af3a576280dfcb7557c525cf5c8a0f6e21000b8e5869eb05815b44d1a5f50d9aaea",
            "5eb433aa3c4bb45b59c2ef307199c3d3e821516439aaa577b6269661e62e0d9983c646b4eb61340a5bbf6d4352adc434d7b3cfeb97e42942af0eaf9bccda598e",
            "34e2c66cf4acff0f49f776c6c6c4178b9b08a93de5de8049fb92c9a43709b1bc28da808811aa04801d4997ae373d852f3dca6a9a2be6a49982641ca4a0155e13",
            "036ffec6922e62f64a690c29c308703041a3f33eaea00cd28168fc8db0ab17f2be0d5ddbbc55ad34c50ea1b80b36af7dce90568eb3cf5c622457b0af41607d62",
        ];
        for (id, expected) in (0u8..).zip(expected) {
            let key = secp256k1_ecdsa_recover(&rsv(&r, &s, id), &hash).expect("recovers");
            assert_eq!(hex(&key), expected, "id {id}");
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&r, &s, id + 27), &hash),
                Some(key)
            );
        }
        // High s with ids 2 and 3 flips the parity too.
        let high_s = sub_be(&unhex(SECP256K1_N), &s);
        assert_eq!(
            secp256k1_ecdsa_recover(&rsv(&r, &high_s, 3), &hash).map(|k| hex(&k)),
            Some(expected[2].to_string())
        );
    }

    #[test]
    fn secp256k1_rejects_out_of_range_r_and_s() {
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let n = unhex(SECP256K1_N);
        let zero = [0u8; 32];
        for v in [0, 1, 27, 28] {
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&zero, &s, v), &hash),
                None,
                "r = 0"
            );
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&r, &zero, v), &hash),
                None,
                "s = 0"
            );
            // n and above are not reduced (sp_io version 1's parse_overflowing did reduce).
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&n, &s, v), &hash),
                None,
                "r = n"
            );
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&r, &n, v), &hash),
                None,
                "s = n"
            );
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&[0xff; 32], &s, v), &hash),
                None
            );
            assert_eq!(
                secp256k1_ecdsa_recover(&rsv(&r, &[0xff; 32], v), &hash),
                None
            );
        }
        // Nor is anything between n and 2²⁵⁶: r = n + 2 is none, although r = 2 recovers a key
        // (see the previous test).
        let mut n_plus_2 = n.clone();
        n_plus_2[31] += 2;
        assert_eq!(secp256k1_ecdsa_recover(&rsv(&n_plus_2, &s, 0), &hash), None);
        // An r that is no x coordinate of the curve: x = 5 has no y (5³ + 7 = 132 is not a
        // square mod p), so R cannot be decompressed for either parity.
        let mut five = [0u8; 32];
        five[31] = 5;
        assert_eq!(secp256k1_ecdsa_recover(&rsv(&five, &s, 0), &hash), None);
        assert_eq!(secp256k1_ecdsa_recover(&rsv(&five, &s, 1), &hash), None);
    }

    #[test]
    fn secp256k1_rejects_wrong_lengths() {
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let signature = rsv(&r, &s, 0);
        assert!(secp256k1_ecdsa_recover(&signature, &hash).is_some());
        assert_eq!(secp256k1_ecdsa_recover(&signature[..64], &hash), None);
        assert_eq!(
            secp256k1_ecdsa_recover(&[&signature[..], &[0]].concat(), &hash),
            None
        );
        assert_eq!(secp256k1_ecdsa_recover(&signature, &hash[..31]), None);
        assert_eq!(
            secp256k1_ecdsa_recover(&signature, &[&hash[..], &[0]].concat()),
            None
        );
        assert_eq!(secp256k1_ecdsa_recover(&[], &[]), None);
    }

    // ---------------------------------------------------------------------------------------
    // Totality.

    /// xorshift64*, for reproducible pseudo-random inputs without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> usize {
            (self.next() % bound) as usize
        }

        /// Bytes of a length that is, half the time, one of the lengths the functions accept
        /// (and its neighbours), so that inputs get past the length checks.
        fn bytes(&mut self, lengths: &[usize]) -> Vec<u8> {
            let len = if self.next() & 1 == 0 {
                lengths[self.below(lengths.len() as u64)]
            } else {
                self.below(300)
            };
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// `valid` with, usually, a few bytes or bits changed.
        fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
            let mut out = valid.to_vec();
            for _ in 0..self.below(4) {
                if out.is_empty() {
                    break;
                }
                let at = self.below(out.len() as u64);
                out[at] = if self.next() & 1 == 0 {
                    self.next() as u8
                } else {
                    out[at] ^ (1 << self.below(8))
                };
            }
            out
        }
    }

    #[test]
    fn no_input_makes_any_function_panic() {
        let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
        let (ed_key, ed_message, ed_signature) = RFC8032[1];
        let (ed_key, ed_message, ed_signature) =
            (unhex(ed_key), unhex(ed_message), unhex(ed_signature));
        let (sr_key, sr_signature) = (unhex(ALICE), unhex(ALICE_SIGNATURE));
        let ec_signature = rsv(&unhex(EIP155_R), &unhex(EIP155_S), 0);
        let ec_hash = unhex(EIP155_HASH);
        let signature_lengths = [0, 31, 32, 33, 63, 64, 65, 66];
        // How often the mutated valid inputs still verify or recover: proof that the loop reaches
        // the arithmetic, not only the length checks.
        let (mut ed_true, mut sr_true, mut ec_some) = (0, 0, 0);
        for _ in 0..2_000 {
            let data = rng.bytes(&[0, 1, 127, 128, 129, 135, 136, 137]);
            let _ = blake2b_256(&data);
            let _ = keccak_256(&data);
            let _ = sha2_256(&data);
            let _ = blake3(&data);
            let _ = twox_128(&data);

            // Random inputs, then mutations of valid ones (which reach the curve arithmetic).
            let (signature, key) = (rng.bytes(&signature_lengths), rng.bytes(&signature_lengths));
            let _ = ed25519_verify(&signature, &data, &key);
            let _ = sr25519_verify(&signature, &data, &key);
            let _ = secp256k1_ecdsa_recover(&signature, &key);
            let _ = secp256k1_ecdsa_recover(&signature, &data);

            ed_true += usize::from(ed25519_verify(
                &rng.mutate(&ed_signature),
                &rng.mutate(&ed_message),
                &rng.mutate(&ed_key),
            ));
            sr_true += usize::from(sr25519_verify(
                &rng.mutate(&sr_signature),
                &rng.mutate(ALICE_MESSAGE),
                &rng.mutate(&sr_key),
            ));
            let mut ec = rng.mutate(&ec_signature);
            if let Some(v) = ec.get_mut(64) {
                // Any v, but a recovery id (0–3 or 27–30) a quarter of the time.
                *v = match rng.below(4) {
                    0 => [0, 1, 2, 3, 27, 28, 29, 30][rng.below(8)],
                    _ => rng.next() as u8,
                };
            }
            ec_some += usize::from(secp256k1_ecdsa_recover(&ec, &rng.mutate(&ec_hash)).is_some());
        }
        assert!(
            ed_true > 10 && sr_true > 10 && ec_some > 10,
            "{ed_true} {sr_true} {ec_some}"
        );
    }

    #[test]
    fn answers_do_not_change_between_calls() {
        // No hidden state: the same call twice gives the same answer (and the valid vectors stay
        // valid after many other calls have run in this process).
        let (hash, r, s) = (unhex(EIP155_HASH), unhex(EIP155_R), unhex(EIP155_S));
        let signature = rsv(&r, &s, 0);
        let first = secp256k1_ecdsa_recover(&signature, &hash);
        for _ in 0..3 {
            assert_eq!(secp256k1_ecdsa_recover(&signature, &hash), first);
            assert!(sr25519_verify(
                &unhex(ALICE_SIGNATURE),
                ALICE_MESSAGE,
                &unhex(ALICE)
            ));
            assert_eq!(twox_128(b"System"), twox_128(b"System"));
        }
    }
}
