//! `pvf serve`: JSON lines in and out, the metrics endpoint, graceful shutdown at end of input.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use pvf_host::{MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES};

use crate::common::{peak_rss, pvf, run_json, store_dir, write_file};
use crate::service::{http_get, metric};

fn guest_path(name: &str) -> String {
    pvf_test_guests::path(name).display().to_string()
}

fn adder_params_json(a: u64, b: u64) -> Value {
    json!({
        "parent_head": format!("0x{}", hex::encode(a.to_le_bytes())),
        "block_data": format!("0x{}", hex::encode(b.to_le_bytes())),
        "relay_parent_number": 7,
    })
}

/// Reads lines from `reader` on a thread, so waits on them can be bounded.
fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn scrape(url: &str) -> String {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("a socket address in the URL");
    let response = http_get(addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[test]
fn serve_answers_json_lines_and_exposes_metrics() {
    let dir = store_dir();
    let mut child = pvf(dir.path())
        .args(["serve", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvf serve");
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut environment = None;
    let url = loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(60))
            .expect("pvf serve prints the metrics URL");
        if let Some(rest) = line.strip_prefix("serving: environment ") {
            environment = rest.split(' ').next().map(str::to_string);
        }
        if let Some(url) = line.strip_prefix("metrics: ") {
            break url.to_string();
        }
    };
    let environment = environment.expect("the startup line names the environment");
    assert_eq!(environment.len(), 64, "{environment}");
    let mut stdin = child.stdin.take().unwrap();
    let requests = [
        json!({"id": 1, "code": guest_path("adder"), "params": adder_params_json(40, 2)}),
        json!({"id": 2, "code": guest_path("reject"), "params": adder_params_json(1, 1), "priority": "dispute"}),
        json!({"id": 3, "code": guest_path("adder"), "params": adder_params_json(1, 1), "priority": "loudest"}),
        json!({"id": 4, "code": "/no/such/file.wasm", "params": adder_params_json(1, 1)}),
    ];
    for request in &requests {
        writeln!(stdin, "{request}").unwrap();
    }
    writeln!(stdin, "this is not json").unwrap();
    stdin.flush().unwrap();
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let line = stdout
            .recv_timeout(Duration::from_secs(60))
            .expect("an answer per request");
        let value: Value = serde_json::from_str(&line).expect("one JSON object per line");
        answers.insert(value["id"].to_string(), value);
    }
    assert_eq!(answers["1"]["verdict"], "valid");
    assert_eq!(answers["1"]["result"]["head_data"], "0x2a00000000000000");
    assert_eq!(answers["1"]["cache"], "miss");
    // Every answer names the environment and the fuel the guest consumed.
    for id in ["1", "2"] {
        assert_eq!(answers[id]["environment"], environment.as_str());
        assert!(answers[id]["fuel_consumed"].as_u64().unwrap() > 0);
    }
    assert_eq!(answers["2"]["verdict"], "invalid");
    assert!(
        answers["3"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown priority"),
        "{:?}",
        answers["3"]
    );
    assert!(
        answers["4"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read code file"),
        "{:?}",
        answers["4"]
    );
    assert!(
        answers["null"]["error"]
            .as_str()
            .unwrap()
            .contains("malformed request")
    );

    // The code hash of answer 1 validates without the code.
    let hash = answers["1"]["code_hash"].as_str().unwrap().to_string();
    writeln!(
        stdin,
        "{}",
        json!({"id": 5, "code_hash": hash, "params": adder_params_json(2, 2), "priority": "approval"})
    )
    .unwrap();
    stdin.flush().unwrap();
    let line = stdout.recv_timeout(Duration::from_secs(60)).unwrap();
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["verdict"], "valid", "{value}");
    assert_eq!(value["cache"], "hit");

    let metrics = scrape(&url);
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        metric(
            body,
            r#"pvf_verdicts_total{priority="backing",verdict="valid"}"#
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            body,
            r#"pvf_verdicts_total{priority="dispute",verdict="invalid"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            body,
            r#"pvf_verdicts_total{priority="approval",verdict="valid"}"#
        ),
        1.0
    );
    assert_eq!(metric(body, "pvf_store_artifacts"), 2.0);
    assert_eq!(
        metric(
            body,
            &format!(
                r#"pvf_environment_info{{environment="{environment}",isolation="{}"}}"#,
                crate::common::isolation().as_str()
            )
        ),
        1.0,
        "{body}"
    );
    assert!(metric(body, "pvf_fuel_consumed_total") > 0.0, "{body}");

    // End of input: a graceful shutdown and exit 0.
    drop(stdin);
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = match child.try_wait().unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("pvf serve did not exit within 60 s of the end of input");
        }
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = stderr.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("served 6 requests; shut down cleanly")),
        "{rest:?}"
    );
}

