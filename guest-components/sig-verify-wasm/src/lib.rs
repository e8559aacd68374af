//! Guest `sig-verify-wasm`: the verdicts of `sig-verify` byte for byte (format and verdicts in
//! `sig-batch`), with each ed25519 signature checked inside the guest by `ed25519-zebra`
//! (ZIP-215 rules, as the host's `ed25519-verify`). The new head is the item count (`u64` LE).
wit_bindgen::generate!({
    world: "pvf-guests:sig-verify-wasm/sig-verify-wasm",
    // Dependencies first: each package may only use those before it.
    path: ["../../wit", "wit"],
    // The interfaces come from the other packages: bindings for them too.
    generate_all,
});

use ed25519_zebra::{Signature, VerificationKey};
use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// Whether `item` carries a valid signature; a public key that is not a curve point is `false`.
fn verify(item: &sig_batch::Item<'_>) -> bool {
    VerificationKey::try_from(*item.public_key).is_ok_and(|key| {
        key.verify(&Signature::from_bytes(item.signature), item.message)
            .is_ok()
    })
}

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let n = sig_batch::verdict(&params.block_data, verify)?;
        Ok(ValidationResult {
            head_data: n.to_le_bytes().to_vec(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
