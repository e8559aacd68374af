//! Pruning: least recently used first down to a byte budget, a time-to-live, never an artifact
//! in use; last use recorded at most once an hour per artifact.

use std::time::{Duration, SystemTime};

use pvf_host::{CacheStatus, CodeHash, PrunePolicy, ValidationHost};

use crate::common::*;

fn set_last_use(dir: &std::path::Path, host: &ValidationHost, code: &[u8], ago: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(artifact_path(dir, host, code))
        .unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

fn last_use(dir: &std::path::Path, host: &ValidationHost, code: &[u8]) -> Duration {
    let modified = std::fs::metadata(artifact_path(dir, host, code))
        .unwrap()
        .modified()
        .unwrap();
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
}

#[test]
fn least_recently_used_go_first_down_to_the_budget() {
    let dir = store_dir();
    let host = host(dir.path());
    let codes: Vec<Vec<u8>> = ["adder", "reject", "trap"]
        .iter()
        .map(|g| guest(g))
        .collect();
    for (i, code) in codes.iter().enumerate() {
        host.prepare(code).unwrap();
        // adder used 3 h ago, reject 2 h ago, trap 1 h ago.
        set_last_use(
            dir.path(),
            &host,
            code,
            Duration::from_secs(3600 * (3 - i as u64)),
        );
    }
    let newest = std::fs::metadata(artifact_path(dir.path(), &host, &codes[2]))
        .unwrap()
        .len();
    let report = host
        .store()
        .prune(&PrunePolicy::new().max_bytes(Some(newest)).max_idle(None))
        .unwrap();
    assert_eq!(
        report.removed_artifacts,
        vec![CodeHash::of(&codes[0]), CodeHash::of(&codes[1])]
    );
    assert!(report.freed_bytes > 0);
    assert_eq!(
        host.validate(&codes[2], &adder_params(1, 2)).cache,
        CacheStatus::Hit
    );
    assert_eq!(
        host.validate(&codes[0], &adder_params(1, 2)).cache,
        CacheStatus::Miss
    );
}

#[test]
fn artifacts_unused_for_longer_than_the_time_to_live_go() {
    let dir = store_dir();
    let host = host(dir.path());
    let old = guest("adder");
    let fresh = guest("reject");
    host.prepare(&old).unwrap();
    host.prepare(&fresh).unwrap();
    set_last_use(dir.path(), &host, &old, Duration::from_secs(25 * 3600));
    // The defaults: 10 GiB, 24 h.
    let report = host.store().prune(&PrunePolicy::new()).unwrap();
    assert_eq!(report.removed_artifacts, vec![CodeHash::of(&old)]);
    assert!(artifact_path(dir.path(), &host, &fresh).exists());
}

#[test]
fn an_artifact_in_use_is_never_pruned() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    host.prepare(&code).unwrap();
    // Another process is loading (or preparing) it: it holds the key's lock.
    let lock = std::fs::File::open(
        dir.path()
            .join(host.fingerprint().to_hex())
            .join(format!("{}.lock", CodeHash::of(&code))),
    )
    .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared).unwrap();
    let report = host
        .store()
        .prune(&PrunePolicy::new().max_bytes(Some(0)))
        .unwrap();
    assert!(report.removed_artifacts.is_empty());
    assert_eq!(report.skipped_in_use, vec![CodeHash::of(&code)]);
    drop(lock);
    let report = host
        .store()
        .prune(&PrunePolicy::new().max_bytes(Some(0)))
        .unwrap();
    assert_eq!(report.removed_artifacts, vec![CodeHash::of(&code)]);
}

#[test]
fn last_use_is_refreshed_at_most_hourly() {
    let dir = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    host.prepare(&code).unwrap();
    // Used 10 minutes ago: a hit does not write.
    set_last_use(dir.path(), &host, &code, Duration::from_secs(600));
    assert_eq!(
        host.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Hit
    );
    assert!(last_use(dir.path(), &host, &code) >= Duration::from_secs(590));
    // Used 2 hours ago: a hit records the use.
    set_last_use(dir.path(), &host, &code, Duration::from_secs(7200));
    assert_eq!(
        host.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Hit
    );
    assert!(last_use(dir.path(), &host, &code) < Duration::from_secs(60));
    let listed = host.store().list().unwrap();
    assert!(listed[0].last_used.is_some());
}

#[test]
fn other_environments_are_removed_at_open_unless_live_or_kept() {
    let dir = store_dir();
    let code = guest("adder");
    let engine = wasmtime::Engine::default();
    let other = |name: &[u8]| {
        let fp = pvf_host::EnvFingerprint::from_parts(&engine, name, "cpu", "kernel");
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let host =
            ValidationHost::with_fingerprint(root, test_config().keep_other_fingerprints(true), fp)
                .unwrap();
        host.prepare(&code).unwrap();
        (fp, host)
    };
    let (stale_fp, stale) = other(b"old build");
    drop(stale); // its process is gone
    let (live_fp, live) = other(b"running build");
    let stale_dir = dir.path().join(stale_fp.to_hex());
    let live_dir = dir.path().join(live_fp.to_hex());

    // Keeping is an option.
    drop(host_with(
        dir.path(),
        test_config().keep_other_fingerprints(true),
    ));
    assert!(stale_dir.exists() && live_dir.exists());
    // By default the unused directory goes, the one a live process uses stays.
    let ours = host(dir.path());
    assert!(!stale_dir.exists(), "unused environment removed at open");
    assert!(
        live_dir.exists(),
        "a live process's environment is never touched"
    );
    assert_eq!(
        live.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Hit
    );
    assert_eq!(
        ours.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Miss
    );
}

