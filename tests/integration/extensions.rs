//! Host extensions: the first-party `pvf:crypto@0.1.0` through real guests (`sig-verify`, which
//! calls it, against `sig-verify-wasm`, which carries its own ed25519), fuel prices charged
//! exactly, a missing extension at preparation, an embedder's own extension, composed guests,
//! and the execution-environment id.

use pvf_host::extensions::crypto::algorithms;
use pvf_host::extensions::{Body, Extension, ExtensionError, HostFunction, Price};
use pvf_host::{
    CacheStatus, Config, FailureClass, HostError, Isolation, LimitKind, ValidationError,
    ValidationParams, Verdict,
};
use pvf_test_guests::batches;

use crate::common::{
    adder_params, guest, host_with, pvf, run_json, store_dir, test_config, write_file,
};

/// The first-party price of `ed25519-verify` (see `pvf_host::extensions::crypto`).
fn ed25519_price() -> Price {
    pvf_host::extensions::crypto::CryptoExtension
        .functions()
        .iter()
        .find(|f| f.name() == "ed25519-verify")
        .expect("pvf:crypto has ed25519-verify")
        .price()
}

/// An embedder's own extension, as README's "Write your own extension" shows: here it
/// re-prices `pvf:crypto/signatures` (same id, so it replaces the first-party extension) with
/// the first-party functions.
struct Repriced(Price);

impl Extension for Repriced {
    fn id(&self) -> &str {
        "pvf:crypto@0.1.0"
    }
    fn digest(&self) -> [u8; 32] {
        *blake3::hash(algorithms::RULES.as_bytes()).as_bytes()
    }
    fn functions(&self) -> Vec<HostFunction> {
        vec![HostFunction::new(
            "pvf:crypto/signatures@0.1.0",
            "ed25519-verify",
            self.0,
            Body::Bytes3ToBool(algorithms::ed25519_verify),
        )]
    }
}

/// An extension that tries to provide an interface of WASI.
struct Impostor;

impl Extension for Impostor {
    fn id(&self) -> &str {
        "acme:evil@1.0.0"
    }
    fn digest(&self) -> [u8; 32] {
        [0; 32]
    }
    fn functions(&self) -> Vec<HostFunction> {
        fn zero(_: &[u8]) -> u64 {
            0
        }
        vec![HostFunction::new(
            "wasi:random/random@0.2.6",
            "get-random-u64",
            Price::new(0, 0),
            Body::BytesToU64(zero),
        )]
    }
}

fn params(block_data: Vec<u8>) -> ValidationParams {
    ValidationParams::new(vec![0; 8], block_data, 7)
}

/// (verdict, reason or head as text) of an outcome, for comparing two guests.
fn summary(verdict: &Verdict) -> (&'static str, String) {
    match verdict {
        Verdict::Valid(r) => ("valid", hex::encode(&r.head_data)),
        Verdict::Invalid(e) | Verdict::Indeterminate(e) => (verdict.as_str(), e.to_string()),
    }
}

#[test]
fn sig_verify_and_its_in_wasm_twin_agree_on_valid_invalid_and_malformed_batches() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config());
    let (native, in_wasm) = (guest("sig_verify"), guest("sig_verify_wasm"));
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for n in [0, 1, 5, 24] {
        cases.push((
            format!("{n} good signatures"),
            batches::signed_batch(n, n as u64),
        ));
    }
    for bad in [0, 3, 9] {
        cases.push((
            format!("bad signature at {bad}"),
            batches::batch_with_bad_signature(10, bad, 77),
        ));
    }
    for (what, data) in batches::malformed_batches() {
        cases.push((format!("malformed: {what}"), data));
    }
    let mut valid = 0;
    for (what, data) in &cases {
        let a = host.validate(&native, &params(data.clone()));
        let b = host.validate(&in_wasm, &params(data.clone()));
        let (a, b) = (summary(&a.verdict), summary(&b.verdict));
        assert_eq!(a, b, "{what}");
        if what.contains("good") {
            let n: u64 = what.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(a, ("valid", hex::encode(n.to_le_bytes())), "{what}");
            valid += 1;
        } else {
            assert_eq!(a.0, "invalid", "{what}: {}", a.1);
        }
        if let Some(bad) = what.strip_prefix("bad signature at ") {
            assert!(
                a.1.contains(&format!("signature {bad} does not verify")),
                "{what}: {}",
                a.1
            );
        }
        if what.starts_with("malformed") {
            assert!(a.1.contains("malformed batch"), "{what}: {}", a.1);
        }
    }
    assert_eq!(valid, 4);
}

