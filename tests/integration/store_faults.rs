//! Damaged, foreign and missing artifacts: a valid candidate stays valid, repaired at most once.

use pvf_host::{CacheStatus, CodeHash, ValidationParams};

use crate::common::*;

/// Prepares `adder`, damages its artifact with `damage`, and checks the next validation is
/// valid and `repaired`, and the one after a `hit`.
fn damaged_adder_is_repaired(damage: impl FnOnce(&mut Vec<u8>)) {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    assert_eq!(
        host.prepare(&code).expect("prepare").cache,
        CacheStatus::Miss
    );
    let path = artifact_path(dir.path(), &host, &code);
    let mut bytes = std::fs::read(&path).expect("artifact exists");
    damage(&mut bytes);
    std::fs::write(&path, &bytes).expect("write damaged artifact");

    assert_valid(
        &host.validate(&code, &adder_params(5, 6)),
        &11u64.to_le_bytes(),
        CacheStatus::Repaired,
    );
    assert_valid(
        &host.validate(&code, &adder_params(5, 6)),
        &11u64.to_le_bytes(),
        CacheStatus::Hit,
    );
}

#[test]
fn bit_flips_anywhere_in_the_artifact_are_repaired() {
    let len = {
        let dir = store_dir();
        let host = host(dir.path());
        let code = guest("adder");
        host.prepare(&code).expect("prepare");
        std::fs::metadata(artifact_path(dir.path(), &host, &code))
            .expect("artifact")
            .len() as usize
    };
    // Magic, checksum, start of the wasmtime header, middle and last byte of the artifact.
    for offset in [0, 7, 8, 39, 40, 41, 100, len / 3, len / 2, len - 1] {
        for bit in [0u8, 7] {
            damaged_adder_is_repaired(|b| b[offset] ^= 1 << bit);
        }
    }
}

#[test]
fn truncated_artifact_is_repaired() {
    damaged_adder_is_repaired(|b| b.truncate(b.len() / 2));
    damaged_adder_is_repaired(|b| b.truncate(39));
    damaged_adder_is_repaired(|b| b.truncate(b.len() - 1));
}

#[test]
fn zero_length_artifact_is_repaired() {
    damaged_adder_is_repaired(Vec::clear);
}

#[test]
fn appended_garbage_is_repaired() {
    damaged_adder_is_repaired(|b| b.extend_from_slice(b"garbage"));
}

#[test]
fn swapped_artifacts_are_both_repaired() {
    let dir = store_dir();
    let host = host(dir.path());
    let adder = guest("adder");
    let reject = guest("reject");
    host.prepare(&adder).expect("prepare adder");
    host.prepare(&reject).expect("prepare reject");
    let a = artifact_path(dir.path(), &host, &adder);
    let r = artifact_path(dir.path(), &host, &reject);
    let tmp = dir.path().join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&r, &a).unwrap();
    std::fs::rename(&tmp, &r).unwrap();

    // Without the salted checksum, adder's key would run reject's code: a wrong `invalid`.
    assert_valid(
        &host.validate(&adder, &adder_params(1, 2)),
        &3u64.to_le_bytes(),
        CacheStatus::Repaired,
    );
    let outcome = host.validate(&reject, &adder_params(1, 2));
    assert_eq!(outcome.cache, CacheStatus::Repaired);
    assert_eq!(outcome.verdict.as_str(), "invalid");
}

#[test]
fn artifact_from_another_fingerprint_is_not_used() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    // Another environment (other executable, CPU, kernel) prepares the same code into the same
    // store, and its artifact is copied into our directory under the right name.
    let other_fp = pvf_host::EnvFingerprint::from_parts(
        &wasmtime::Engine::default(),
        b"another build",
        "x86_64 sse2",
        "4.19.0",
    );
    let other_dir =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let other = pvf_host::ValidationHost::with_fingerprint(other_dir, test_config(), other_fp)
        .expect("other host");
    other.prepare(&code).expect("prepare elsewhere");
    let foreign = artifact_path(dir.path(), &other, &code);
    let ours = artifact_path(dir.path(), &host, &code);
    std::fs::copy(&foreign, &ours).unwrap();

    assert_valid(
        &host.validate(&code, &adder_params(2, 2)),
        &4u64.to_le_bytes(),
        CacheStatus::Repaired,
    );
    assert_valid(
        &host.validate(&code, &adder_params(2, 2)),
        &4u64.to_le_bytes(),
        CacheStatus::Hit,
    );
    // While the other environment's host is open, its directory is in use and kept.
    let report = host
        .store()
        .prune(&pvf_host::PrunePolicy::new())
        .expect("prune");
    assert!(report.removed_fingerprints.is_empty());
    assert!(foreign.exists());
    drop(other);
    // Then it is pruned whole, ours is kept.
    let report = host
        .store()
        .prune(&pvf_host::PrunePolicy::new())
        .expect("prune");
    assert_eq!(report.removed_fingerprints, vec![other_fp.to_hex()]);
    assert!(!foreign.exists());
    assert!(ours.exists());
}

