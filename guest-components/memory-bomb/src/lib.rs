//! Guest `memory-bomb`: grows linear memory 1 MiB at a time forever; exercises the memory limiter.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// Pages (64 KiB each) asked for per `memory.grow`: 1 MiB.
const PAGES_PER_GROW: usize = 16;

impl Guest for Pvf {
    fn validate_block(_params: ValidationParams) -> Result<ValidationResult, String> {
        loop {
            // A refused grow returns `usize::MAX`; keep asking, the host's limiter must stop us.
            let _ = core::arch::wasm32::memory_grow(0, PAGES_PER_GROW);
        }
    }
}
