//! Guest `bulky`: thousands of distinct generated functions folded over the block data; a large component whose preparation (compilation) is slow.
wit_bindgen::generate!({ world: "validation-function", path: "../../wit" });

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use seq_macro::seq;

struct Pvf;
export!(Pvf);

/// How many generated functions the dispatch table holds. `seq!` needs a literal, so the two
/// ranges below repeat it; the type of [`TABLE`] makes a mismatch a compile error.
const LEN: usize = 3072;
/// The stride through the table per block-data byte (odd, so coprime with `LEN`).
const K: usize = 977;

seq!(N in 0..3072 {
    /// One generated step: a little arithmetic and branching with constants unique to `N`.
    #[inline(never)]
    fn step~N(x: u64, b: u8) -> u64 {
        const I: u64 = N;
        const C: u64 = (I + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        const D: u64 = (I ^ 0x5bd1_e995).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1;
        const ROT_L: u32 = (I % 61) as u32 + 1;
        const ROT_R: u32 = (I % 37) as u32 + 1;
        const BIT: u64 = 1 << (I % 64);
        const SHIFT: u64 = I % 29 + 3;
        const MODULUS: u64 = I % 13 + 2;
        const XOR: u64 = C.wrapping_add(I) >> (I % 17);
        const MUL: u64 = 0x94d0_49bb_1331_11eb ^ I.wrapping_shl((I % 48) as u32);
        let mut s = x ^ C ^ u64::from(b).wrapping_mul(D);
        s = s.rotate_left(ROT_L);
        if s & BIT != 0 {
            s = s.wrapping_mul(D) ^ (s >> SHIFT);
        } else {
            s = s.wrapping_add(C).rotate_right(ROT_R) ^ D;
        }
        if (s >> 7).is_multiple_of(MODULUS) {
            s ^= XOR;
        }
        s.wrapping_mul(MUL) ^ (s >> 31)
    }
});

seq!(N in 0..3072 {
    /// The dispatch table of every generated step.
    static TABLE: [fn(u64, u8) -> u64; LEN] = [#(step~N,)*];
});

/// Folds `data` through [`TABLE`], starting from `seed`: each byte picks a step (by the byte,
/// its position and the state) and the step maps the state and byte to the next state.
fn fold(seed: u64, data: &[u8]) -> u64 {
    let mut state = seed;
    for (i, &b) in data.iter().enumerate() {
        let index = (usize::from(b) * K + i + (state as usize & 0xff)) % LEN;
        state = TABLE[index](state, b);
    }
    state
}

impl Guest for Pvf {
    /// Head data: the parent head folded from a fixed seed, then the block data folded on
    /// from there, as a `u64` LE. Invalid only when the block data is empty.
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        if params.block_data.is_empty() {
            return Err("block data is empty: nothing to fold".into());
        }
        let seed = fold(0xcbf2_9ce4_8422_2325, &params.parent_head);
        let head = fold(seed, &params.block_data);
        Ok(ValidationResult {
            head_data: head.to_le_bytes().to_vec(),
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
