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

/// A directory where the artifact should be: empty (reading it fails; it is removed) or holding
/// an operator's file (not the store's to delete: `verify_store` reports it bad and not removed,
/// and the file stays). The verdict is right either way.
#[test]
fn a_directory_at_an_artifact_path_is_repaired_around() {
    for holds_a_file in [false, true] {
        let dir = store_dir();
        let host = host(dir.path());
        let code = guest("adder");
        host.prepare(&code).expect("prepare");
        let path = artifact_path(dir.path(), &host, &code);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        if holds_a_file {
            std::fs::write(path.join("operator-notes.txt"), b"mine").unwrap();
        }
        let outcome = host.validate(&code, &adder_params(1, 1));
        assert!(
            matches!(outcome.verdict, pvf_host::Verdict::Valid(_)),
            "{outcome:?}"
        );
        assert_eq!(outcome.cache, CacheStatus::Repaired);
        if holds_a_file {
            let report = host.verify_store().expect("verify");
            assert_eq!(report.bad.len(), 1, "{report:?}");
            assert!(!report.bad[0].2, "reported as not removed: {report:?}");
            let kept = std::fs::read(path.join("operator-notes.txt")).unwrap();
            assert_eq!(kept, b"mine");
        }
    }
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

/// How long a store operation on a hostile entry may take before the test calls it a hang.
const HANG: std::time::Duration = std::time::Duration::from_secs(60);

/// A FIFO, directory, symlink, socket, 50 GB sparse file or file just over the maximum at an
/// artifact's path: `validate` and `prepare` re-prepare (`repaired`), never hang or abort, and
/// store a good artifact in its place; `verify_store` reports the entry and removes it.
#[test]
fn a_bad_entry_at_an_artifact_path_is_repaired_and_verified_away() {
    for bad in BadEntry::ALL {
        let dir = store_dir();
        let outside = store_dir();
        let host = std::sync::Arc::new(host(dir.path()));
        let code = guest("adder");
        host.prepare(&code).expect("prepare");
        let path = artifact_path(dir.path(), &host, &code);

        bad.plant(&path, outside.path());
        let (h, c) = (host.clone(), code.clone());
        let outcome = within(HANG, &format!("validate over a {bad:?}"), move || {
            h.validate(&c, &adder_params(5, 6))
        });
        assert_valid(&outcome, &11u64.to_le_bytes(), CacheStatus::Repaired);
        assert!(
            std::fs::symlink_metadata(&path).unwrap().is_file(),
            "{bad:?}: a good artifact replaced it"
        );
        assert_valid(
            &host.validate(&code, &adder_params(5, 6)),
            &11u64.to_le_bytes(),
            CacheStatus::Hit,
        );

        bad.plant(&path, outside.path());
        let (h, c) = (host.clone(), code.clone());
        let prepared = within(HANG, &format!("prepare over a {bad:?}"), move || {
            h.prepare(&c)
        });
        assert_eq!(
            prepared.expect("prepare").cache,
            CacheStatus::Repaired,
            "{bad:?}"
        );

        bad.plant(&path, outside.path());
        let h = host.clone();
        let report = within(HANG, &format!("verify over a {bad:?}"), move || {
            h.verify_store()
        })
        .expect("verify");
        assert_eq!(report.checked, 1, "{bad:?}: {report:?}");
        assert_eq!(report.bad.len(), 1, "{bad:?}: {report:?}");
        let (hash, reason, removed) = &report.bad[0];
        assert_eq!(*hash, CodeHash::of(&code), "{bad:?}");
        assert!(removed, "{bad:?}: {reason}");
        // Judged by its type or size, never read.
        let why = match bad {
            BadEntry::Sparse50G | BadEntry::JustOverMax => "more than the maximum artifact size",
            _ => "not a regular file",
        };
        assert!(reason.contains(why), "{bad:?}: {reason}");
        assert!(!entry_exists(&path), "{bad:?}: removed");
        bad.assert_outside_untouched(outside.path());
    }
}

/// The fingerprint directory replaced by a file, a FIFO or a symlink to a directory outside the
/// store: opening the store replaces it with a directory (the outside one is untouched).
#[test]
fn a_fingerprint_directory_replaced_by_something_else_heals_at_open() {
    for bad in [
        BadEntry::Sparse50G,
        BadEntry::Fifo,
        BadEntry::Symlink,
        BadEntry::Socket,
    ] {
        let dir = store_dir();
        let outside = store_dir();
        let code = guest("adder");
        let fp_dir = {
            let h = host(dir.path());
            h.prepare(&code).expect("prepare");
            dir.path().join(h.fingerprint().to_hex())
        };
        std::fs::remove_dir_all(&fp_dir).unwrap();
        let planted = if bad == BadEntry::Symlink {
            // A symlink to a directory outside the store, holding an operator's file.
            let target = outside.path().join("elsewhere");
            std::fs::create_dir(&target).unwrap();
            std::fs::write(target.join("precious"), b"mine").unwrap();
            std::os::unix::fs::symlink(&target, &fp_dir).unwrap();
            Some(target)
        } else {
            bad.plant(&fp_dir, outside.path());
            None
        };
        let root = dir.path().to_path_buf();
        let host = within(HANG, &format!("open over a {bad:?}"), move || host(&root));
        assert!(
            std::fs::symlink_metadata(&fp_dir).unwrap().is_dir(),
            "{bad:?}: a real directory again"
        );
        assert_valid(
            &host.validate(&code, &adder_params(1, 2)),
            &3u64.to_le_bytes(),
            CacheStatus::Miss,
        );
        assert_valid(
            &host.validate(&code, &adder_params(1, 2)),
            &3u64.to_le_bytes(),
            CacheStatus::Hit,
        );
        if let Some(target) = planted {
            assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"mine");
            assert_eq!(
                std::fs::read_dir(&target).unwrap().count(),
                1,
                "nothing written outside"
            );
        }
    }
}

/// Lock files (`<code-hash>.lock`, `.in-use`) that are not regular files neither block nor fail
/// the host: they are replaced by regular files.
#[test]
fn lock_files_of_the_wrong_type_are_replaced() {
    for bad in BadEntry::NOT_FILES {
        for lock in ["key", ".in-use"] {
            let dir = store_dir();
            let outside = store_dir();
            let code = guest("adder");
            let fp_dir = {
                let h = host(dir.path());
                h.prepare(&code).expect("prepare");
                dir.path().join(h.fingerprint().to_hex())
            };
            let path = if lock == "key" {
                // No artifact: the next validation prepares, under the key's lock.
                std::fs::remove_file(fp_dir.join(format!("{}.artifact", CodeHash::of(&code))))
                    .unwrap();
                fp_dir.join(format!("{}.lock", CodeHash::of(&code)))
            } else {
                fp_dir.join(".in-use")
            };
            bad.plant(&path, outside.path());
            let root = dir.path().to_path_buf();
            let c = code.clone();
            let outcome = within(HANG, &format!("{lock} lock as a {bad:?}"), move || {
                let host = host_with(
                    &root,
                    test_config().prepare_wait(std::time::Duration::from_secs(2)),
                );
                host.validate(&c, &adder_params(1, 2))
            });
            assert!(
                matches!(outcome.verdict, pvf_host::Verdict::Valid(_)),
                "{lock} as {bad:?}: {outcome:?}"
            );
            assert!(
                std::fs::symlink_metadata(&path).unwrap().is_file(),
                "{lock} as {bad:?}: replaced by a regular file"
            );
            bad.assert_outside_untouched(outside.path());
        }
    }
}
