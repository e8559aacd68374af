//! Computes the build identity the host and its preparation worker compare at their handshake:
//! a hash of this crate's sources, the workspace's lockfile and WIT files, the compiler and the
//! build profile. Two binaries built from the same sources by the same cargo command agree.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest
        .parent()
        .expect("the host crate lives in the workspace");
    let mut inputs = Vec::new();
    files(&manifest.join("src"), &mut inputs);
    files(&workspace.join("wit"), &mut inputs);
    inputs.push(manifest.join("Cargo.toml"));
    inputs.push(workspace.join("Cargo.lock"));
    inputs.sort();
    // Two independent 64-bit hashes (std's SipHash with fixed keys) make a 128-bit identity.
    let mut hashers = [
        std::hash::DefaultHasher::new(),
        std::hash::DefaultHasher::new(),
    ];
    1u8.hash(&mut hashers[1]);
    for path in &inputs {
        let bytes = std::fs::read(path).unwrap_or_default();
        for h in &mut hashers {
            path.strip_prefix(workspace).unwrap_or(path).hash(h);
            bytes.hash(h);
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    for var in ["PROFILE", "OPT_LEVEL", "DEBUG", "TARGET"] {
        let value = std::env::var(var).unwrap_or_default();
        for h in &mut hashers {
            value.hash(h);
        }
    }
    for h in &mut hashers {
        version.hash(h);
    }
    let id = format!("{:016x}{:016x}", hashers[0].finish(), hashers[1].finish());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(
        out.join("build_id.rs"),
        format!(
            "/// This build's identity (see `build.rs`), behind a fixed marker.\n\
             pub(crate) const BUILD_ID_MARKED: &str = \"pvf-build-id:{id}\";\n"
        ),
    )
    .expect("write build_id.rs");
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=Cargo.toml");
    println!("cargo::rerun-if-changed=../Cargo.lock");
    println!("cargo::rerun-if-changed=../wit");
}
