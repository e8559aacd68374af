//! How results reach the user: one JSON object on stdout with `--json`, text otherwise; and the
//! contract's exit codes.

use serde_json::{Value, json};

/// Valid, or success.
pub const EXIT_OK: u8 = 0;
/// A deterministic verdict against the code or candidate.
pub const EXIT_INVALID: u8 = 1;
/// This node cannot tell.
pub const EXIT_INDETERMINATE: u8 = 2;
/// Usage or input error.
const EXIT_USAGE: u8 = 64;

/// Where output goes.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints the result of a command: `value` as JSON, or `human` as text; `reason` (for a
    /// non-zero exit) as one line on stderr.
    pub fn emit(&self, value: Value, human: &str, reason: Option<&str>) {
        if self.json {
            println!("{value}");
        } else if !human.is_empty() {
            println!("{human}");
        }
        if let Some(reason) = reason {
            eprintln!("{}", one_line(reason));
        }
    }

    /// Reports a usage or input error (exit 64).
    pub fn usage_error(&self, reason: &str) -> u8 {
        let reason = one_line(reason);
        if self.json {
            println!("{}", json!({"error": reason, "verdict": Value::Null}));
        }
        eprintln!("error: {reason}");
        EXIT_USAGE
    }
}

/// `s` with line breaks replaced, so a reason is one line.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `0x`-prefixed lowercase hex.
pub fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}
