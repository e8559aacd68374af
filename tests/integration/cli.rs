//! The `pvf` command line, run as a real process (CONTRACT.md §2).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pvf_host::{MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES};
use serde_json::Value;

use crate::common::*;

const ADDER_PARAMS: &str = r#"{"parent_head": "0x0500000000000000", "block_data": "0700000000000000", "relay_parent_number": 7}"#;

#[test]
fn validate_valid_then_hit_then_repaired() {
    let dir = store_dir();
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let adder = pvf_test_guests::path("adder");
    let store = dir.path().join("store");
    let validate = || {
        let mut cmd = pvf(&store);
        cmd.arg("validate").arg(&adder).arg("--params").arg(&params);
        run_json(&mut cmd)
    };
    let (code, v, _) = validate();
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verdict"], "valid");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["result"]["head_data"], "0x0c00000000000000");
    assert_eq!(v["result"]["hrmp_watermark"], 7);
    assert_eq!(v["result"]["new_validation_code"], Value::Null);

    let (code, v, _) = validate();
    assert_eq!((code, v["cache"].as_str()), (0, Some("hit")));

    // Flip a bit in the middle of the stored artifact.
    let hash = v["code_hash"].as_str().unwrap().to_string();
    let fp_dir = std::fs::read_dir(&store)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let path = fp_dir.join(format!("{hash}.artifact"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (code, v, stderr) = validate();
    assert_eq!(
        (code, v["cache"].as_str(), v["verdict"].as_str()),
        (0, Some("repaired"), Some("valid"))
    );
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    // A warning through a pipe is plain text: no colour escape sequences.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn prepare_reports_hash_and_cache() {
    let dir = store_dir();
    let mut cmd = pvf(dir.path());
    cmd.arg("prepare").arg(pvf_test_guests::path("undying"));
    let (code, v, _) = run_json(&mut cmd);
    assert_eq!(code, 0);
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["code_hash"].as_str().unwrap().len(), 64);
    let mut cmd = pvf(dir.path());
    cmd.arg("prepare").arg(pvf_test_guests::path("undying"));
    assert_eq!(run_json(&mut cmd).1["cache"], "hit");
}

#[test]
fn compressed_code_file_is_accepted() {
    let dir = store_dir();
    let code = zstd::encode_all(&guest("adder")[..], 3).unwrap();
    let path = write_file(dir.path(), "adder.wasm.zst", code);
    let params = write_file(dir.path(), "p.json", ADDER_PARAMS);
    let mut cmd = pvf(&dir.path().join("store"));
    cmd.arg("validate").arg(path).arg("--params").arg(params);
    let (code, v, _) = run_json(&mut cmd);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("valid")));
}

#[test]
fn verdict_exit_codes() {
    let dir = store_dir();
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let store = dir.path().join("store");
    for (guest, exit, verdict, needle) in [
        ("reject", 1, "invalid", "rejected: block of 8 bytes"),
        ("trap", 1, "invalid", "guest trapped"),
        ("halt", 2, "indeterminate", "timed out"),
    ] {
        let mut cmd = pvf(&store);
        // Fuel large enough that `halt` meets the wall-clock deadline first.
        cmd.args(["--timeout-ms", "300", "--fuel", "1000000000000", "validate"])
            .arg(pvf_test_guests::path(guest))
            .arg("--params")
            .arg(&params);
        let (code, v, stderr) = run_json(&mut cmd);
        assert_eq!(code, exit, "{guest}: {v}");
        assert_eq!(v["verdict"], verdict, "{guest}");
        assert!(
            v["reason"].as_str().unwrap().contains(needle),
            "{guest}: {v}"
        );
        assert_eq!(v["result"], Value::Null);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(needle),
            "{guest}: one-line reason on stderr, got {stderr:?}"
        );
    }
}

