//! The environment fingerprint: everything that can make an artifact unusable here.

use std::fmt;
use std::hash::{Hash, Hasher};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use wasmtime::Engine;

use crate::config::Config;

/// A blake3 hash over everything that can make a compiled artifact unusable on this node:
/// wasmtime's compatibility hash (its version, target, ISA flags, tunables and features), this
/// crate's version, the bytes of the running executable, the CPU features detected at runtime
/// and the kernel release.
///
/// Artifacts are stored in one directory per fingerprint, so an artifact compiled by another
/// build, on another CPU or under another kernel is never even looked at.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvFingerprint([u8; 32]);

impl EnvFingerprint {
    /// The fingerprint of this process running `engine`.
    ///
    /// Reads the running executable through ambient authority (`std::env::current_exe`): this
    /// is, with opening the store's directory, the only file access outside a
    /// [`cap_std::fs::Dir`] handed in by the caller.
    pub fn current(engine: &Engine, config: &Config) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let (Some(parent), Some(name)) = (exe.parent(), exe.file_name()) else {
            return Err(std::io::Error::other(format!(
                "cannot locate the running executable ({})",
                exe.display()
            )));
        };
        let exe_dir = Dir::open_ambient_dir(parent, ambient_authority())?;
        let exe_bytes = exe_dir.read(name)?;
        // The engine settings that are not runtime limits: wasmtime's compatibility hash covers
        // the compilation settings; the stack limit is added here.
        let engine_settings = format!("max_wasm_stack={}", config.max_wasm_stack_bytes);
        Ok(Self::from_parts(
            engine,
            &exe_bytes,
            &format!("{} {engine_settings}", cpu_features()),
            &kernel_release(),
        ))
    }

    /// The fingerprint of explicit inputs (what [`EnvFingerprint::current`] gathers).
    pub fn from_parts(engine: &Engine, exe_bytes: &[u8], cpu_features: &str, kernel: &str) -> Self {
        let mut h = blake3::Hasher::new_derive_key("pvf-host environment fingerprint v1");
        let mut adapter = Blake3Hasher(&mut h);
        engine.precompile_compatibility_hash().hash(&mut adapter);
        for part in [
            env!("CARGO_PKG_VERSION").as_bytes(),
            blake3::hash(exe_bytes).as_bytes(),
            cpu_features.as_bytes(),
            kernel.as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Self(*h.finalize().as_bytes())
    }

    /// The 32 bytes of the fingerprint.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint in lowercase hex: the name of its directory in the store.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl fmt::Display for EnvFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EnvFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvFingerprint({})", self.to_hex())
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_string(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Feeds `std::hash::Hash` output into blake3 (wasmtime exposes its compatibility hash that way).
struct Blake3Hasher<'a>(&'a mut blake3::Hasher);

impl Hasher for Blake3Hasher<'_> {
    fn finish(&self) -> u64 {
        unreachable!("only used as a sink")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The CPU features detected at runtime, as a stable list of names.
fn cpu_features() -> String {
    let mut out = String::from(std::env::consts::ARCH);
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) { out.push(' '); out.push_str($f); }
            )*};
        }
        detect!(
            "sse2",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "lzcnt",
            "avx512f",
            "avx512vl",
            "avx512dq",
            "avx512bw",
            "avx512vbmi",
            "avx512bitalg",
            "avx512vpopcntdq",
            "cmpxchg16b"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) { out.push(' '); out.push_str($f); }
            )*};
        }
        detect!("neon", "lse", "fp16", "bti", "pauth", "crc", "aes", "sha2");
    }
    out
}

/// The kernel release (`uname -r`).
fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}
