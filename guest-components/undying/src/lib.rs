//! Guest `undying`: N rounds of hashing over the block data (N = first 4 bytes, LE); a deterministic compute load for benchmarks.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};

struct Pvf;
export!(Pvf);

/// One round of FNV-1a over `data`, continuing from `state`, then a splitmix64 finaliser.
fn round(mut state: u64, data: &[u8]) -> u64 {
    for &b in data {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state ^= state >> 30;
    state = state.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state ^= state >> 27;
    state = state.wrapping_mul(0x94d0_49bb_1331_11eb);
    state ^ (state >> 31)
}

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let Some((rounds, payload)) = params.block_data.split_first_chunk::<4>() else {
            return Err("block data must start with a 4-byte round count".into());
        };
        let rounds = u32::from_le_bytes(*rounds);
        let mut state = round(0xcbf2_9ce4_8422_2325, &params.parent_head);
        for _ in 0..rounds {
            state = round(state, payload);
        }
        let mut head_data = state.to_le_bytes().to_vec();
        head_data.extend_from_slice(&rounds.to_le_bytes());
        Ok(ValidationResult {
            head_data,
            new_validation_code: None,
            upward_messages: vec![payload.to_vec()],
            horizontal_messages: Vec::new(),
            processed_downward_messages: rounds,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
