//! A store that cannot be written, a full disk, unreadable files: never a wrong verdict.
//!
//! The unprivileged cases run `pvf` as user `nobody` with `setpriv` (tests run as root here, and
//! root ignores permissions); they say so and skip when that is not possible.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const ADDER_PARAMS: &str = r#"{"parent_head": "0x0100000000000000", "block_data": "0x0200000000000000", "relay_parent_number": 7}"#;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod_tree(path: &Path, dir_mode: u32, file_mode: u32) {
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            chmod_tree(&p, dir_mode, file_mode);
        } else {
            chmod(&p, file_mode);
        }
    }
    chmod(path, dir_mode);
}

/// `pvf` as user `nobody`, if this process may switch users.
fn pvf_as_nobody(store: &Path) -> Option<Command> {
    let root = rustix::process::geteuid().is_root();
    let setpriv = Path::new("/usr/bin/setpriv").exists();
    if !root || !setpriv {
        eprintln!("skipped: needs root and /usr/bin/setpriv to run pvf as nobody");
        return None;
    }
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_pvf"),
        "--cache-dir",
    ])
    .arg(store)
    .stdin(std::process::Stdio::null());
    Some(cmd)
}

/// A world-readable temporary directory with the params file and a prepared store.
fn prepared_store(guests: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = store_dir();
    chmod(dir.path(), 0o755);
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    chmod(&params, 0o644);
    let store = dir.path().join("store");
    for guest in guests {
        let out = run(pvf(&store).arg("prepare").arg(pvf_test_guests::path(guest)));
        assert_eq!(out.status.code(), Some(0));
    }
    (dir, store, params)
}

/// Runs `pvf --json validate GUEST` as `nobody` and checks exit code, verdict and cache path;
/// returns stderr. `None` when the test cannot switch users (it says so).
fn validate_as_nobody(
    store: &Path,
    guest: &str,
    params: &Path,
    expected: (i32, &str, &str),
) -> Option<String> {
    let mut cmd = pvf_as_nobody(store)?;
    let (code, v, stderr) = run_json(
        cmd.arg("validate")
            .arg(pvf_test_guests::path(guest))
            .arg("--params")
            .arg(params),
    );
    let got = (
        code,
        v["verdict"].as_str().unwrap_or(""),
        v["cache"].as_str().unwrap_or(""),
    );
    assert_eq!(got, expected, "{guest}: {v} {stderr}");
    Some(stderr)
}

#[test]
fn read_only_store_still_gives_right_verdicts() {
    let (_dir, store, params) = prepared_store(&["adder"]);
    chmod_tree(&store, 0o555, 0o444);
    // Stored: used as is.
    if validate_as_nobody(&store, "adder", &params, (0, "valid", "hit")).is_some() {
        // Not stored: prepared in memory, cannot be stored, still right.
        let stderr = validate_as_nobody(&store, "reject", &params, (1, "invalid", "miss")).unwrap();
        assert!(stderr.contains("could not store the artifact"), "{stderr}");
    }
    chmod_tree(&store, 0o755, 0o644);
}

#[test]
fn unreadable_artifact_is_repaired_not_judged() {
    let (_dir, store, params) = prepared_store(&["adder"]);
    let fp = std::fs::read_dir(&store)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    chmod_tree(&store, 0o777, 0o666);
    for f in std::fs::read_dir(&fp).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "artifact") {
            chmod(&p, 0o000);
        }
    }
    if let Some(stderr) = validate_as_nobody(&store, "adder", &params, (0, "valid", "repaired")) {
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }
}

#[test]
fn full_disk_costs_speed_not_correctness() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    // A file-size limit of 192 KiB makes every artifact write fail (EFBIG), as a full disk would
    // (adder's artifact is about 220 KiB); SIGXFSZ is ignored so the write returns an error
    // instead of killing the process. The limit leaves room for the files that are not on a
    // disk: the execution worker's shared-memory channel (a 132 KiB memfd) and wasmtime's memory
    // images (memfds of a few KiB).
    let script = format!(
        "trap '' XFSZ; ulimit -f 192; exec '{}' --json --cache-dir '{}' validate '{}' --params '{}'",
        env!("CARGO_BIN_EXE_pvf"),
        store.display(),
        pvf_test_guests::path("adder").display(),
        params.display()
    );
    for expected_cache in ["miss", "miss"] {
        let out = run(Command::new("bash")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let v: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
        assert_eq!(out.status.code(), Some(0), "{v} {stderr}");
        assert_eq!(v["verdict"], "valid");
        assert_eq!(v["cache"], expected_cache);
        assert!(stderr.contains("could not store the artifact"), "{stderr}");
    }
    // No partial file was left behind.
    let fp = std::fs::read_dir(&store)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in std::fs::read_dir(&fp).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-") && !name.ends_with(".artifact"),
            "left {name}"
        );
    }
}

#[test]
fn missing_store_directory_is_created() {
    let dir = store_dir();
    let store = dir.path().join("a/b/c");
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let (code, v, _) = run_json(
        pvf(&store)
            .arg("validate")
            .arg(pvf_test_guests::path("adder"))
            .arg("--params")
            .arg(&params),
    );
    assert_eq!((code, v["cache"].as_str()), (0, Some("miss")), "{v}");
    assert!(store.is_dir());
}
