//! `pvf serve`: JSON lines in and out, the metrics endpoint, graceful shutdown at end of input.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{pvf, run_json, store_dir, write_file};
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
    let url = loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(60))
            .expect("pvf serve prints the metrics URL");
        if let Some(url) = line.strip_prefix("metrics: ") {
            break url.to_string();
        }
    };
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
