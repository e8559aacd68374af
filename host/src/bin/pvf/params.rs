//! The params file of `pvf validate` (CONTRACT.md §2), and the limits on reading it.
//!
//! Every input is hostile: a params file is read up to [`MAX_PARAMS_BYTES`] and no further, the
//! decoded fields must fit the contract's limits ([`MAX_HEAD_DATA_BYTES`],
//! [`MAX_BLOCK_DATA_BYTES`]), and buffers sized by the input are allocated fallibly.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use anyhow::{Context, bail};
use pvf_host::{MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES, ValidationParams};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Room in a params file beyond the hex of the largest head and block data: the keys, the `0x`
/// prefixes, the 64 hex digits of the storage root, the relay parent number and whitespace.
pub const PARAMS_SLACK_BYTES: usize = 64 * 1024;

/// The largest params file, in bytes: the hex encoding (two digits a byte) of the largest parent
/// head ([`MAX_HEAD_DATA_BYTES`], 1 MiB) and block data ([`MAX_BLOCK_DATA_BYTES`], 10 MiB), plus
/// [`PARAMS_SLACK_BYTES`]: 23,134,208 bytes. A larger file is an input error (exit 64), noticed
/// when the limit is reached (the rest is never read).
pub const MAX_PARAMS_BYTES: usize =
    2 * (MAX_HEAD_DATA_BYTES + MAX_BLOCK_DATA_BYTES) + PARAMS_SLACK_BYTES;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsFile<'a> {
    #[serde(borrow, deserialize_with = "parent_head")]
    parent_head: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "block_data")]
    block_data: Cow<'a, str>,
    #[serde(deserialize_with = "relay_parent_number")]
    relay_parent_number: u32,
    #[serde(default, borrow, deserialize_with = "optional_storage_root")]
    relay_parent_storage_root: Option<Cow<'a, str>>,
}

/// Why [`read_bounded`] gave up.
#[derive(Debug)]
pub enum ReadError {
    /// The input has more than the limit.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The buffer for the input could not be allocated.
    OutOfMemory,
    /// Reading failed.
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "larger than the limit of {limit} bytes"),
            Self::OutOfMemory => f.write_str("cannot allocate a buffer for it"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads `reader` to its end, refusing inputs of more than `limit` bytes: reading stops as soon
/// as the limit is passed, and the buffer grows fallibly, so memory stays below about twice
/// `limit` whatever the input.
pub fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if buf.len() + n > limit {
            return Err(ReadError::TooLarge { limit });
        }
        buf.try_reserve(n).map_err(|_| ReadError::OutOfMemory)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses the JSON params file: hex strings (`0x` optional); `relay_parent_storage_root` may be
/// omitted (32 zero bytes). The parent head and block data must fit the contract's limits.
pub fn parse(text: &[u8]) -> anyhow::Result<ValidationParams> {
    let file: ParamsFile = serde_json::from_slice(text).context("malformed params")?;
    file.decode()
}

/// [`parse`] for params already parsed as JSON (a `pvf serve` request's `params`).
pub fn parse_value(value: &serde_json::Value) -> anyhow::Result<ValidationParams> {
    let file = ParamsFile::deserialize(value).context("malformed params")?;
    file.decode()
}

impl ParamsFile<'_> {
    fn decode(&self) -> anyhow::Result<ValidationParams> {
        let storage_root = match &self.relay_parent_storage_root {
            None => [0u8; 32],
            Some(s) => {
                let bytes = decode_hex("relay_parent_storage_root", s, 32)?;
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
            parent_head: decode_hex("parent_head", &self.parent_head, MAX_HEAD_DATA_BYTES)?,
            block_data: decode_hex("block_data", &self.block_data, MAX_BLOCK_DATA_BYTES)?,
            relay_parent_number: self.relay_parent_number,
            relay_parent_storage_root: storage_root,
        })
    }
}

/// Decodes the hex string `s` of `field`, refusing more than `limit` bytes before decoding.
fn decode_hex(field: &str, s: &str, limit: usize) -> anyhow::Result<Vec<u8>> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let len = digits.len() / 2;
    if len > limit {
        bail!("malformed params: {field} is {len} bytes, more than the limit of {limit} bytes");
    }
    if !digits.len().is_multiple_of(2) {
        bail!("malformed params: {field} is not hex (an odd number of digits)");
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| anyhow::anyhow!("cannot allocate {len} bytes for {field}"))?;
    bytes.resize(len, 0);
    hex::decode_to_slice(digits, &mut bytes)
        .with_context(|| format!("malformed params: {field} is not hex"))?;
    Ok(bytes)
}

