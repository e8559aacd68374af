//! Guest `halt`: never returns; exercises the fuel budget and the wall-clock timeout.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let mut spins = params.relay_parent_number as u64;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}
