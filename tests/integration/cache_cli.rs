//! `pvf cache list | verify | prune` run as real processes: the table `list` prints, and hostile
//! entries in the store healed by the cache commands. Every process has a deadline
//! ([`run`]): a command that blocks fails the test instead of hanging it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::*;

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

/// The rows of `pvf cache list`'s table, each cut into cells at the header's column starts.
fn table(store: &Path) -> (String, Vec<Vec<String>>) {
    let out = run(pvf(store).args(["cache", "list"]));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header line").to_string();
    let starts: Vec<usize> = ["CODE HASH", "ENVIRONMENT", "SIZE", "LAST USED", "STATE"]
        .iter()
        .map(|column| {
            header
                .find(column)
                .unwrap_or_else(|| panic!("{column} in {header:?}"))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{header}");
    let rows = lines
        .map(|line| {
            (0..starts.len())
                .map(|i| {
                    let end = starts.get(i + 1).copied().unwrap_or(line.len());
                    line[starts[i]..end].trim().to_string()
                })
                .collect()
        })
        .collect();
    (header, rows)
}

#[test]
fn cache_list_prints_a_header_and_a_row_per_entry() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let outside = store_dir();
    let adder = prepare(&store, "adder");
    let undying = prepare(&store, "undying");
    let fp_dir = fingerprint_dir(&store);
    let fp = fp_dir.file_name().unwrap().to_string_lossy().into_owned();
    // adder last used 3 hours ago.
    std::fs::File::options()
        .write(true)
        .open(fp_dir.join(format!("{adder}.artifact")))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3 * 3600 + 60))
        .unwrap();
    // Another environment's artifact, and a FIFO with an artifact's name.
    let other = pvf_host::EnvFingerprint::from_parts(
        &wasmtime::Engine::default(),
        b"another build",
        "cpu",
        "kernel",
    );
    {
        let root =
            cap_std::fs::Dir::open_ambient_dir(&store, cap_std::ambient_authority()).unwrap();
        pvf_host::ValidationHost::with_fingerprint(
            root,
            test_config().keep_other_fingerprints(true),
            other,
        )
        .unwrap()
        .prepare(&guest("reject"))
        .unwrap();
    }
    let fifo = "f".repeat(64);
    BadEntry::Fifo.plant(&fp_dir.join(format!("{fifo}.artifact")), outside.path());

    let (header, rows) = table(&store);
    assert!(header.starts_with("CODE HASH"), "{header}");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let row = |hash: &str| {
        rows.iter()
            .find(|r| r[0] == hash)
            .unwrap_or_else(|| panic!("{hash} in {rows:?}"))
    };
    let current = format!("{} (current)", &fp[..12]);
    let adder_row = row(&adder);
    assert_eq!(adder_row[1], current);
    assert!(adder_row[2].ends_with(" kB"), "{adder_row:?}");
    assert_eq!(adder_row[3], "3 hours ago");
    assert_eq!(adder_row[4], "ready");
    let undying_row = row(&undying);
    // Prepared moments ago: "less than a second ago", "1 second ago", "12 seconds ago".
    assert!(
        ["second ago", "seconds ago"]
            .iter()
            .any(|end| undying_row[3].ends_with(end)),
        "{undying_row:?}"
    );
    assert_eq!(
        row(&fifo)[1..],
        [
            current.clone(),
            "0 B".into(),
            row(&fifo)[3].clone(),
            "bad: fifo".into()
        ]
    );
    let reject = pvf_host::CodeHash::of(&guest("reject")).to_string();
    assert_eq!(row(&reject)[1], other.to_hex()[..12]);
    assert_eq!(row(&reject)[4], "stale");
    // This environment's entries first.
    assert_eq!(rows[3][0], reject, "{rows:?}");

    // The JSON keeps its fields (scripts rely on them) and adds the kind and state.
    let (code, list, _) = run_json(pvf(&store).args(["cache", "list"]));
    assert_eq!(code, 0);
    let artifacts = list["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 4);
    for a in artifacts {
        let mut keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "code_hash",
                "current",
                "fingerprint",
                "kind",
                "last_used_unix",
                "size",
                "state"
            ]
        );
    }
    let entry = |hash: &str| artifacts.iter().find(|a| a["code_hash"] == hash).unwrap();
    let three_hours_ago = (SystemTime::now() - Duration::from_secs(3 * 3600 + 60))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        entry(&adder)["last_used_unix"]
            .as_u64()
            .unwrap()
            .abs_diff(three_hours_ago)
            < 60
    );
    assert_eq!(entry(&adder)["current"], true);
    assert_eq!(entry(&adder)["fingerprint"], fp.as_str());
    assert_eq!(entry(&adder)["kind"], "file");
    assert!(entry(&adder)["size"].as_u64().unwrap() > 1000);
    assert_eq!(entry(&fifo)["kind"], "fifo");
    assert_eq!(entry(&fifo)["state"], "bad: fifo");
    assert_eq!(entry(&reject)["current"], false);
    assert_eq!(entry(&reject)["state"], "stale");
}