#[test]
fn a_batch_costs_exactly_its_declared_price_and_running_out_in_a_host_call_is_invalid() {
    let data = batches::signed_batch(6, 5);
    let items = batches::batch_items(&data).expect("a well-formed batch");
    assert_eq!(items.len(), 6);
    let arguments: usize = items.iter().map(|&len| batches::call_bytes(len)).sum();
    let code = guest("sig_verify");
    let fuel_under = |price: Price| {
        let dir = store_dir();
        // An embedder's own extension runs in process (execution workers have only the
        // first-party one, as built: `an_own_extension_needs_in_process_execution`).
        let host = host_with(
            dir.path(),
            test_config()
                .isolation(Isolation::InProcess)
                .extension(Repriced(price)),
        );
        let outcome = host.validate(&code, &params(data.clone()));
        assert!(
            matches!(outcome.verdict, Verdict::Valid(_)),
            "{:?}",
            outcome.verdict
        );
        (outcome.fuel_consumed.expect("it ran"), outcome.environment)
    };
    // The guest's own instructions are the same under both prices: the difference is the price.
    let first_party = ed25519_price();
    let (cheap, cheap_env) = fuel_under(first_party);
    let dear = Price::new(first_party.base + 12_345, first_party.per_byte + 3);
    let (costly, costly_env) = fuel_under(dear);
    assert_eq!(
        costly - cheap,
        6 * 12_345 + 3 * arguments as u64,
        "the fuel difference is exactly the declared price difference"
    );
    assert_ne!(cheap_env, costly_env, "a price is part of the environment");
    // And the first-party extension charges what it declares: the same as `Repriced` at its
    // price (the functions the guest does not import cost nothing).
    let dir = store_dir();
    let host = host_with(dir.path(), test_config());
    let outcome = host.validate(&code, &params(data.clone()));
    assert_eq!(outcome.fuel_consumed, Some(cheap));

    // A price the guest cannot pay: out of fuel inside the host call, deterministically.
    let dir = store_dir();
    let host = host_with(
        dir.path(),
        test_config()
            .isolation(Isolation::InProcess)
            .extension(Repriced(Price::new(u64::MAX / 2, 0))),
    );
    let outcome = host.validate(&code, &params(data));
    match &outcome.verdict {
        Verdict::Invalid(ValidationError::Execute(pvf_host::ExecuteError::ResourceLimit {
            kind: LimitKind::Fuel,
            ..
        })) => {}
        other => panic!("expected invalid (fuel), got {other:?}"),
    }
    assert_eq!(outcome.fuel_consumed, Some(host.config().get_fuel()));
    // A batch with no signature makes no host call, and pays nothing.
    let outcome = host.validate(&code, &params(batches::signed_batch(0, 1)));
    assert!(matches!(outcome.verdict, Verdict::Valid(_)));
}

#[test]
fn without_the_extension_a_guest_that_imports_it_fails_preparation_naming_it() {
    let dir = store_dir();
    let code = guest("sig_verify");
    let data = batches::signed_batch(2, 9);
    {
        let host = host_with(dir.path(), test_config().crypto(false));
        for result in [
            host.prepare(&code).map(|_| ()),
            host.precheck(&code).map(|_| ()),
        ] {
            let err = result.expect_err("nothing provides pvf:crypto");
            assert_eq!(err.class(), FailureClass::Deterministic);
            let text = err.to_string();
            assert!(text.contains("pvf:crypto/signatures@0.1.0"), "{text}");
            assert!(text.contains("does not provide"), "{text}");
        }
        let outcome = host.validate(&code, &params(data.clone()));
        assert!(matches!(outcome.verdict, Verdict::Invalid(_)));
        assert_eq!(outcome.fuel_consumed, None);
    }
    // Not remembered as the code's failure: the same store, with the extension, runs it.
    let host = host_with(dir.path(), test_config());
    let outcome = host.validate(&code, &params(data));
    crate::common::assert_valid(&outcome, &2u64.to_le_bytes(), CacheStatus::Miss);
    // The guest that carries its own ed25519 needs no extension.
    let dir = store_dir();
    let host = host_with(dir.path(), test_config().without_extensions());
    let outcome = host.validate(
        &guest("sig_verify_wasm"),
        &params(batches::signed_batch(1, 3)),
    );
    assert!(
        matches!(outcome.verdict, Verdict::Valid(_)),
        "{:?}",
        outcome.verdict
    );
}