#[test]
fn params_from_stdin_without_storage_root() {
    let dir = store_dir();
    let mut child = pvf(dir.path())
        .args(["--json", "validate"])
        .arg(pvf_test_guests::path("adder"))
        .args(["--params", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ADDER_PARAMS.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["result"]["head_data"], "0x0c00000000000000");
}

#[test]
fn input_errors_exit_64_with_one_line() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let adder = pvf_test_guests::path("adder");
    let bad_params = write_file(
        dir.path(),
        "bad.json",
        r#"{"parent_head": "0xzz", "block_data": "", "relay_parent_number": 1}"#,
    );
    let not_json = write_file(dir.path(), "notjson.json", "parent_head=1");
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (
            vec![
                "validate".into(),
                adder.clone().into(),
                "--params".into(),
                bad_params.into(),
            ],
            "parent_head is not hex",
        ),
        (
            vec![
                "validate".into(),
                adder.clone().into(),
                "--params".into(),
                not_json.into(),
            ],
            "malformed params",
        ),
        (
            vec![
                "validate".into(),
                adder.clone().into(),
                "--params".into(),
                dir.path().join("missing.json").into(),
            ],
            "cannot read params file",
        ),
        (
            vec![
                "validate".into(),
                dir.path().join("missing.wasm").into(),
                "--params".into(),
                "-".into(),
            ],
            "cannot read code file",
        ),
        (
            vec!["prepare".into(), dir.path().join("missing.wasm").into()],
            "cannot read code file",
        ),
    ];
    let mut cases = cases;
    // Params that parse as JSON but are not params: the message says what was expected.
    for (value, needle) in [
        (
            "1e23",
            "relay_parent_number must be an integer from 0 to 4294967295, got 1e23",
        ),
        (
            "-1",
            "relay_parent_number must be an integer from 0 to 4294967295, got -1",
        ),
        (
            "7.5",
            "relay_parent_number must be an integer from 0 to 4294967295, got 7.5",
        ),
        (
            "4294967296",
            "relay_parent_number must be an integer from 0 to 4294967295, got 4294967296",
        ),
        (
            "\"7\"",
            "relay_parent_number must be an integer from 0 to 4294967295, got a string",
        ),
    ] {
        let file = write_file(
            dir.path(),
            "number.json",
            format!(
                r#"{{"parent_head": "0x01", "block_data": "0x02", "relay_parent_number": {value}}}"#
            ),
        );
        let renamed = dir.path().join(format!("number{}.json", cases.len()));
        std::fs::rename(&file, &renamed).unwrap();
        cases.push((
            vec![
                "validate".into(),
                adder.clone().into(),
                "--params".into(),
                renamed.into(),
            ],
            needle,
        ));
    }
    for (args, needle) in cases {
        let mut cmd = pvf(&store);
        cmd.args(&args);
        let (code, v, stderr) = run_json(&mut cmd);
        assert_eq!(code, 64, "{args:?}: {v} {stderr}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{args:?}: {v}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_code_is_invalid_and_leaves_no_partial_file() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let files = [
        (
            "garbage.wasm",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            "core.wasm",
            wat::parse_str("(module)").unwrap(),
            "core WebAssembly module",
        ),
        (
            "other-world.wasm",
            wat::parse_str("(component)").unwrap(),
            "does not target pvf:validation/validation-function",
        ),
    ];
    let bad_codes = files.len();
    for (name, bytes, needle) in files {
        let path = write_file(dir.path(), name, bytes);
        for sub in ["prepare", "precheck", "validate"] {
            let mut cmd = pvf(&store);
            cmd.arg(sub).arg(&path);
            if sub == "validate" {
                cmd.arg("--params").arg(&params);
            }
            let (code, v, stderr) = run_json(&mut cmd);
            assert_eq!(code, 1, "{name} {sub}: {v}");
            assert_eq!(v["verdict"], "invalid", "{name} {sub}");
            assert!(
                v["reason"].as_str().unwrap().contains(needle),
                "{name} {sub}: {v}"
            );
            assert_eq!(stderr.lines().count(), 1, "{name} {sub}: {stderr:?}");
        }
    }
    // The store holds one fingerprint directory with only its in-use marker and a failure record
    // per bad code (no artifact, temporary file or lock): the second and third commands on
    // each were answered from the record.
    let dirs: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let left: Vec<String> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".in-use")
        .collect();
    assert_eq!(left.len(), bad_codes, "{left:?}");
    assert!(
        left.iter().all(|name| name.ends_with(".failed")),
        "only failure records left in the store: {left:?}"
    );
}

