//! `pvf cache list | verify | prune` run as real processes: hostile entries in the store seen
//! and healed by the cache commands. Every process has a deadline
//! ([`run`]): a command that blocks fails the test instead of hanging it.

use crate::common::*;
use std::path::{Path, PathBuf};

use serde_json::Value;

const ADDER_PARAMS: &str = r#"{"parent_head": "0x0500000000000000", "block_data": "0700000000000000", "relay_parent_number": 7}"#;

/// Prepares `guest` into `store` with the CLI; returns its code hash.
fn prepare(store: &Path, guest: &str) -> String {
    let (code, v, stderr) = run_json(pvf(store).arg("prepare").arg(pvf_test_guests::path(guest)));
    assert_eq!(code, 0, "{v} {stderr}");
    v["code_hash"].as_str().unwrap().to_string()
}

/// This environment's fingerprint directory in `store`.
fn fingerprint_dir(store: &Path) -> PathBuf {
    let (_, list, _) = run_json(pvf(store).args(["cache", "list"]));
    store.join(list["fingerprint"].as_str().unwrap())
}

/// A FIFO, directory, symlink, socket, 50 GB sparse file or file just over the maximum at an
/// artifact's path: `cache list` shows it with its kind, `validate` is valid (`repaired`),
/// `cache verify` reports and removes it, `cache prune` removes it; no command hangs or aborts.
#[test]
fn cache_commands_see_and_heal_a_bad_entry_at_an_artifact_path() {
    for bad in BadEntry::ALL {
        let dir = store_dir();
        let outside = store_dir();
        let store = dir.path().join("store");
        let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
        let hash = prepare(&store, "adder");
        let path = fingerprint_dir(&store).join(format!("{hash}.artifact"));

        bad.plant(&path, outside.path());
        let (code, list, stderr) = run_json(pvf(&store).args(["cache", "list"]));
        assert_eq!(code, 0, "{bad:?}: {stderr}");
        let listed = &list["artifacts"][0];
        assert_eq!(listed["code_hash"], hash.as_str(), "{bad:?}: {list}");
        assert_eq!(listed["kind"], bad.kind(), "{bad:?}: {list}");

        let (code, v, stderr) = run_json(
            pvf(&store)
                .arg("validate")
                .arg(pvf_test_guests::path("adder"))
                .arg("--params")
                .arg(&params),
        );
        assert_eq!(
            (code, v["verdict"].as_str(), v["cache"].as_str()),
            (0, Some("valid"), Some("repaired")),
            "{bad:?}: {v} {stderr}"
        );
        assert!(
            std::fs::symlink_metadata(&path).unwrap().is_file(),
            "{bad:?}"
        );

        bad.plant(&path, outside.path());
        let (code, report, stderr) = run_json(pvf(&store).args(["cache", "verify"]));
        assert_eq!(code, 0, "{bad:?}: {report} {stderr}");
        assert_eq!(report["checked"], 1, "{bad:?}: {report}");
        assert_eq!(
            report["bad"][0]["code_hash"],
            hash.as_str(),
            "{bad:?}: {report}"
        );
        assert_eq!(report["bad"][0]["removed"], true, "{bad:?}: {report}");
        assert_eq!(report["consistent"], true, "{bad:?}: {report}");
        assert!(!entry_exists(&path), "{bad:?}: removed by verify");

        bad.plant(&path, outside.path());
        let (code, pruned, stderr) = run_json(pvf(&store).args(["cache", "prune"]));
        assert_eq!(code, 0, "{bad:?}: {pruned} {stderr}");
        assert_eq!(
            pruned["removed_artifacts"][0],
            hash.as_str(),
            "{bad:?}: {pruned}"
        );
        assert!(!entry_exists(&path), "{bad:?}: removed by prune");
        bad.assert_outside_untouched(outside.path());
    }
}

/// `cache prune` reports the entries it kept in another environment's directory.
#[test]
fn cache_prune_reports_what_it_kept() {
    let dir = store_dir();
    prepare(dir.path(), "adder");
    let foreign = dir.path().join("cd".repeat(32));
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    std::fs::write(foreign.join(format!("{}.lock", "1".repeat(64))), b"").unwrap();
    let (code, pruned, _) = run_json(pvf(dir.path()).args(["cache", "prune"]));
    assert_eq!(code, 0, "{pruned}");
    assert_eq!(
        pruned["kept_foreign"],
        Value::from(vec![format!("{}/notes.txt", "cd".repeat(32))])
    );
    assert_eq!(
        pruned["removed_fingerprints"],
        Value::from(Vec::<String>::new())
    );
    assert!(foreign.join("notes.txt").exists());
    assert!(!foreign.join(format!("{}.lock", "1".repeat(64))).exists());
    let out = run(pvf(dir.path()).args(["cache", "prune"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "kept what the store did not write: {}/notes.txt",
            "cd".repeat(32)
        )),
        "{stdout}"
    );
}
