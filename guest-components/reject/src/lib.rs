//! Guest `reject`: always returns `err` with a reason; exercises the invalid-by-guest verdict.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        Err(format!(
            "rejected: block of {} bytes at relay parent {}",
            params.block_data.len(),
            params.relay_parent_number
        ))
    }
}
