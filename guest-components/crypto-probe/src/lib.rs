//! Guest `crypto-probe`: calls every function of `pvf:crypto@0.1.0` with arguments taken from the
//! block data, and returns the answers as the new head, so that the host's tests can compare
//! each one, through the whole component path (lifting, pricing, lowering), with the native
//! function.
//!
//! Block data: a sequence of calls, each `u8 function` then its arguments, each `u32 LE length`
//! and that many bytes. Functions: 0 blake2b-256, 1 keccak-256, 2 sha2-256, 3 blake3,
//! 4 twox-128 (one argument each); 5 ed25519-verify, 6 sr25519-verify (signature, message,
//! public key); 7 secp256k1-ecdsa-recover (signature, message hash).
//!
//! Head: the answers in order: a digest as its bytes; a `bool` as one byte 0/1; an option as
//! 0, or 1 followed by the bytes. Anything malformed is `err("malformed request: ...")`.
wit_bindgen::generate!({
    world: "pvf-guests:crypto-probe/crypto-probe",
    path: ["../../wit", "../../wit/crypto", "wit"],
    generate_all,
});

use exports::pvf::validation::validate::{Guest, ValidationParams, ValidationResult};
use pvf::crypto::{hashing, signatures};

struct Pvf;
export!(Pvf);

/// Reads `u32 LE length` + bytes from the front of `data`.
fn argument<'a>(data: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let (len, rest) = data
        .split_first_chunk::<4>()
        .ok_or("malformed request: truncated length")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("malformed request: truncated argument".to_string());
    }
    let (arg, rest) = rest.split_at(len);
    *data = rest;
    Ok(arg)
}

impl Guest for Pvf {
    fn validate_block(params: ValidationParams) -> Result<ValidationResult, String> {
        let mut data = params.block_data.as_slice();
        let mut head = Vec::new();
        while let Some((&function, rest)) = data.split_first() {
            data = rest;
            match function {
                0..=4 => {
                    let a = argument(&mut data)?;
                    head.extend(match function {
                        0 => hashing::blake2b_256(a),
                        1 => hashing::keccak_256(a),
                        2 => hashing::sha2_256(a),
                        3 => hashing::blake3(a),
                        _ => hashing::twox_128(a),
                    });
                }
                5 | 6 => {
                    let (s, m, k) = (argument(&mut data)?, argument(&mut data)?, argument(&mut data)?);
                    let ok = if function == 5 {
                        signatures::ed25519_verify(s, m, k)
                    } else {
                        signatures::sr25519_verify(s, m, k)
                    };
                    head.push(u8::from(ok));
                }
                7 => {
                    let (s, h) = (argument(&mut data)?, argument(&mut data)?);
                    match signatures::secp256k1_ecdsa_recover(s, h) {
                        Some(key) => {
                            head.push(1);
                            head.extend(key);
                        }
                        None => head.push(0),
                    }
                }
                other => return Err(format!("malformed request: unknown function {other}")),
            }
        }
        Ok(ValidationResult {
            head_data: head,
            new_validation_code: None,
            upward_messages: Vec::new(),
            horizontal_messages: Vec::new(),
            processed_downward_messages: 0,
            hrmp_watermark: params.relay_parent_number,
        })
    }
}
