//! What the `pvf:crypto` extension costs and saves, measured in one run:
//!
//! 1. **The fuel rate**: a warm `undying` validation from the in-memory cache, its time over the
//!    fuel it consumed, in ns per fuel unit — what one unit of a price is worth in time here.
//! 2. **Prices against costs**: each function called natively (median of batches of calls)
//!    for typical inputs, its price in fuel (`HOST_CALL_FUEL` + base + per byte), and the price
//!    in ns at the fuel rate over the measured cost: above 1 means the guest pays at least what
//!    the host works.
//! 3. **A batch of signatures**: warm validations of `sig_verify` (each signature checked by the
//!    host's `ed25519-verify`) and `sig_verify_wasm` (the same ed25519-zebra compiled into the
//!    guest) for batches of 1 and 16, interleaved, medians in µs, with their fuel; and the
//!    in-wasm guest run by raw wasmtime on a kept `InstancePre` (no extension; what the library
//!    adds on top of wasmtime).
//!
//! Run: `cargo bench -p pvf-host --bench extensions` (`PVF_EXTENSIONS_ITERATIONS`, default 201).
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Guest, Raw, median, open_host, wit_params};
use pvf_host::extensions::crypto::{CryptoExtension, algorithms};
use pvf_host::extensions::{Extension, Price};
use pvf_host::{CacheStatus, Config, HOST_CALL_FUEL, ValidationParams, Verdict};
use pvf_test_guests::batches;
use tempfile::TempDir;

/// EIP-155's example signature (r ‖ s ‖ v) and signing hash.
const EIP155_RSV: &str = "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276\
                          67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83\
                          00";
const EIP155_HASH: &str = "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53";
/// Alice's sr25519 signature of `ALICE_MESSAGE` under the "substrate" context (ink!'s test).
const ALICE: &str = "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";
const ALICE_SIGNATURE: &str = "0a7da2b631704cdcfe93c740e41217b9ac667a0c8755d8da1a8232db527f487c\
                               87e780d2edc1896aeb6b1bef0bc7c38d9df2135b633eab8bfb1777e82fad3a8f";
const ALICE_MESSAGE: &[u8] = b"<Bytes>0x46fb7408d4f285228f4af516ea25851b</Bytes>";

