//! Runs the new guests with a bare wasmtime (no host, no WASI: their WASI imports trap, and
//! none is called): `sig_verify` with a native `pvf:crypto/signatures.ed25519-verify`
//! (ed25519-zebra) that counts its calls, `sig_verify_wasm`, and `composed_adder` against
//! `adder`.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower};
use wasmtime::{Config, Engine, Store};

use crate::batches;

#[derive(ComponentType, Lower, Clone)]
#[component(record)]
struct ValidationParams {
    #[component(name = "parent-head")]
    parent_head: Vec<u8>,
    #[component(name = "block-data")]
    block_data: Vec<u8>,
    #[component(name = "relay-parent-number")]
    relay_parent_number: u32,
    #[component(name = "relay-parent-storage-root")]
    relay_parent_storage_root: Vec<u8>,
}

#[derive(ComponentType, Lift, Debug, PartialEq, Eq)]
#[component(record)]
struct OutboundHrmpMessage {
    recipient: u32,
    data: Vec<u8>,
}

#[derive(ComponentType, Lift, Debug, PartialEq, Eq)]
#[component(record)]
struct ValidationResult {
    #[component(name = "head-data")]
    head_data: Vec<u8>,
    #[component(name = "new-validation-code")]
    new_validation_code: Option<Vec<u8>>,
    #[component(name = "upward-messages")]
    upward_messages: Vec<Vec<u8>>,
    #[component(name = "horizontal-messages")]
    horizontal_messages: Vec<OutboundHrmpMessage>,
    #[component(name = "processed-downward-messages")]
    processed_downward_messages: u32,
    #[component(name = "hrmp-watermark")]
    hrmp_watermark: u32,
}

type Verdict = Result<ValidationResult, String>;

/// The message lengths `ed25519-verify` was called with, in order.
type Calls = Arc<Mutex<Vec<usize>>>;

/// One instance of guest `name`, ready to validate blocks.
struct Guest {
    store: Store<()>,
    validate: wasmtime::component::TypedFunc<(ValidationParams,), (Verdict,)>,
    calls: Calls,
}

impl Guest {
    fn new(engine: &Engine, name: &str) -> Self {
        let component = Component::from_file(engine, crate::path(name)).expect(name);
        let mut linker = Linker::<()>::new(engine);
        let calls = Calls::default();
        let seen = calls.clone();
        linker
            .instance("pvf:crypto/signatures@0.1.0")
            .unwrap()
            .func_wrap(
                "ed25519-verify",
                move |_, (signature, message, key): (Vec<u8>, Vec<u8>, Vec<u8>)| {
                    seen.lock().unwrap().push(message.len());
                    let (Ok(signature), Ok(key)) = (signature.try_into(), key.try_into()) else {
                        return Ok((false,));
                    };
                    Ok((batches::verifies(&message, &signature, &key),))
                },
            )
            .unwrap();
        linker.define_unknown_imports_as_traps(&component).unwrap();
        let mut store = Store::new(engine, ());
        let instance = linker.instantiate(&mut store, &component).expect(name);
        let interface = component
            .get_export_index(None, "pvf:validation/validate@0.1.0")
            .expect("exports validate");
        let func = component
            .get_export_index(Some(&interface), "validate-block")
            .expect("exports validate-block");
        let validate = instance.get_typed_func(&mut store, func).expect(name);
        Guest {
            store,
            validate,
            calls,
        }
    }