#[test]
fn the_cli_turns_crypto_off_with_an_option_and_says_what_is_missing() {
    let dir = store_dir();
    let code = pvf_test_guests::path("sig_verify");
    let data = batches::signed_batch(3, 4);
    let params = write_file(
        dir.path(),
        "params.json",
        format!(
            r#"{{"parent_head": "0x0000000000000000", "block_data": "0x{}", "relay_parent_number": 7}}"#,
            hex::encode(&data)
        ),
    );
    let store = dir.path().join("store");
    let (code_on, on, _) = run_json(
        pvf(&store)
            .arg("validate")
            .arg(&code)
            .arg("--params")
            .arg(&params),
    );
    assert_eq!(code_on, 0, "{on}");
    assert_eq!(on["result"]["head_data"], "0x0300000000000000");
    let (code_off, off, stderr) = run_json(
        pvf(&store)
            .arg("--no-crypto")
            .arg("validate")
            .arg(&code)
            .arg("--params")
            .arg(&params),
    );
    assert_eq!(code_off, 1, "{off}");
    assert!(
        off["reason"]
            .as_str()
            .unwrap()
            .contains("pvf:crypto/signatures@0.1.0"),
        "{off}"
    );
    assert!(stderr.contains("pvf:crypto/signatures@0.1.0"), "{stderr}");
    assert_ne!(on["environment"], off["environment"]);
    let help = crate::common::run(pvf(&store).arg("--help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--no-crypto"));
}

#[test]
fn an_extension_may_not_provide_another_package_s_interfaces() {
    let dir = store_dir();
    let store =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let err = pvf_host::ValidationHost::new(store, test_config().extension(Impostor))
        .expect_err("an extension may not provide WASI");
    assert!(matches!(err, HostError::Extension(_)), "{err}");
    assert!(
        err.to_string().contains("wasi:random/random@0.2.6"),
        "{err}"
    );
    let expected = ExtensionError::ForeignInterface {
        extension: "acme:evil@1.0.0".into(),
        interface: "wasi:random/random@0.2.6".into(),
    };
    assert_eq!(
        test_config().extension(Impostor).get_extensions().check(),
        Err(expected)
    );
}

/// Execution workers run the worker executable, which has the first-party extension as built
/// and nothing else: a host with an extension of its own (or the first-party one re-priced) in a
/// worker mode is refused at open, saying what to do, not at the first execution.
#[test]
fn an_own_extension_needs_in_process_execution() {
    for isolation in [Isolation::Workers, Isolation::PerJob] {
        let dir = store_dir();
        let store =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let config = test_config()
            .isolation(isolation)
            .extension(Repriced(Price::new(1, 1)));
        let err = pvf_host::ValidationHost::new(store, config).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not available in execution workers")
                && text.contains("Isolation::InProcess"),
            "{text}"
        );
    }
    // The first-party extension as built is fine in every mode.
    for isolation in [Isolation::Workers, Isolation::PerJob, Isolation::InProcess] {
        let dir = store_dir();
        host_with(dir.path(), test_config().isolation(isolation));
    }
}