#[test]
fn unusable_store_is_indeterminate() {
    let dir = store_dir();
    let not_a_dir = write_file(dir.path(), "file", "x");
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let mut cmd = pvf(&not_a_dir);
    cmd.arg("validate")
        .arg(pvf_test_guests::path("adder"))
        .arg("--params")
        .arg(params);
    let (code, v, stderr) = run_json(&mut cmd);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["verdict"], "indeterminate");
    assert!(stderr.contains("artifact store"), "{stderr}");
}

#[test]
fn cache_list_verify_prune() {
    let dir = store_dir();
    for guest in ["adder", "undying"] {
        let mut cmd = pvf(dir.path());
        cmd.arg("prepare").arg(pvf_test_guests::path(guest));
        assert_eq!(run_json(&mut cmd).0, 0);
    }
    let (code, list, _) = run_json(pvf(dir.path()).args(["cache", "list"]));
    assert_eq!(code, 0);
    let artifacts = list["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2);
    assert!(
        artifacts
            .iter()
            .all(|a| a["current"] == true && a["size"].as_u64().unwrap() > 1000)
    );
    let fp = list["fingerprint"].as_str().unwrap().to_string();

    // Damage one artifact; verify removes it and reports it.
    let victim = artifacts[0]["code_hash"].as_str().unwrap();
    let path = dir.path().join(&fp).join(format!("{victim}.artifact"));
    std::fs::write(&path, b"short").unwrap();
    let (code, report, _) = run_json(pvf(dir.path()).args(["cache", "verify"]));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["checked"], 2);
    assert_eq!(report["bad"][0]["code_hash"], victim);
    assert_eq!(report["consistent"], true);
    assert!(!path.exists());

    // A directory of another fingerprint is pruned; with a zero budget so is everything of ours.
    std::fs::create_dir(dir.path().join("cd".repeat(32))).unwrap();
    let (code, pruned, _) = run_json(pvf(dir.path()).args(["cache", "prune", "--max-bytes", "0"]));
    assert_eq!(code, 0, "{pruned}");
    assert_eq!(pruned["removed_fingerprints"][0], "cd".repeat(32));
    assert_eq!(pruned["removed_artifacts"].as_array().unwrap().len(), 1);
    let (_, list, _) = run_json(pvf(dir.path()).args(["cache", "list"]));
    assert_eq!(list["artifacts"].as_array().unwrap().len(), 0);
}

#[test]
fn human_output_without_json() {
    let dir = store_dir();
    let params = write_file(dir.path(), "params.json", ADDER_PARAMS);
    let out = run(pvf(dir.path())
        .arg("validate")
        .arg(pvf_test_guests::path("adder"))
        .arg("--params")
        .arg(params));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("valid (cache: miss) head_data=0x0c00000000000000"),
        "{stdout}"
    );
}

/// The largest params file `pvf` reads (README: the hex of the largest parent head and block
/// data plus 64 KiB).
const MAX_PARAMS_BYTES: usize = 2 * (MAX_HEAD_DATA_BYTES + MAX_BLOCK_DATA_BYTES) + 64 * 1024;

/// Resident memory a refused params file may cost at most: the limit's buffer and the process
/// (a regression that reads everything is killed here).
const PARAMS_MEMORY_BOUND: u64 = 256 << 20;

