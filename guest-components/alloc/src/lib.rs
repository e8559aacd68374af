//! Guest `alloc`: allocates and touches N bytes (N = first 8 bytes, LE); exercises the memory limit, obeyed or violated.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// The stride at which the buffer is touched.
const PAGE: usize = 4096;

impl Guest for Pvf {
    /// Head = N (u64 LE) ++ sum over 4096-byte pages `i` of `i as u8` (u64 LE). An N that no
    /// wasm32 allocation can hold panics (a trap), as an allocation the limiter refuses does.
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let Some(n) = params.block_data.first_chunk::<8>() else {
            return Err("block data must start with an 8-byte allocation size".into());
        };
        let n = u64::from_le_bytes(*n);
        let len = usize::try_from(n)
            .unwrap_or_else(|_| panic!("cannot allocate {n} bytes in a 32-bit address space"));
        let mut buf = vec![0u8; len];
        for (page, chunk) in buf.chunks_mut(PAGE).enumerate() {
            chunk[0] = page as u8;
        }
        let buf = std::hint::black_box(buf);
        let sum: u64 = buf.iter().step_by(PAGE).map(|&b| u64::from(b)).sum();
        let mut head_data = n.to_le_bytes().to_vec();
        head_data.extend_from_slice(&sum.to_le_bytes());
        Ok(ValidationResult {
            head_data,
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