/// What a JSON value of the wrong type was, for error messages.
struct Got<'a>(de::Unexpected<'a>);

impl fmt::Display for Got<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            de::Unexpected::Bool(b) => write!(f, "a boolean ({b})"),
            de::Unexpected::Unsigned(n) => write!(f, "{n}"),
            de::Unexpected::Signed(n) => write!(f, "{n}"),
            de::Unexpected::Float(x) => f.write_str(&float_text(x)),
            de::Unexpected::Str(_) => f.write_str("a string"),
            de::Unexpected::Unit => f.write_str("null"),
            de::Unexpected::Seq => f.write_str("a list"),
            de::Unexpected::Map => f.write_str("an object"),
            other => write!(f, "{other}"),
        }
    }
}

/// `x` as a JSON reader would write it: `1e23`, `1.5`, `-3`, `4294967296`.
fn float_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.0}")
    } else {
        format!("{x:?}")
    }
}

/// `relay_parent_number`: an integer from 0 to `u32::MAX`; anything else is refused with a
/// message that says so and shows what it got.
fn relay_parent_number<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Number;
    impl Number {
        fn refuse<E: de::Error>(got: de::Unexpected<'_>) -> E {
            E::custom(format_args!(
                "relay_parent_number must be an integer from 0 to {}, got {}",
                u32::MAX,
                Got(got)
            ))
        }
    }
    impl<'de> Visitor<'de> for Number {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer from 0 to {}", u32::MAX)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| Self::refuse(de::Unexpected::Unsigned(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| Self::refuse(de::Unexpected::Signed(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
            Err(Self::refuse(de::Unexpected::Float(v)))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<u32, E> {
            Err(Self::refuse(de::Unexpected::Bool(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            Err(Self::refuse(de::Unexpected::Str(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<u32, E> {
            Err(Self::refuse(de::Unexpected::Unit))
        }
        fn visit_none<E: de::Error>(self) -> Result<u32, E> {
            Err(Self::refuse(de::Unexpected::Unit))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<u32, A::Error> {
            Err(Self::refuse(de::Unexpected::Seq))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<u32, A::Error> {
            Err(Self::refuse(de::Unexpected::Map))
        }
    }
    d.deserialize_any(Number)
}

/// A hex field: a JSON string, borrowed from the input where it can be.
struct HexString(&'static str);

impl HexString {
    fn refuse<E: de::Error>(&self, got: de::Unexpected<'_>) -> E {
        E::custom(format_args!(
            "{} must be a hex string (e.g. \"0x0102\"), got {}",
            self.0,
            Got(got)
        ))
    }
}

impl<'de> Visitor<'de> for HexString {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as a hex string", self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let mut s = String::new();
        s.try_reserve_exact(v.len())
            .map_err(|_| E::custom(format_args!("cannot allocate {} bytes", v.len())))?;
        s.push_str(v);
        Ok(Cow::Owned(s))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Unsigned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Signed(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Float(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Bool(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Unit))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.refuse(de::Unexpected::Unit))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse(de::Unexpected::Seq))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse(de::Unexpected::Map))
    }
}

/// Deserializers of the hex fields, one per field so that errors name it.
macro_rules! hex_fields {
    ($($name:ident => $field:literal),*) => {$(
        #[doc = concat!("`", $field, "`: a hex string.")]
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
            d.deserialize_any(HexString($field))
        }
    )*};
}

hex_fields!(
    parent_head => "parent_head",
    block_data => "block_data",
    storage_root => "relay_parent_storage_root"
);

/// `relay_parent_storage_root`: absent or `null` is 32 zero bytes.
fn optional_storage_root<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Optional;
    impl<'de> Visitor<'de> for Optional {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("relay_parent_storage_root as a hex string, or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            storage_root(d).map(Some)
        }
    }
    d.deserialize_option(Optional)
}

#[cfg(test)]
mod tests {
    use super::{MAX_PARAMS_BYTES, ReadError, parse, parse_value, read_bounded};
    use pvf_host::{MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES};

    #[test]
    fn accepts_prefixed_and_bare_hex_and_defaults_the_root() {
        for text in [
            r#"{"parent_head":"0x0102","block_data":"ff","relay_parent_number":7}"#,
            r#"{"parent_head":"0X0102","block_data":"\u0066f","relay_parent_number":7,"relay_parent_storage_root":null}"#,
        ] {
            let p = parse(text.as_bytes()).unwrap();
            assert_eq!(p.parent_head, vec![1, 2]);
            assert_eq!(p.block_data, vec![0xff]);
            assert_eq!(p.relay_parent_number, 7);
            assert_eq!(p.relay_parent_storage_root, [0; 32]);
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(parse_value(&value).unwrap(), p);
        }
    }

    #[test]
    fn rejects_bad_input_with_a_clear_reason() {
        let number = "relay_parent_number must be an integer from 0 to 4294967295, got";
        let with_number =
            |n: &str| format!(r#"{{"parent_head":"","block_data":"","relay_parent_number":{n}}}"#);
        let mut cases: Vec<(String, String)> = [
            ("1e23", "1e23"),
            ("-1", "-1"),
            ("1.5", "1.5"),
            ("4294967296", "4294967296"),
            ("18446744073709551616", "1.8446744073709552e19"),
            ("\"7\"", "a string"),
            ("true", "a boolean (true)"),
            ("null", "null"),
            ("[7]", "a list"),
            ("{}", "an object"),
        ]
        .into_iter()
        .map(|(n, got)| (with_number(n), format!("{number} {got}")))
        .collect();
        for (field, value, got) in [
            ("parent_head", "5", "5"),
            ("block_data", "[1,2]", "a list"),
            ("relay_parent_storage_root", "false", "a boolean (false)"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&with_number("1")).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            cases.push((
                v.to_string(),
                format!("{field} must be a hex string (e.g. \"0x0102\"), got {got}"),
            ));
        }
        for (text, needle) in [
            ("{", "malformed params"),
            (
                r#"{"parent_head":"0xzz","block_data":"","relay_parent_number":1}"#,
                "parent_head is not hex",
            ),
            (
                r#"{"parent_head":"0x012","block_data":"","relay_parent_number":1}"#,
                "parent_head is not hex (an odd number of digits)",
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
            cases.push((text.to_string(), needle.to_string()));
        }
        for (text, needle) in cases {
            let err = format!("{:#}", parse(text.as_bytes()).unwrap_err());
            assert!(err.contains(&needle), "{text}: {err}");
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                let err = format!("{:#}", parse_value(&value).unwrap_err());
                assert!(err.contains(&needle), "{text} as a value: {err}");
            }
        }
    }

    #[test]
    fn refuses_fields_over_the_contract_limits() {
        for (head, block, needle) in [
            (
                MAX_HEAD_DATA_BYTES + 1,
                0,
                "parent_head is 1048577 bytes, more than the limit of 1048576 bytes",
            ),
            (
                0,
                MAX_BLOCK_DATA_BYTES + 1,
                "block_data is 10485761 bytes, more than the limit of 10485760 bytes",
            ),
        ] {
            let text = format!(
                r#"{{"parent_head":"0x{}","block_data":"{}","relay_parent_number":1}}"#,
                "00".repeat(head),
                "ab".repeat(block)
            );
            let err = format!("{:#}", parse(text.as_bytes()).unwrap_err());
            assert!(err.contains(needle), "{err}");
        }
        // The largest params fit the file limit, with room to spare.
        let text = format!(
            r#"{{"parent_head": "0x{}", "block_data": "0x{}", "relay_parent_number": 4294967295, "relay_parent_storage_root": "0x{}"}}"#,
            "01".repeat(MAX_HEAD_DATA_BYTES),
            "02".repeat(MAX_BLOCK_DATA_BYTES),
            "03".repeat(32)
        );
        assert!(text.len() + 1024 < MAX_PARAMS_BYTES);
        let p = parse(text.as_bytes()).unwrap();
        assert_eq!(
            (p.parent_head.len(), p.block_data.len()),
            (MAX_HEAD_DATA_BYTES, MAX_BLOCK_DATA_BYTES)
        );
    }

    #[test]
    fn reading_stops_at_the_limit() {
        // An endless input (like /dev/zero) ends in an error once the limit is passed.
        assert!(matches!(
            read_bounded(std::io::repeat(0), 1 << 20),
            Err(ReadError::TooLarge { limit }) if limit == 1 << 20
        ));
        for len in [0, 1, 1000, 1 << 20] {
            let data = vec![7u8; len];
            assert_eq!(read_bounded(&data[..], 1 << 20).unwrap(), data);
        }
        assert!(read_bounded(&vec![7u8; (1 << 20) + 1][..], 1 << 20).is_err());
    }
}