#[test]
fn deleted_artifact_is_a_miss() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    host.prepare(&code).expect("prepare");
    std::fs::remove_file(artifact_path(dir.path(), &host, &code)).unwrap();
    assert_valid(
        &host.validate(&code, &adder_params(1, 1)),
        &2u64.to_le_bytes(),
        CacheStatus::Miss,
    );
}

#[test]
fn unreadable_artifact_is_repaired() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    host.prepare(&code).expect("prepare");
    let path = artifact_path(dir.path(), &host, &code);
    // A directory where the file should be: reading it fails with an I/O error.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let outcome = host.validate(&code, &adder_params(1, 1));
    // The bad entry cannot be removed as a file, and the fresh artifact cannot be renamed over a
    // directory: the verdict must still be right.
    assert!(
        matches!(outcome.verdict, pvf_host::Verdict::Valid(_)),
        "{outcome:?}"
    );
    assert_eq!(outcome.cache, CacheStatus::Repaired);
}

#[test]
fn a_second_host_on_the_same_directory_hits() {
    let dir = store_dir();
    let code = guest("undying");
    {
        let first = host(dir.path());
        assert_eq!(
            first.prepare(&code).expect("prepare").cache,
            CacheStatus::Miss
        );
    }
    let second = host(dir.path());
    let outcome = second.validate(&code, &undying_params(3));
    assert_eq!(outcome.cache, CacheStatus::Hit);
    assert_eq!(outcome.verdict.as_str(), "valid");
}

#[test]
fn stale_temporary_files_are_removed_at_open_and_live_ones_kept() {
    let dir = store_dir();
    let code = guest("adder");
    let fp = {
        let h = host(dir.path());
        h.prepare(&code).expect("prepare");
        h.fingerprint().to_hex()
    };
    let hash = CodeHash::of(&code);
    // pid 0x7fff_fff0 is far above pid_max: that writer is dead.
    let dead = dir
        .path()
        .join(&fp)
        .join(format!(".tmp-{hash}-2147483632-0"));
    let live = dir
        .path()
        .join(&fp)
        .join(format!(".tmp-{hash}-{}-99", std::process::id()));
    std::fs::write(&dead, b"half an artifact").unwrap();
    std::fs::write(&live, b"being written").unwrap();
    let h = host(dir.path());
    assert!(!dead.exists(), "stale temporary file removed");
    assert!(live.exists(), "a live writer's temporary file is kept");
    std::fs::remove_file(&live).unwrap();
    assert_eq!(
        files_in_store(dir.path(), &h),
        vec![format!("{hash}.artifact"), format!("{hash}.lock")]
    );
}

#[test]
fn verify_removes_bad_artifacts_and_keeps_good_ones() {
    let dir = store_dir();
    let host = host(dir.path());
    let adder = guest("adder");
    let undying = guest("undying");
    host.prepare(&adder).unwrap();
    host.prepare(&undying).unwrap();
    let path = artifact_path(dir.path(), &host, &adder);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let report = host.verify_store().expect("verify");
    assert_eq!(report.checked, 2);
    assert_eq!(report.bad.len(), 1);
    let (hash, reason, removed) = &report.bad[0];
    assert_eq!(*hash, CodeHash::of(&adder));
    assert!(reason.contains("checksum mismatch"), "{reason}");
    assert!(removed);
    assert!(!path.exists());
    let params = ValidationParams::new(vec![0; 8], vec![0; 8], 1);
    assert_eq!(
        host.validate(&undying, &undying_params(1)).cache,
        CacheStatus::Hit
    );
    assert_eq!(host.validate(&adder, &params).cache, CacheStatus::Miss);
}