#[test]
fn cache_list_of_an_empty_store_prints_the_header() {
    let dir = store_dir();
    let (header, rows) = table(dir.path());
    assert!(header.starts_with("CODE HASH"), "{header}");
    assert!(rows.is_empty(), "{rows:?}");
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
        assert!(
            listed["state"].as_str().unwrap().starts_with("bad: "),
            "{bad:?}: {list}"
        );

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

/// Failure records (written through the library, as the host does after a deterministic
/// preparation failure): `cache list` shows them as rows of the table and in `failures`,
/// `cache verify` removes a damaged one and a FIFO at a record's name, `cache prune
/// --older-than` removes an old one and keeps a fresh one.
#[test]
fn cache_commands_list_verify_and_prune_failure_records() {
    use pvf_host::{ArtifactStore, CodeHash, FailureKind, FailureRecord, StoreOptions};

    let dir = store_dir();
    let store = dir.path().join("store");
    let outside = store_dir();
    let adder = prepare(&store, "adder");
    let fp_dir = fingerprint_dir(&store);
    let fp = fp_dir.file_name().unwrap().to_string_lossy().into_owned();
    let hash = |digit: &str| digit.repeat(64).parse::<CodeHash>().unwrap();
    let (invalid, world, old, fifo, stale) =
        (hash("1"), hash("2"), hash("3"), hash("4"), hash("5"));
    let other = pvf_host::EnvFingerprint::from_parts(
        &wasmtime::Engine::default(),
        b"another build",
        "cpu",
        "kernel",
    );
    {
        let open = |fingerprint| {
            let root =
                cap_std::fs::Dir::open_ambient_dir(&store, cap_std::ambient_authority()).unwrap();
            let options = StoreOptions::new().keep_other_fingerprints(true);
            ArtifactStore::open(root, fingerprint, options).unwrap()
        };
        // The `pvf` binary's environment, named by its directory.
        let lib = open(fp.parse().unwrap());
        let record = |kind, reason: &str| FailureRecord::new(kind, reason);
        lib.record_failure(
            &invalid,
            &record(FailureKind::InvalidCode, "not a component\n\x1b[31mred"),
        )
        .unwrap();
        lib.record_failure(
            &world,
            &record(FailureKind::WrongWorld, "no validate export"),
        )
        .unwrap();
        lib.record_failure(&old, &record(FailureKind::PrecheckLimit, "61 s of CPU"))
            .unwrap();
        open(other)
            .record_failure(&stale, &record(FailureKind::InvalidCode, "elsewhere"))
            .unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(fp_dir.join(format!("{old}.failed")))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3 * 3600 + 60))
        .unwrap();
    BadEntry::Fifo.plant(&fp_dir.join(format!("{fifo}.failed")), outside.path());

    let (_, rows) = table(&store);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let row = |hash: &str| {
        rows.iter()
            .find(|r| r[0] == hash)
            .unwrap_or_else(|| panic!("{hash} in {rows:?}"))
            .clone()
    };
    let current = format!("{} (current)", &fp[..12]);
    assert_eq!(row(&adder)[4], "ready");
    assert_eq!(row(&invalid.to_string())[1], current);
    assert_eq!(row(&invalid.to_string())[4], "failed (invalid code)");
    assert_eq!(row(&world.to_string())[4], "failed (wrong world)");
    assert_eq!(row(&old.to_string())[3], "3 hours ago");
    assert_eq!(row(&old.to_string())[4], "failed (pre-check limit)");
    assert_eq!(
        row(&fifo.to_string())[4],
        "failed (bad: not a regular file: a fifo)"
    );
    assert_eq!(row(&stale.to_string())[1], other.to_hex()[..12]);
    assert_eq!(row(&stale.to_string())[4], "failed (stale)");

    // JSON: `artifacts` keeps meaning artifacts; records are `failures`.
    let (code, list, _) = run_json(pvf(&store).args(["cache", "list"]));
    assert_eq!(code, 0);
    assert_eq!(list["artifacts"].as_array().unwrap().len(), 1, "{list}");
    let failures = list["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 5, "{list}");
    let entry = |hash: &CodeHash| {
        failures
            .iter()
            .find(|f| f["code_hash"] == hash.to_string().as_str())
            .unwrap()
    };
    assert_eq!(entry(&invalid)["failure"], "invalid code");
    assert_eq!(entry(&invalid)["reason"], "not a component\n\x1b[31mred");
    assert_eq!(entry(&invalid)["current"], true);
    assert_eq!(entry(&invalid)["kind"], "file");
    assert_eq!(entry(&old)["failure"], "pre-check limit");
    assert_eq!(entry(&fifo)["kind"], "fifo");
    assert_eq!(entry(&fifo)["failure"], Value::Null);
    assert_eq!(entry(&stale)["current"], false);
    assert_eq!(entry(&stale)["state"], "failed (stale)");

    // A flipped bit: `cache list` says so; `cache verify` removes it and the FIFO.
    let world_path = fp_dir.join(format!("{world}.failed"));
    let mut bytes = std::fs::read(&world_path).unwrap();
    bytes[45] ^= 0x10;
    std::fs::write(&world_path, bytes).unwrap();
    assert_eq!(row_state(&store, &world), "failed (bad: checksum mismatch)");
    let (code, report, stderr) = run_json(pvf(&store).args(["cache", "verify"]));
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(report["checked"], 1, "{report}");
    assert_eq!(report["bad"], Value::from(Vec::<Value>::new()), "{report}");
    assert_eq!(report["failures_checked"], 4, "{report}");
    assert_eq!(report["consistent"], true, "{report}");
    let mut bad: Vec<(String, bool)> = report["bad_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["code_hash"].as_str().unwrap().to_string(),
                b["removed"].as_bool().unwrap(),
            )
        })
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [(world.to_string(), true), (fifo.to_string(), true)],
        "{report}"
    );
    assert!(!entry_exists(&world_path));
    assert!(!entry_exists(&fp_dir.join(format!("{fifo}.failed"))));
    let out = run(pvf(&store).args(["cache", "verify"]));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("checked 2 failure records, 0 bad"),
        "{human}"
    );

    // Prune: the old record goes, the fresh one and the fresh artifact stay; the other
    // environment's record goes with its directory.
    let (code, pruned, stderr) =
        run_json(pvf(&store).args(["cache", "prune", "--older-than", "1h"]));
    assert_eq!(code, 0, "{pruned} {stderr}");
    assert_eq!(
        pruned["removed_failures"],
        Value::from(vec![old.to_string()]),
        "{pruned}"
    );
    assert_eq!(
        pruned["removed_artifacts"],
        Value::from(Vec::<String>::new())
    );
    assert_eq!(
        pruned["removed_fingerprints"],
        Value::from(vec![other.to_hex()])
    );
    assert!(!fp_dir.join(format!("{old}.failed")).exists());
    let (_, rows) = table(&store);
    let mut hashes: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    hashes.sort();
    let mut expected = vec![adder.clone(), invalid.to_string()];
    expected.sort();
    assert_eq!(hashes, expected, "{rows:?}");
}

/// The STATE cell of `hash`'s row in `pvf cache list`.
fn row_state(store: &Path, hash: &pvf_host::CodeHash) -> String {
    let (_, rows) = table(store);
    rows.into_iter()
        .find(|r| r[0] == hash.to_string())
        .unwrap_or_else(|| panic!("{hash} listed"))
        .swap_remove(4)
}
