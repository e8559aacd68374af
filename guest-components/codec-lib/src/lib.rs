//! Library component `codec-lib`: exports `pvf-guests:codec/le@0.1.0`, the little-endian `u64`
//! codec of `adder`, with `adder`'s error text. The build plugs it into
//! `adder-socket`, making the guest `composed_adder`.
wit_bindgen::generate!({ world: "codec-lib", path: "wit" });

use exports::pvf_guests::codec::le::Guest;

struct Codec;
export!(Codec);

impl Guest for Codec {
    fn decode_u64(what: String, bytes: Vec<u8>) -> Result<u64, String> {
        let head: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{what} is {} bytes, need at least 8", bytes.len()))?;
        Ok(u64::from_le_bytes(head))
    }

    fn encode_u64(value: u64) -> Vec<u8> {
        value.to_le_bytes().to_vec()
    }
}