/// A directory named like another environment's fingerprint: the store removes only the entries
/// with its own names (artifacts, locks, `.in-use`, temporaries, whatever their type; a symlink
/// itself, never its target), keeps everything else with the directory and reports it, and
/// removes the directory once it holds only the store's entries.
#[test]
fn another_environments_directory_keeps_what_the_store_did_not_write() {
    let dir = store_dir();
    let outside = store_dir();
    let code = guest("adder");
    let engine = wasmtime::Engine::default();
    let fp = pvf_host::EnvFingerprint::from_parts(&engine, b"old build", "cpu", "kernel");
    {
        let root =
            cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let old =
            ValidationHost::with_fingerprint(root, test_config().keep_other_fingerprints(true), fp)
                .unwrap();
        old.prepare(&code).unwrap();
    }
    let other = dir.path().join(fp.to_hex());
    let hash = CodeHash::of(&code);
    // The store's own entries: the old artifact and lock, a dead writer's temporary, and a
    // symlink with an artifact's name pointing outside the store.
    std::fs::write(other.join(format!(".tmp-{hash}-2147483632-0")), b"half").unwrap();
    BadEntry::Symlink.plant(
        &other.join(format!("{}.artifact", "ab".repeat(32))),
        outside.path(),
    );
    // An operator's own entries.
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir(other.join("backup")).unwrap();
    std::fs::write(
        other.join("backup").join(format!("{hash}.artifact")),
        b"mine too",
    )
    .unwrap();
    // A folder with a fingerprint's name holding only an operator's file, and a symlink with a
    // fingerprint's name to a directory outside the store.
    let folder = dir.path().join("cd".repeat(32));
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("README"), b"mine").unwrap();
    let linked = dir.path().join("ef".repeat(32));
    std::fs::create_dir(outside.path().join("linked")).unwrap();
    std::fs::write(outside.path().join("linked").join(".in-use"), b"mine").unwrap();
    std::os::unix::fs::symlink(outside.path().join("linked"), &linked).unwrap();

    // Opening (default: other environments cleaned) removes only the store's entries.
    let host = host(dir.path());
    let mut left: Vec<String> = std::fs::read_dir(&other)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["backup", "notes.txt"]);
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(other.join("backup").join(format!("{hash}.artifact"))).unwrap(),
        b"mine too"
    );
    assert_eq!(std::fs::read(folder.join("README")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read(outside.path().join("linked").join(".in-use")).unwrap(),
        b"mine"
    );
    assert!(std::fs::symlink_metadata(&linked).unwrap().is_symlink());
    BadEntry::Symlink.assert_outside_untouched(outside.path());

    // Pruning reports what it kept, and keeps it.
    let report = host.store().prune(&PrunePolicy::new()).unwrap();
    let mut kept = report.kept_foreign.clone();
    kept.sort();
    let mut expected = vec![
        format!("{}/README", "cd".repeat(32)),
        format!("{}/backup", fp.to_hex()),
        format!("{}/notes.txt", fp.to_hex()),
    ];
    expected.sort();
    assert_eq!(kept, expected);
    assert!(report.removed_fingerprints.is_empty(), "{report:?}");
    assert!(other.join("notes.txt").exists() && folder.join("README").exists());

    // Once only the store's entries are left, the directory goes.
    std::fs::remove_file(other.join("notes.txt")).unwrap();
    std::fs::remove_dir_all(other.join("backup")).unwrap();
    let report = host.store().prune(&PrunePolicy::new()).unwrap();
    assert_eq!(report.removed_fingerprints, [fp.to_hex()]);
    assert_eq!(report.kept_foreign, [format!("{}/README", "cd".repeat(32))]);
    assert!(!entry_exists(&other));
    assert!(folder.join("README").exists());
    assert_eq!(
        host.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Miss
    );
}

/// Entries with an artifact's name that can never be loaded are removed by pruning whatever the
/// policy, counted with the removed artifacts.
#[test]
fn pruning_removes_entries_that_cannot_be_artifacts() {
    let dir = store_dir();
    let outside = store_dir();
    let host = host(dir.path());
    let code = guest("adder");
    host.prepare(&code).unwrap();
    let fp_dir = dir.path().join(host.fingerprint().to_hex());
    let mut planted = Vec::new();
    for (i, bad) in BadEntry::ALL.into_iter().enumerate() {
        let hash = format!("{i:0>64}");
        bad.plant(&fp_dir.join(format!("{hash}.artifact")), outside.path());
        planted.push(hash.parse::<CodeHash>().unwrap());
    }
    let listed = host.store().list().unwrap();
    assert_eq!(listed.len(), 1 + planted.len(), "{listed:?}");
    let report = host
        .store()
        .prune(&PrunePolicy::new().max_bytes(None).max_idle(None))
        .unwrap();
    let mut removed = report.removed_artifacts.clone();
    removed.sort();
    assert_eq!(removed, planted, "{report:?}");
    assert_eq!(
        files_in_store(dir.path(), &host).len(),
        2,
        "the good artifact and its lock"
    );
    assert_eq!(
        host.validate(&code, &adder_params(1, 2)).cache,
        CacheStatus::Hit
    );
    BadEntry::Symlink.assert_outside_untouched(outside.path());
}