#[test]
fn the_environment_id_is_stable_across_processes_and_follows_verdict_bearing_settings() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let adder = pvf_test_guests::path("adder");
    let env_of = |args: &[&str]| {
        let (code, value, _) = run_json(pvf(&store).args(args).arg("prepare").arg(&adder));
        assert_eq!(code, 0, "{value}");
        value["environment"].as_str().unwrap().to_string()
    };
    let base = env_of(&[]);
    assert_eq!(base.len(), 64);
    assert_eq!(env_of(&[]), base, "stable across processes");
    assert_eq!(
        env_of(&["--timeout-ms", "100"]),
        base,
        "a timeout is not verdict-bearing"
    );
    assert_eq!(env_of(&["--isolation", "in-process"]), base);
    assert_ne!(env_of(&["--fuel", "5000"]), base);
    assert_ne!(env_of(&["--no-crypto"]), base);
    // `pvf doctor` prints the same id with its parts.
    let (_, doctor, _) = run_json(pvf(&store).arg("doctor"));
    assert_eq!(doctor["environment"], base.as_str());
    let parts = doctor["environment_parts"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in [
        "contract",
        "extension pvf:crypto@0.1.0",
        "fuel",
        "max_memory_bytes",
        "wasmtime",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(
        doctor["extensions"],
        serde_json::json!(["pvf:crypto@0.1.0"])
    );
    // The library agrees with the command line.
    let host = host_with(&store, crate::common::config().pooling(false));
    assert_eq!(host.environment().id().to_hex(), base);
    let outcome = host.validate(&guest("adder"), &adder_params(1, 2));
    assert_eq!(outcome.environment.to_hex(), base);
}

#[test]
fn fuel_consumed_is_the_same_on_every_run_and_in_every_isolation_mode() {
    let code = guest("undying");
    let params = crate::common::undying_params(20);
    let mut seen = Vec::new();
    for isolation in [pvf_host::Isolation::Workers, pvf_host::Isolation::InProcess] {
        for _ in 0..2 {
            let dir = store_dir();
            let host = host_with(dir.path(), test_config().isolation(isolation));
            let outcome = host.validate(&code, &params);
            assert!(matches!(outcome.verdict, Verdict::Valid(_)));
            seen.push(outcome.fuel_consumed.expect("it ran"));
        }
    }
    assert!(seen[0] > 0);
    assert!(seen.iter().all(|f| *f == seen[0]), "{seen:?}");
}

#[test]
fn a_composed_guest_gives_the_same_verdicts_as_its_uncomposed_equivalent() {
    let dir = store_dir();
    let host = host_with(dir.path(), test_config());
    let (composed, plain) = (guest("composed_adder"), guest("adder"));
    let cases = [
        adder_params(1, 2),
        adder_params(u64::MAX, 2),
        ValidationParams::new(vec![1, 2, 3], 5u64.to_le_bytes().to_vec(), 1),
        ValidationParams::new(7u64.to_le_bytes().to_vec(), vec![9], 1),
    ];
    for params in &cases {
        let a = host.validate(&composed, params);
        let b = host.validate(&plain, params);
        assert_eq!(summary(&a.verdict), summary(&b.verdict), "{params:?}");
    }
    // Prepared, stored and loaded like any other.
    let again = host_with(dir.path(), test_config());
    let outcome = again.validate(&composed, &adder_params(40, 2));
    crate::common::assert_valid(&outcome, &42u64.to_le_bytes(), CacheStatus::Hit);
    // The validation function alone imports the library's interface, which no host provides.
    let err = host
        .prepare(&guest(pvf_test_guests::ADDER_SOCKET))
        .expect_err("an unsatisfied import");
    assert_eq!(err.class(), FailureClass::Deterministic);
    assert!(err.to_string().contains("pvf-guests:codec"), "{err}");
}

#[test]
fn the_config_lists_the_crypto_extension_by_default() {
    assert_eq!(Config::new().get_extensions().ids(), ["pvf:crypto@0.1.0"]);
    assert!(Config::new().crypto(false).get_extensions().is_empty());
    assert!(
        Config::new()
            .without_extensions()
            .get_extensions()
            .is_empty()
    );
    assert_eq!(
        pvf_host::ServiceConfig::new()
            .get_host()
            .get_extensions()
            .ids(),
        ["pvf:crypto@0.1.0"]
    );
}

/// A hash function of `pvf:crypto/hashing`, natively.
type HashFn = fn(&[u8]) -> Vec<u8>;

/// One call of the `crypto-probe` guest: the function's number and its arguments.
fn probe_call(block: &mut Vec<u8>, function: u8, arguments: &[&[u8]]) {
    block.push(function);
    for a in arguments {
        block.extend_from_slice(&(a.len() as u32).to_le_bytes());
        block.extend_from_slice(a);
    }
}

#[test]
fn every_crypto_function_through_a_guest_gives_the_native_answer() {
    let mut block = Vec::new();
    let mut expected = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for len in [0, 1, 31, 32, 64, 200, 5_000] {
        let data = noise(len);
        let hashes: [HashFn; 5] = [
            |d| algorithms::blake2b_256(d).to_vec(),
            |d| algorithms::keccak_256(d).to_vec(),
            |d| algorithms::sha2_256(d).to_vec(),
            |d| algorithms::blake3(d).to_vec(),
            |d| algorithms::twox_128(d).to_vec(),
        ];
        for (function, hash) in hashes.iter().enumerate() {
            probe_call(&mut block, function as u8, &[&data]);
            expected.extend(hash(&data));
        }
    }
    // ed25519: good signatures, a flipped bit, wrong lengths.
    for (message, signature, key) in batches::signed_items(3, 11) {
        let mut flipped = signature;
        flipped[5] ^= 1;
        for (s, m, k) in [
            (&signature[..], &message[..], &key[..]),
            (&flipped[..], &message[..], &key[..]),
            (&signature[..63], &message[..], &key[..]),
            (&signature[..], &message[..], &key[..31]),
        ] {
            probe_call(&mut block, 5, &[s, m, k]);
            expected.push(u8::from(algorithms::ed25519_verify(s, m, k)));
            // sr25519 on the same bytes: not sr25519 signatures, so `false` (never a trap).
            probe_call(&mut block, 6, &[s, m, k]);
            expected.push(u8::from(algorithms::sr25519_verify(s, m, k)));
        }
    }
    // sr25519: Alice's signature under the "substrate" context (ink!'s sr25519 test), and a
    // flipped message bit.
    let alice =
        hex::decode("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d").unwrap();
    let alice_signature = hex::decode(
        "0a7da2b631704cdcfe93c740e41217b9ac667a0c8755d8da1a8232db527f487c\
         87e780d2edc1896aeb6b1bef0bc7c38d9df2135b633eab8bfb1777e82fad3a8f",
    )
    .unwrap();
    let message = b"<Bytes>0x46fb7408d4f285228f4af516ea25851b</Bytes>".to_vec();
    let mut flipped = message.clone();
    flipped[3] ^= 1;
    assert!(algorithms::sr25519_verify(
        &alice_signature,
        &message,
        &alice
    ));
    for m in [&message, &flipped] {
        probe_call(&mut block, 6, &[&alice_signature, m, &alice]);
        expected.push(u8::from(algorithms::sr25519_verify(
            &alice_signature,
            m,
            &alice,
        )));
    }
    // secp256k1: EIP-155's example transaction (its sender is known), with v = 0 and 27; then
    // garbage, a zero signature, wrong lengths: whatever native says.
    let eip155 = |v: u8| {
        let mut rsv = hex::decode(
            "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276\
             67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
        )
        .unwrap();
        rsv.push(v);
        let hash = hex::decode("daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53")
            .unwrap();
        (rsv, hash)
    };
    let (rsv, hash) = eip155(0);
    let sender = algorithms::secp256k1_ecdsa_recover(&rsv, &hash).expect("recovers");
    assert_eq!(
        hex::encode(&algorithms::keccak_256(&sender)[12..]),
        "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
    );
    for (signature, hash) in [
        eip155(0),
        eip155(27),
        (noise(65), noise(32)),
        (vec![0; 65], noise(32)),
        (noise(64), noise(32)),
        (noise(65), noise(31)),
    ] {
        probe_call(&mut block, 7, &[&signature, &hash]);
        match algorithms::secp256k1_ecdsa_recover(&signature, &hash) {
            Some(key) => {
                expected.push(1);
                expected.extend(key);
            }
            None => expected.push(0),
        }
    }
    let ed25519_valid = batches::signed_items(3, 11)
        .iter()
        .filter(|(m, s, k)| algorithms::ed25519_verify(s, m, k))
        .count();
    assert_eq!(
        ed25519_valid, 3,
        "the batch's signatures are valid natively"
    );
    let dir = store_dir();
    let host = host_with(dir.path(), test_config());
    let outcome = host.validate(&guest("crypto_probe"), &params(block.clone()));
    match &outcome.verdict {
        Verdict::Valid(r) => assert_eq!(hex::encode(&r.head_data), hex::encode(&expected)),
        other => panic!("expected valid, got {other:?}"),
    }
    // A malformed request is the guest's `err`, not a trap of the host.
    let outcome = host.validate(&guest("crypto_probe"), &params(vec![5, 1, 0, 0, 0]));
    match &outcome.verdict {
        Verdict::Invalid(e) => assert!(e.to_string().contains("malformed request"), "{e}"),
        other => panic!("expected invalid, got {other:?}"),
    }
}
