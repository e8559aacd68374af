//! How results reach the user: one JSON object on stdout with `--json`, text otherwise; and the
//! contract's exit codes.
//!
//! Human text can carry what a guest or an input file chose (a rejection reason, a file name, a
//! malformed field): every human line goes through [`escape_controls`], so that no carriage
//! return, escape sequence or bidirectional override reaches the terminal. JSON output is
//! escaped by the JSON encoder.

use std::borrow::Cow;
use std::fmt::Write as _;

use std::io::Write;

use serde_json::{Value, json};

/// Valid, or success.
pub const EXIT_OK: u8 = 0;
/// A deterministic verdict against the code or candidate.
pub const EXIT_INVALID: u8 = 1;
/// This node cannot tell.
pub const EXIT_INDETERMINATE: u8 = 2;
/// Usage or input error.
pub const EXIT_USAGE: u8 = 64;

/// Where output goes.
#[derive(Clone, Copy)]
pub struct Output {
    /// `--json`: one JSON object on stdout, human text on stderr.
    pub json: bool,
}

impl Output {
    /// Prints the result of a command: `value` as JSON, or `human` as text (control characters
    /// escaped); `reason` (for a non-zero exit) as one line on stderr.
    pub fn emit(&self, value: impl serde::Serialize, human: &str, reason: Option<&str>) {
        if self.json {
            if let Err(e) = print_json_line(&value) {
                eprintln!("error: cannot write the result: {e}");
            }
        } else if !human.is_empty() {
            // Line by line: the line breaks of a multi-line listing are ours.
            let text: Vec<Cow<'_, str>> = human.split('\n').map(escape_controls).collect();
            println!("{}", text.join("\n"));
        }
        if let Some(reason) = reason {
            eprintln!("{}", one_line(reason));
        }
    }

    /// Reports a usage or input error (exit 64).
    pub fn usage_error(&self, reason: &str) -> u8 {
        if self.json {
            println!(
                "{}",
                json!({"error": join_lines(reason), "verdict": Value::Null})
            );
        }
        eprintln!("error: {}", one_line(reason));
        EXIT_USAGE
    }
}

/// `s` as one line: line breaks (`\n` or `\r\n`) become spaces (for JSON, which escapes the
/// rest itself).
pub fn join_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as one line for a human: [`join_lines`], then every other control character, a lone `\r`
/// included, escaped ([`escape_controls`]).
pub fn one_line(s: &str) -> String {
    escape_controls(&join_lines(s)).into_owned()
}

/// Whether `c` must not reach a terminal as is: control characters (`char::is_control`: C0, DEL,
/// C1, which include CR, ESC and NUL), the line and paragraph separators U+2028/U+2029, and the
/// characters that reorder text (bidirectional marks, embeddings, overrides and isolates:
/// U+061C, U+200E/U+200F, U+202A–U+202E, U+2066–U+2069).
pub fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}' | '\u{202A}'
                ..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character that [`is_dangerous`] escaped as Rust writes it (`\n`, `\r`, `\t`,
/// `\0`, otherwise `\u{1b}`); borrowed when there is none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_dangerous(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `0x`-prefixed lowercase hex.
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Prints `value` as one JSON line on stdout, serialized into it as it goes (a large result is
/// never held as one string), under stdout's lock (concurrent lines never interleave), flushed.
pub fn print_json_line(value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()
}

/// Bytes as a `0x`-prefixed lowercase hex JSON string, written straight into the output as it
/// is serialized: a 64 MiB field never exists as a 128 MiB `String`.
pub struct Hex<'a>(pub &'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("0x")?;
        let mut buf = [0u8; 2 * 4096];
        for chunk in self.0.chunks(4096) {
            let hex = &mut buf[..2 * chunk.len()];
            // The buffer is exactly twice the chunk: encoding cannot fail, nor produce non-ASCII.
            if hex::encode_to_slice(chunk, hex).is_err() {
                return Err(std::fmt::Error);
            }
            f.write_str(std::str::from_utf8(hex).map_err(|_| std::fmt::Error)?)?;
        }
        Ok(())
    }
}

impl serde::Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, is_dangerous, one_line};

    #[test]
    fn escapes_every_dangerous_character_and_keeps_the_rest() {
        for (input, expected) in [
            ("plain reason: 42 bytes", "plain reason: 42 bytes"),
            ("carriage\rreturn", "carriage\\rreturn"),
            (
                "\x1b[2K\x1b[1Gvalid (cache: hit)",
                "\\u{1b}[2K\\u{1b}[1Gvalid (cache: hit)",
            ),
            ("nul\0byte", "nul\\0byte"),
            ("tab\there", "tab\\there"),
            ("del\x7f c1\u{9b}", "del\\u{7f} c1\\u{9b}"),
            ("line\u{2028}sep\u{2029}", "line\\u{2028}sep\\u{2029}"),
            ("bidi \u{202E}evil\u{202C}", "bidi \\u{202e}evil\\u{202c}"),
            ("isolate \u{2066}x\u{2069}", "isolate \\u{2066}x\\u{2069}"),
            (
                "marks \u{200E}\u{200F}\u{061C}",
                "marks \\u{200e}\\u{200f}\\u{61c}",
            ),
            ("unicode stays: é, 日本, 🦀", "unicode stays: é, 日本, 🦀"),
        ] {
            assert_eq!(escape_controls(input), expected, "{input:?}");
            assert!(!escape_controls(input).chars().any(is_dangerous));
        }
    }

    #[test]
    fn one_line_joins_lines_then_escapes() {
        assert_eq!(one_line("first\nsecond\r\n\nthird"), "first second third");
        assert_eq!(
            one_line("invalid\rvalid (cache: hit)\x1b[31m"),
            "invalid\\rvalid (cache: hit)\\u{1b}[31m"
        );
        assert_eq!(one_line("zero\0"), "zero\\0");
    }
}

#[cfg(test)]
mod hex_tests {
    use super::{Hex, hex0x};

    #[test]
    fn streamed_hex_is_the_same_as_hex0x() {
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert_eq!(Hex(&bytes).to_string(), hex0x(&bytes));
            assert_eq!(
                serde_json::to_string(&Hex(&bytes)).unwrap(),
                format!("\"{}\"", hex0x(&bytes))
            );
        }
    }
}
