//! Guest `stack-bomb`: recurses D levels (D = first 4 bytes, LE) in wasm locals only; exercises the wasm stack limit.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// Returns a value that depends on every level, one call per level. Scalars only, so each
/// frame lives on the wasm (native) stack and none on the shadow stack in linear memory; the
/// combination `3 * below + depth` keeps LLVM from turning the recursion into a loop.
#[inline(never)]
fn descend(depth: u32) -> u64 {
    if depth == 0 {
        return 0;
    }
    descend(depth - 1)
        .wrapping_mul(3)
        .wrapping_add(u64::from(depth))
}

impl Guest for Pvf {
    /// Head = `descend(D)` as u64 LE.
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let Some(depth) = params.block_data.first_chunk::<4>() else {
            return Err("block data must start with a 4-byte recursion depth".into());
        };
        let depth = u32::from_le_bytes(*depth);
        Ok(ValidationResult {
            head_data: descend(depth).to_le_bytes().to_vec(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