#[test]
fn serve_refuses_a_non_loopback_metrics_address() {
    let dir = store_dir();
    let (code, value, stderr) =
        run_json(pvf(dir.path()).args(["serve", "--metrics", "0.0.0.0:9615"]));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        value["error"].as_str().unwrap().contains("not a loopback"),
        "{value}"
    );
}

#[test]
fn validate_takes_a_priority() {
    let dir = store_dir();
    let params = write_file(
        dir.path(),
        "params.json",
        adder_params_json(1, 2).to_string(),
    );
    let (code, value, stderr) = run_json(pvf(dir.path()).args([
        "validate",
        &guest_path("adder"),
        "--params",
        params.to_str().unwrap(),
        "--priority",
        "dispute",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value["verdict"], "valid");
    let (code, _, stderr) = run_json(pvf(dir.path()).args([
        "validate",
        &guest_path("adder"),
        "--params",
        params.to_str().unwrap(),
        "--priority",
        "urgent",
    ]));
    assert_eq!(code, 64, "{stderr}");
}

/// The longest request line `pvf serve` reads (README: the largest params file, i.e. the hex of
/// the largest parent head and block data plus 64 KiB, plus 64 KiB for the other fields).
const MAX_REQUEST_LINE_BYTES: usize =
    2 * (MAX_HEAD_DATA_BYTES + MAX_BLOCK_DATA_BYTES) + 64 * 1024 + 64 * 1024;

/// A child process killed when the test ends, also by a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `bytes` to `stdin` on a thread (a server that stops reading must fail the test through
/// a bounded wait, not hang it); the thread gives `stdin` back.
fn write_on_thread(
    mut stdin: ChildStdin,
    bytes: Vec<u8>,
) -> std::thread::JoinHandle<std::io::Result<ChildStdin>> {
    std::thread::spawn(move || {
        stdin.write_all(&bytes)?;
        stdin.flush()?;
        Ok(stdin)
    })
}

/// `pvf serve` on `dir`, stdin and stdout piped, killed when dropped.
fn spawn_serve(dir: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        pvf(dir)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pvf serve"),
    )
}

#[test]
fn serve_refuses_bad_lines_and_keeps_serving() {
    let dir = store_dir();
    let mut child = spawn_serve(dir.path());
    let stdout = lines_of(child.0.stdout.take().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    // (what to write, the error it must be answered with at once, what ends the line)
    let cases: Vec<(Vec<u8>, &str, Vec<u8>)> = vec![
        // No line break in sight: refused as soon as the limit is passed, then the rest of the
        // line (more than the limit again) is dropped.
        (
            vec![b'x'; MAX_REQUEST_LINE_BYTES + 1],
            "request line longer than the limit",
            [vec![b'{'; MAX_REQUEST_LINE_BYTES + 10], b"\n".to_vec()].concat(),
        ),
        (
            b"{\"id\": \"\xff\xfe\"}\n".to_vec(),
            "a request line must be UTF-8",
            Vec::new(),
        ),
    ];
    for (i, (bytes, needle, rest)) in cases.into_iter().enumerate() {
        let writer = write_on_thread(stdin, bytes);
        let line = stdout
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("case {i}: no answer before the line ended"));
        let value: Value = serde_json::from_str(&line).expect("one JSON object per line");
        assert!(
            value["error"].as_str().unwrap_or_default().contains(needle),
            "case {i}: {value}"
        );
        stdin = writer.join().unwrap().expect("write the line");
        // The rest of the line, then a good request: it is served.
        let request =
            json!({"id": i, "code": guest_path("adder"), "params": adder_params_json(40, 2)});
        let writer = write_on_thread(stdin, [rest, format!("{request}\n").into_bytes()].concat());
        let line = stdout
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("case {i}: the next request was not served"));
        let value: Value = serde_json::from_str(&line).expect("one JSON object per line");
        assert_eq!(value["id"], i, "case {i}: {value}");
        assert_eq!(value["verdict"], "valid", "case {i}: {value}");
        stdin = writer.join().unwrap().expect("write the request");
    }
    // Two lines of more than 23 MB went through; the server never held one.
    let peak = peak_rss(child.0.id()).expect("the server's memory");
    eprintln!("pvf serve: peak resident memory {peak} bytes");
    assert!(peak < 256 << 20, "pvf serve held {peak} bytes");
    drop(stdin);
    for _ in 0..600 {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pvf serve did not exit within 60 s of the end of input");
}

/// One-shot commands allocate instances on demand, `serve` from the pooling allocator: the
/// artifacts they store are the same, filed under the same fingerprint.
#[test]
fn one_shot_commands_and_serve_share_the_store() {
    let dir = store_dir();
    let (code, prepared, stderr) =
        run_json(pvf(dir.path()).args(["prepare", &guest_path("adder")]));
    assert_eq!(
        (code, prepared["cache"].as_str()),
        (0, Some("miss")),
        "{stderr}"
    );
    let mut child = spawn_serve(dir.path());
    let stdout = lines_of(child.0.stdout.take().unwrap());
    let request = json!({"id": 1, "code": guest_path("adder"), "params": adder_params_json(1, 2)});
    let writer = write_on_thread(child.0.stdin.take().unwrap(), format!("{request}\n").into());
    let line = stdout
        .recv_timeout(Duration::from_secs(60))
        .expect("an answer");
    let value: Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(value["verdict"], "valid", "{value}");
    assert_eq!(value["cache"], "hit", "{value}");
    assert_eq!(value["code_hash"], prepared["code_hash"]);
    drop(writer.join().unwrap().expect("write the request"));
}

/// Requests whose guests sleep until the end of time (more of them than execution slots) are
/// answered at once, and the server shuts down at the end of input: a guest's sleep is
/// virtual, so it can neither hold a slot nor stall shutdown.
#[test]
fn sleeping_guests_neither_hold_slots_nor_stall_shutdown() {
    let dir = store_dir();
    let mut child = spawn_serve(dir.path());
    let answers = lines_of(child.0.stdout.take().expect("stdout"));
    let mut stdin = child.0.stdin.take().expect("stdin");
    // Mode 0 of `hostile`: subscribe-instant(u64::MAX), then block.
    let params = json!({"parent_head": "", "block_data": "0x00", "relay_parent_number": 1});
    let requests = 6;
    for id in 0..requests {
        let line = json!({"id": id, "code": guest_path("hostile"), "params": params});
        writeln!(stdin, "{line}").expect("write a request");
    }
    drop(stdin); // end of input: graceful shutdown after the answers
    for _ in 0..requests {
        let line = answers
            .recv_timeout(Duration::from_secs(120))
            .expect("every request answered: a sleeping guest held the server");
        let answer: Value = serde_json::from_str(&line).expect("a JSON answer");
        assert_eq!(answer["verdict"], "valid", "{answer}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pvf serve did not shut down within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
