//! Guest `trap`: panics (a wasm trap); exercises the trap verdict.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        panic!(
            "trap guest panics on purpose (block of {} bytes)",
            params.block_data.len()
        );
    }
}