#[test]
fn oversized_params_exit_64_with_bounded_memory() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let adder = pvf_test_guests::path("adder");
    // A sparse 2 GiB file: reading it all would cost gigabytes.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let params = |head: usize, block: usize| {
        format!(
            r#"{{"parent_head": "0x{}", "block_data": "0x{}", "relay_parent_number": 7}}"#,
            "00".repeat(head),
            "11".repeat(block)
        )
    };
    let big_head = write_file(dir.path(), "head.json", params(MAX_HEAD_DATA_BYTES + 1, 8));
    let big_block = write_file(
        dir.path(),
        "block.json",
        params(8, MAX_BLOCK_DATA_BYTES + 1),
    );
    let too_large = format!("larger than the limit of {MAX_PARAMS_BYTES} bytes");
    // (params argument, stdin, expected reason)
    let cases: Vec<(PathBuf, Option<&str>, String)> = vec![
        ("/dev/zero".into(), None, too_large.clone()),
        (huge, None, too_large.clone()),
        ("-".into(), Some("/dev/zero"), too_large.clone()),
        (
            big_head,
            None,
            format!(
                "parent_head is {} bytes, more than the limit of {MAX_HEAD_DATA_BYTES} bytes",
                MAX_HEAD_DATA_BYTES + 1
            ),
        ),
        (
            big_block,
            None,
            format!(
                "block_data is {} bytes, more than the limit of {MAX_BLOCK_DATA_BYTES} bytes",
                MAX_BLOCK_DATA_BYTES + 1
            ),
        ),
    ];
    for (params, stdin, needle) in cases {
        for json in [false, true] {
            let mut cmd = pvf(&store);
            cmd.arg("validate").arg(&adder).arg("--params").arg(&params);
            if json {
                cmd.arg("--json");
            }
            if let Some(stdin) = stdin {
                cmd.stdin(std::fs::File::open(stdin).unwrap());
            }
            let (out, peak) = run_bounded(&mut cmd, Duration::from_secs(60), PARAMS_MEMORY_BOUND);
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            eprintln!("{params:?} (json: {json}): peak resident memory seen {peak} bytes");
            assert_eq!(out.status.code(), Some(64), "{params:?}: {stdout} {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{params:?}: {stderr:?}");
            assert!(stderr.contains(&needle), "{params:?}: {stderr}");
            if json {
                let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
                assert!(v["error"].as_str().unwrap().contains(&needle), "{v}");
            } else {
                assert!(stdout.is_empty(), "{stdout}");
            }
        }
    }
}

