//! Guest `stdout-flood`: writes M KiB to stdout and M KiB to stderr (M = first 4 bytes, LE); exercises output capture limits.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use std::io::Write;

struct Pvf;
export!(Pvf);

/// Writes `lines` lines of 1 KiB each (1023 letters and a newline) to `out`, ignoring errors.
fn flood(mut out: impl Write, lines: u32) {
    let mut line = [0u8; 1024];
    line[1023] = b'\n';
    for i in 0..lines {
        line[..1023].fill(b'a' + (i % 26) as u8);
        let _ = out.write_all(&line);
    }
    let _ = out.flush();
}

impl Guest for Pvf {
    /// Head = M (u32 LE).
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let Some(kib) = params.block_data.first_chunk::<4>() else {
            return Err("block data must start with a 4-byte KiB count".into());
        };
        let kib = u32::from_le_bytes(*kib);
        flood(std::io::stdout().lock(), kib);
        flood(std::io::stderr().lock(), kib);
        Ok(ValidationResult {
            head_data: kib.to_le_bytes().to_vec(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
