//! Guest `sig-verify`: the block data is a batch of ed25519-signed messages (format and
//! verdicts in `sig-batch`); each signature is checked by the host's
//! `pvf:crypto/signatures.ed25519-verify`. The new head is the item count (`u64` LE).
//!
//! `sig-verify-wasm` gives the same verdicts, checking the signatures inside the guest.
wit_bindgen::generate!({
    world: "pvf-guests:sig-verify/sig-verify",
    // Dependencies first: each package may only use those before it.
    path: ["../../wit", "../../wit/crypto", "wit"],
    // The interfaces come from the other packages: bindings for them too.
    generate_all,
});

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use pvf::crypto::signatures::ed25519_verify;

struct Pvf;
export!(Pvf);

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let n = sig_batch::verdict(&params.block_data, |item| {
            ed25519_verify(item.signature, item.message, item.public_key)
        })?;
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