    fn validate(&mut self, parent_head: &[u8], block_data: &[u8]) -> Verdict {
        let params = ValidationParams {
            parent_head: parent_head.to_vec(),
            block_data: block_data.to_vec(),
            relay_parent_number: 42,
            relay_parent_storage_root: vec![0; 32],
        };
        self.calls.lock().unwrap().clear();
        let (verdict,) = self.validate.call(&mut self.store, (params,)).unwrap();
        verdict
    }

    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

fn engine() -> Engine {
    Engine::new(&Config::new()).unwrap()
}

#[test]
fn the_signature_guests_give_the_expected_verdicts() {
    let engine = engine();
    let mut host_crypto = Guest::new(&engine, "sig_verify");
    let mut in_guest = Guest::new(&engine, "sig_verify_wasm");
    let mut cases = vec![
        ("empty batch".to_string(), batches::signed_batch(0, 0)),
        ("one item".to_string(), batches::signed_batch(1, 1)),
        ("30 items".to_string(), batches::signed_batch(30, 2)),
        (
            "bad first".to_string(),
            batches::batch_with_bad_signature(4, 0, 3),
        ),
        (
            "bad last".to_string(),
            batches::batch_with_bad_signature(9, 8, 4),
        ),
    ];
    for (name, data) in batches::malformed_batches() {
        cases.push((format!("malformed: {name}"), data));
    }
    // A key of 0xff bytes, not the signer's (perhaps not even a point): no signature verifies.
    let mut items = batches::signed_items(2, 5);
    items[1].2 = [0xff; 32];
    cases.push(("bad key".to_string(), batches::encode_batch(&items)));

    for (name, data) in cases {
        let expected = batches::expected_verdict(&data);
        let a = host_crypto.validate(b"parent", &data);
        let b = in_guest.validate(b"parent", &data);
        assert_eq!(a, b, "{name}");
        match (&a, &expected) {
            (Ok(result), Ok(n)) => {
                let want = ValidationResult {
                    head_data: n.to_le_bytes().to_vec(),
                    new_validation_code: None,
                    upward_messages: vec![],
                    horizontal_messages: vec![],
                    processed_downward_messages: 0,
                    hrmp_watermark: 42,
                };
                assert_eq!(result, &want, "{name}");
            }
            (Err(reason), Err(want)) => assert_eq!(reason, want, "{name}"),
            _ => panic!("{name}: {a:?}, expected {expected:?}"),
        }
        // The host function is called for each item up to the first bad one, none when the
        // batch is malformed; with the lengths `batch_items` tells.
        let lengths = batches::batch_items(&data).unwrap_or_default();
        let checked = match &expected {
            Err(reason) if reason.starts_with("signature ") => {
                let i: usize = reason.split(' ').nth(1).unwrap().parse().unwrap();
                i + 1
            }
            _ => lengths.len(),
        };
        assert_eq!(host_crypto.calls(), lengths[..checked], "{name}");
        assert!(in_guest.calls().is_empty(), "{name}");
    }
}

#[test]
fn composed_adder_answers_as_adder() {
    let engine = engine();
    let mut adder = Guest::new(&engine, "adder");
    let mut composed = Guest::new(&engine, crate::COMPOSED_ADDER);
    let u64le = |v: u64| v.to_le_bytes().to_vec();
    for (parent, block) in [
        (u64le(5), u64le(7)),
        (u64le(u64::MAX), u64le(2)),
        (
            [u64le(1), vec![9; 3]].concat(),
            [u64le(2), vec![1]].concat(),
        ),
        (vec![1, 2, 3], u64le(2)),
        (u64le(1), vec![]),
        (vec![], vec![0; 7]),
    ] {
        let want = adder.validate(&parent, &block);
        assert_eq!(
            composed.validate(&parent, &block),
            want,
            "{parent:?} {block:?}"
        );
    }
    assert_eq!(
        composed
            .validate(&u64le(u64::MAX), &u64le(2))
            .unwrap()
            .head_data,
        u64le(1)
    );
    assert_eq!(
        composed.validate(&[1, 2, 3], &u64le(2)),
        Err("parent head is 3 bytes, need at least 8".into())
    );
}

#[test]
fn the_socket_alone_cannot_be_instantiated() {
    let engine = engine();
    let component = Component::from_file(&engine, crate::path(crate::ADDER_SOCKET)).unwrap();
    let mut linker = Linker::<()>::new(&engine);
    // Everything but the codec: WASI as traps would do, the codec is what is missing.
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        imports.iter().any(|i| i == "pvf-guests:codec/le@0.1.0"),
        "{imports:?}"
    );
    let composed = Component::from_file(&engine, crate::path(crate::COMPOSED_ADDER)).unwrap();
    let adder = Component::from_file(&engine, crate::path("adder")).unwrap();
    let names = |c: &Component| -> Vec<String> {
        c.component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_string())
            .collect()
    };
    assert_eq!(names(&composed), names(&adder));
    linker.define_unknown_imports_as_traps(&adder).unwrap();
    let err = linker
        .instantiate_pre(&component)
        .err()
        .expect("the codec import is unsatisfied");
    assert!(format!("{err:?}").contains("pvf-guests:codec"), "{err:?}");
}
