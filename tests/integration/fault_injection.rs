//! Seeded fault injection over every file the store writes. Every case: a valid candidate stays
//! `valid`, with at most one re-preparation, and nothing panics. Failures print the seed; set
//! `PVF_FAULT_SEED` to reproduce one.

use std::path::{Path, PathBuf};

use pvf_host::{CacheStatus, Verdict};

use crate::common::*;

/// A small deterministic generator (splitmix64), so a failing case can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Self {
        let seed = std::env::var("PVF_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_f00d_cafe_0001);
        eprintln!("fault injection seed: {seed} (PVF_FAULT_SEED={seed} to replay)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every file below the fingerprint directory, with its bytes.
fn store_files(fp_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(fp_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn check_valid(outcome: pvf_host::Outcome, allowed: &[CacheStatus], what: &str) {
    assert!(
        allowed.contains(&outcome.cache),
        "{what}: cache {:?}",
        outcome.cache
    );
    match outcome.verdict {
        Verdict::Valid(r) => assert_eq!(r.head_data, 3u64.to_le_bytes(), "{what}"),
        other => panic!("{what}: expected valid, got {other:?}"),
    }
}

/// A generator, a store holding `adder`'s artifact, the code, the host and its fingerprint
/// directory.
fn prepared_adder() -> (
    Rng,
    tempfile::TempDir,
    Vec<u8>,
    pvf_host::ValidationHost,
    PathBuf,
) {
    let rng = Rng::from_env();
    let dir = store_dir();
    let code = guest("adder");
    let host = host(dir.path());
    host.prepare(&code).expect("prepare");
    let fp_dir = dir.path().join(host.fingerprint().to_hex());
    (rng, dir, code, host, fp_dir)
}

#[test]
fn random_bit_flips_in_every_store_file_never_change_the_verdict() {
    let (mut rng, _dir, code, host, fp_dir) = prepared_adder();
    let pristine = store_files(&fp_dir);
    let names: Vec<String> = pristine
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The artifact, its lock file and the directory's in-use marker.
    assert!(names.iter().any(|n| n.ends_with(".artifact")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".lock")), "{names:?}");
    assert!(names.iter().any(|n| n == ".in-use"), "{names:?}");

    let artifact = names.iter().position(|n| n.ends_with(".artifact")).unwrap();
    let mut flips = 0;
    for case in 0..180 {
        // Restore the pristine store, then damage one file: mostly the artifact (the only file
        // with content), every fourth case one of the others.
        for (path, bytes) in &pristine {
            std::fs::write(path, bytes).unwrap();
        }
        let pick = if case % 4 == 3 {
            rng.below(pristine.len())
        } else {
            artifact
        };
        let (path, bytes) = &pristine[pick];
        let mut damaged = bytes.clone();
        let action = if damaged.is_empty() { 9 } else { rng.below(10) };
        let what = match action {
            0..=6 => {
                let offset = rng.below(damaged.len());
                let bit = rng.below(8);
                damaged[offset] ^= 1 << bit;
                flips += 1;
                format!("case {case}: bit {bit} at {offset} of {}", path.display())
            }
            7 => {
                let len = rng.below(damaged.len());
                damaged.truncate(len);
                format!("case {case}: {} truncated to {len}", path.display())
            }
            _ => {
                let len = 1 + rng.below(64);
                damaged = (0..len).map(|_| rng.next() as u8).collect();
                format!(
                    "case {case}: {} replaced by {len} garbage bytes",
                    path.display()
                )
            }
        };
        std::fs::write(path, &damaged).unwrap();
        let is_artifact = path.extension().is_some_and(|e| e == "artifact");
        let allowed: &[CacheStatus] = if is_artifact {
            &[CacheStatus::Repaired]
        } else {
            &[CacheStatus::Hit]
        };
        check_valid(host.validate(&code, &adder_params(1, 2)), allowed, &what);
        // A second look is a plain hit: at most one re-preparation per fault.
        check_valid(
            host.validate(&code, &adder_params(1, 2)),
            &[CacheStatus::Hit],
            &what,
        );
    }
    assert!(flips >= 100, "only {flips} bit flips");
}

#[test]
fn garbage_in_the_store_is_ignored_or_repaired() {
    let (mut rng, dir, code, _first_host, fp_dir) = prepared_adder();
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    // Files and directories with names the store uses, and names it does not.
    std::fs::write(fp_dir.join("notes.txt"), &garbage).unwrap();
    std::fs::write(
        fp_dir.join(format!("{}.artifact", "0".repeat(64))),
        &garbage,
    )
    .unwrap();
    std::fs::create_dir(fp_dir.join(format!("{}.artifact", "1".repeat(64)))).unwrap();
    std::fs::write(fp_dir.join(format!("{}.lock", "2".repeat(64))), &garbage).unwrap();
    // A temporary file of a writer that is gone (no such pid).
    std::fs::write(
        fp_dir.join(format!(".tmp-{}-2147483632-0", "3".repeat(64))),
        &garbage,
    )
    .unwrap();
    std::fs::write(fp_dir.join(".tmp-nonsense"), &garbage).unwrap();
    std::fs::write(dir.path().join("f".repeat(64)), &garbage).unwrap();
    std::fs::write(dir.path().join("README"), &garbage).unwrap();

    // Reopening removes the dead writers' temporary files; everything else is left alone.
    let host = crate::common::host(dir.path());
    assert!(
        !fp_dir
            .join(format!(".tmp-{}-2147483632-0", "3".repeat(64)))
            .exists()
    );
    check_valid(
        host.validate(&code, &adder_params(1, 2)),
        &[CacheStatus::Hit],
        "garbage around",
    );
    let listed = host.store().list().expect("list");
    assert!(
        listed
            .iter()
            .any(|a| a.code_hash == pvf_host::CodeHash::of(&code))
    );
    // The fake artifact and the directory with an artifact's name are found bad by verify and
    // removed; the real one stays.
    let report = host.verify_store().expect("verify");
    assert_eq!(report.bad.len(), 2, "{report:?}");
    assert!(report.bad.iter().all(|(_, _, removed)| *removed));
    check_valid(
        host.validate(&code, &adder_params(1, 2)),
        &[CacheStatus::Hit],
        "after verify",
    );
}
