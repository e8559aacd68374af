//! The validation function of the composed guest `composed_adder`: exactly `adder` (head =
//! parent head (u64 LE) + block data (u64 LE), wrapping, with `adder`'s error texts), but the
//! decoding and encoding are calls to the imported interface `pvf-guests:codec/le@0.1.0`.
//! `tests/guests/build.rs` plugs the component `codec-lib` into that import (wac-graph), which
//! makes `composed_adder`: two components in one. This component alone (`adder_socket`) has
//! the import unsatisfied, and a host must refuse it.
wit_bindgen::generate!({
    world: "pvf-guests:adder-socket/adder-socket",
    // Dependencies first: each package may only use those before it.
    path: ["../../wit", "../codec-lib/wit", "wit"],
    // The interfaces come from the other packages: bindings for them too.
    generate_all,
});

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use pvf_guests::codec::le::{decode_u64, encode_u64};

struct Pvf;
export!(Pvf);

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let parent = decode_u64("parent head", &params.parent_head)?;
        let add = decode_u64("block data", &params.block_data)?;
        Ok(ValidationResult {
            head_data: encode_u64(parent.wrapping_add(add)),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
