//! Guest `adder`: head = parent head (u64 LE) + block data (u64 LE); exercises the ordinary valid/invalid path.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// Reads the first eight bytes of `bytes` as a little-endian `u64`.
fn read_u64(what: &str, bytes: &[u8]) -> Result<u64, String> {
    let head: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{what} is {} bytes, need at least 8", bytes.len()))?;
    Ok(u64::from_le_bytes(head))
}

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let parent = read_u64("parent head", &params.parent_head)?;
        let add = read_u64("block data", &params.block_data)?;
        Ok(ValidationResult {
            head_data: parent.wrapping_add(add).to_le_bytes().to_vec(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