#[test]
fn usage_errors_keep_clap_message_and_usage() {
    let dir = store_dir();
    let adder: OsString = pvf_test_guests::path("adder").into();
    let not_utf8: OsString = OsStr::from_bytes(b"\xffcode.wasm").into();
    let args = |list: &[&OsStr]| list.iter().map(|a| a.to_os_string()).collect::<Vec<_>>();
    let o = OsStr::new;
    let cases: Vec<(Vec<OsString>, &[&str])> = vec![
        (
            args(&[o("prepare")]),
            &[
                "the following required arguments were not provided",
                "<CODE>",
                "Usage: pvf prepare",
            ],
        ),
        (
            args(&[o("validate"), &adder]),
            &["--params <FILE>", "Usage: pvf validate"],
        ),
        (args(&[o("validate"), &not_utf8]), &["--params <FILE>"]),
        (
            args(&[o("frobnicate")]),
            &["unrecognized subcommand 'frobnicate'", "Usage: pvf"],
        ),
        // clap quotes what it got: escaped on stderr like every human line.
        (
            args(&[o("frob\x1b[2K\rnicate")]),
            &["unrecognized subcommand", "Usage: pvf"],
        ),
        (
            args(&[
                o("validate"),
                &adder,
                o("--params"),
                o("p.json"),
                o("--priority"),
                o("urgent"),
            ]),
            &["invalid value 'urgent' for '--priority <PRIORITY>'"],
        ),
    ];
    for (args, needles) in cases {
        for json in [false, true] {
            let mut cmd = pvf(dir.path());
            cmd.args(&args);
            if json {
                cmd.arg("--json");
            }
            let out = run(&mut cmd);
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert_eq!(out.status.code(), Some(64), "{args:?}: {stdout} {stderr}");
            assert!(
                stderr.starts_with("error: ") && !stderr.contains("error: error:"),
                "{args:?}: {stderr}"
            );
            assert!(
                !stderr.replace('\n', "").chars().any(is_dangerous),
                "{args:?}: no colour or control characters: {stderr:?}"
            );
            for needle in needles {
                assert!(stderr.contains(needle), "{args:?}: {needle:?} in {stderr}");
            }
            // The contract's one-line reason: the first line says what is wrong, whole (the
            // usage follows after a blank line).
            let first = stderr.lines().next().unwrap_or("");
            for needle in needles.iter().filter(|n| !n.starts_with("Usage:")) {
                assert!(
                    first.contains(needle),
                    "{args:?}: {needle:?} in the first line {first:?}"
                );
            }
            if json {
                assert_eq!(stdout.lines().count(), 1, "{args:?}: {stdout}");
                let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
                let error = v["error"].as_str().unwrap();
                for needle in needles {
                    assert!(error.contains(needle), "{args:?}: {needle:?} in {v}");
                }
            } else {
                assert!(stdout.is_empty(), "{args:?}: {stdout}");
            }
        }
    }
}

/// What must never reach a terminal raw (the CLI escapes it in human output).
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[test]
fn human_output_escapes_control_characters() {
    let dir = store_dir();
    let store = dir.path().join("store");
    let adder = pvf_test_guests::path("adder");
    for (i, dangerous) in [
        "\u{1b}[2K\u{1b}[1G",
        "\r",
        "\n",
        "\0",
        "\u{7}",
        "\u{9b}",
        "\u{202e}",
        "\u{2066}",
        "\u{2028}",
    ]
    .into_iter()
    .enumerate()
    {
        // An unknown field whose name the error message quotes; and a code file that is not
        // there, whose name the error message quotes.
        let fake = format!("{dangerous}valid (cache: hit)");
        let mut params: Value = serde_json::from_str(ADDER_PARAMS).unwrap();
        params[&fake] = Value::from(1);
        let params = write_file(dir.path(), &format!("params{i}.json"), params.to_string());
        let missing = dir.path().join(format!("missing{dangerous}.wasm"));
        let mut cases = vec![(&adder, fake.clone())];
        // (No NUL in a path: an argument cannot hold one.)
        if !dangerous.contains('\0') {
            cases.push((&missing, missing.display().to_string()));
        }
        for (code, needle) in cases {
            // Reasons are one line, in JSON too: a line break becomes a space.
            let needle = needle.replace('\n', " ");
            for json in [false, true] {
                let mut cmd = pvf(&store);
                cmd.arg("validate").arg(code).arg("--params").arg(&params);
                if json {
                    cmd.arg("--json");
                }
                let out = run(&mut cmd);
                let (stdout, stderr) = (
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                );
                assert_eq!(out.status.code(), Some(64), "{dangerous:?}: {stderr}");
                let line = stderr.strip_suffix('\n').unwrap_or(&stderr);
                assert!(
                    !line.chars().any(is_dangerous),
                    "{dangerous:?}: raw control characters on stderr: {stderr:?}"
                );
                assert!(line.contains("valid (cache: hit)") || line.contains("missing"));
                if json {
                    // JSON is unchanged: the encoder escapes, the reader gets the text back.
                    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
                    assert!(v["error"].as_str().unwrap().contains(&needle), "{v}");
                }
            }
        }
    }
}