fn main() {
    let iterations: usize = std::env::var("PVF_EXTENSIONS_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(201);
    let ns_per_fuel = fuel_rate(iterations);
    println!("fuel rate (warm undying): {ns_per_fuel:.3} ns per fuel unit\n");
    prices(iterations, ns_per_fuel);
    println!();
    batches_of_signatures(iterations);
}

/// ns per fuel unit: a warm `undying` validation's median time over its fuel.
fn fuel_rate(iterations: usize) -> f64 {
    let guest = Guest::load("undying");
    let dir = TempDir::new().expect("tempdir");
    let host = open_host(dir.path(), Config::new());
    host.prepare(&guest.code).expect("prepare");
    let mut samples = Vec::with_capacity(iterations);
    let mut fuel = 0;
    for _ in 0..iterations {
        let started = Instant::now();
        let outcome = host.validate_hash(&guest.hash, &guest.params);
        samples.push(started.elapsed());
        guest.check_pvf(&outcome, CacheStatus::Hit);
        fuel = outcome.fuel_consumed.expect("it ran");
    }
    median(&mut samples).as_nanos() as f64 / fuel as f64
}

/// The median time of one call of `f`, from batches of `per_batch` calls.
fn per_call(iterations: usize, per_batch: u32, mut f: impl FnMut()) -> Duration {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations.div_ceil(4) {
        let started = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        samples.push(started.elapsed() / per_batch);
    }
    median(&mut samples)
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn prices(iterations: usize, ns_per_fuel: f64) {
    let functions = CryptoExtension.functions();
    let price = |name: &str| -> Price {
        functions
            .iter()
            .find(|f| f.name() == name)
            .map(|f| f.price())
            .expect("a pvf:crypto function")
    };
    let small = vec![0x5a; 32];
    let large = vec![0xa5; 16 * 1024];
    let (message, signature, key) = batches::signed_items(1, 3)
        .into_iter()
        .next()
        .expect("one item");
    let (rsv, hash) = (unhex(EIP155_RSV), unhex(EIP155_HASH));
    let (alice, alice_signature) = (unhex(ALICE), unhex(ALICE_SIGNATURE));
    assert!(algorithms::ed25519_verify(&signature, &message, &key));
    assert!(algorithms::sr25519_verify(
        &alice_signature,
        ALICE_MESSAGE,
        &alice
    ));
    assert!(algorithms::secp256k1_ecdsa_recover(&rsv, &hash).is_some());

    type Case<'a> = (&'static str, String, usize, Box<dyn FnMut() + 'a>);
    let mut cases: Vec<Case<'_>> = Vec::new();
    for (name, f) in [
        (
            "blake2b-256",
            algorithms::blake2b_256 as fn(&[u8]) -> [u8; 32],
        ),
        ("keccak-256", algorithms::keccak_256),
        ("sha2-256", algorithms::sha2_256),
        ("blake3", algorithms::blake3),
    ] {
        for data in [&small, &large] {
            let data = data.clone();
            cases.push((
                name,
                format!("{} B", data.len()),
                data.len(),
                Box::new(move || {
                    black_box(f(black_box(&data)));
                }),
            ));
        }
    }
    for data in [&small, &large] {
        let data = data.clone();
        cases.push((
            "twox-128",
            format!("{} B", data.len()),
            data.len(),
            Box::new(move || {
                black_box(algorithms::twox_128(black_box(&data)));
            }),
        ));
    }
    let bytes = signature.len() + message.len() + key.len();
    cases.push((
        "ed25519-verify",
        format!("{} B message", message.len()),
        bytes,
        Box::new(|| {
            assert!(black_box(algorithms::ed25519_verify(
                &signature, &message, &key
            )));
        }),
    ));
    cases.push((
        "sr25519-verify",
        format!("{} B message", ALICE_MESSAGE.len()),
        alice_signature.len() + ALICE_MESSAGE.len() + alice.len(),
        Box::new(|| {
            assert!(black_box(algorithms::sr25519_verify(
                &alice_signature,
                ALICE_MESSAGE,
                &alice
            )));
        }),
    ));
    cases.push((
        "secp256k1-ecdsa-recover",
        "EIP-155".to_string(),
        rsv.len() + hash.len(),
        Box::new(|| {
            assert!(black_box(algorithms::secp256k1_ecdsa_recover(&rsv, &hash)).is_some());
        }),
    ));
    println!(
        "| function | input | native (µs) | price (fuel, with the {HOST_CALL_FUEL} of a host call) | price at the fuel rate (µs) | price / cost |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (name, input, bytes, mut f) in cases {
        let cost = per_call(iterations, 16, &mut f);
        let fuel = HOST_CALL_FUEL + price(name).of(bytes);
        let priced = fuel as f64 * ns_per_fuel;
        println!(
            "| `{name}` | {input} | {:.2} | {fuel} | {:.2} | {:.1}x |",
            cost.as_nanos() as f64 / 1e3,
            priced / 1e3,
            priced / cost.as_nanos() as f64
        );
    }
}

fn batches_of_signatures(iterations: usize) {
    let dir = TempDir::new().expect("tempdir");
    let host = open_host(dir.path(), Config::new());
    let native = pvf_test_guests::bytes("sig_verify");
    let in_wasm = pvf_test_guests::bytes("sig_verify_wasm");
    let native_hash = host.prepare(&native).expect("prepare").code_hash;
    let in_wasm_hash = host.prepare(&in_wasm).expect("prepare").code_hash;
    let raw = Raw::new();
    let raw_pre = raw.link(&raw.compile(&in_wasm));
    println!(
        "| batch | sig_verify (host ed25519), µs | fuel | sig_verify_wasm (in-wasm ed25519), µs | fuel | in-wasm / host | raw wasmtime, in-wasm guest, µs | library / raw (in-wasm guest) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in [1usize, 16] {
        let params = ValidationParams::new(vec![0; 8], batches::signed_batch(n, 42), 7);
        let raw_params = wit_params(&params);
        let head = (n as u64).to_le_bytes();
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        let mut fuel = [0u64; 2];
        for i in 0..iterations {
            for k in 0..3 {
                let case = (i + k) % 3;
                let started = Instant::now();
                match case {
                    0 | 1 => {
                        let hash = if case == 0 {
                            &native_hash
                        } else {
                            &in_wasm_hash
                        };
                        let outcome = host.validate_hash(hash, &params);
                        samples[case].push(started.elapsed());
                        match &outcome.verdict {
                            Verdict::Valid(r) => assert_eq!(r.head_data, head),
                            other => panic!("{other:?}"),
                        }
                        fuel[case] = outcome.fuel_consumed.expect("it ran");
                    }
                    _ => {
                        let (result, _) = raw.run_pre(&raw_pre, &raw_params);
                        samples[case].push(started.elapsed());
                        assert_eq!(result.head_data, head);
                    }
                }
            }
        }
        let [a, b, c] = samples.map(|mut s| median(&mut s).as_nanos() as f64 / 1e3);
        println!(
            "| {n} | {a:.1} | {} | {b:.1} | {} | {:.2}x | {c:.1} | {:.2}x |",
            fuel[0],
            fuel[1],
            b / a,
            b / c
        );
    }
}
