//! The params file of `pvf validate` (CONTRACT.md §2).

use anyhow::{Context, bail};
use pvf_host::ValidationParams;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsFile {
    parent_head: String,
    block_data: String,
    relay_parent_number: u32,
    #[serde(default)]
    relay_parent_storage_root: Option<String>,
}

/// Parses the JSON params file: hex strings (`0x` optional); `relay_parent_storage_root` may be
/// omitted (32 zero bytes).
pub fn parse(text: &str) -> anyhow::Result<ValidationParams> {
    let file: ParamsFile = serde_json::from_str(text).context("malformed params")?;
    let storage_root = match &file.relay_parent_storage_root {
        None => [0u8; 32],
        Some(s) => {
            let bytes = decode_hex("relay_parent_storage_root", s)?;
            match <[u8; 32]>::try_from(bytes.as_slice()) {
                Ok(root) => root,
                Err(_) => bail!(
                    "malformed params: relay_parent_storage_root is {} bytes, must be 32",
                    bytes.len()
                ),
            }
        }
    };
    Ok(ValidationParams {
        parent_head: decode_hex("parent_head", &file.parent_head)?,
        block_data: decode_hex("block_data", &file.block_data)?,
        relay_parent_number: file.relay_parent_number,
        relay_parent_storage_root: storage_root,
    })
}

fn decode_hex(field: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    hex::decode(digits).with_context(|| format!("malformed params: {field} is not hex"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_prefixed_and_bare_hex_and_defaults_the_root() {
        let p =
            parse(r#"{"parent_head":"0x0102","block_data":"ff","relay_parent_number":7}"#).unwrap();
        assert_eq!(p.parent_head, vec![1, 2]);
        assert_eq!(p.block_data, vec![0xff]);
        assert_eq!(p.relay_parent_number, 7);
        assert_eq!(p.relay_parent_storage_root, [0; 32]);
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (text, needle) in [
            ("{", "malformed params"),
            (
                r#"{"parent_head":"0xzz","block_data":"","relay_parent_number":1}"#,
                "parent_head is not hex",
            ),
            (
                r#"{"parent_head":"","block_data":"","relay_parent_number":-1}"#,
                "malformed params",
            ),
            (
                r#"{"parent_head":"","block_data":"","relay_parent_number":1,"relay_parent_storage_root":"0x00"}"#,
                "must be 32",
            ),
            (
                r#"{"parent_head":"","block_data":"","relay_parent_number":1,"extra":1}"#,
                "unknown field",
            ),
            (
                r#"{"block_data":"","relay_parent_number":1}"#,
                "missing field",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
