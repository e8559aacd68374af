//! `pvf serve`: the validation service over JSON lines, with an optional metrics endpoint.
//!
//! Each stdin line is one request:
//!
//! * `{"id": 1, "code": "adder.wasm", "params": {...}, "priority": "approval"}` — validate
//!   (`code_hash` instead of `code` uses code prepared earlier; `priority` defaults to backing;
//!   `id` is any JSON value, echoed back);
//! * `{"id": 2, "heads_up": ["a.wasm", "b.wasm"]}` — prepare ahead of need, in the background.
//!
//! Each answer is one stdout line: the `validate --json` object plus `id`, or
//! `{"id": .., "heads_up": [code hashes]}`, or `{"id": .., "error": reason}` for a request that
//! could not be read (the service keeps going). Requests run concurrently; answers come in
//! completion order. At the end of input (or on SIGINT/SIGTERM) the service shuts down
//! gracefully and a summary goes to stderr.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvf_host::{CodeHash, CodeRef, Config, ExecutionPriority, ValidationService};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

use crate::output::{EXIT_INDETERMINATE, EXIT_OK, Output};

/// Code files read so far, by path: each file is read once per `serve` session.
type CodeFiles = Arc<Mutex<HashMap<PathBuf, Arc<[u8]>>>>;

pub(crate) async fn run(
    out: &Output,
    service: ValidationService,
    metrics: Option<SocketAddr>,
    grace: Duration,
) -> u8 {
    let server = match metrics {
        None => None,
        Some(addr) => match service.serve_metrics(addr).await {
            Ok(server) => {
                eprintln!("metrics: {}", server.url());
                Some(server)
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return out.usage_error(&e.to_string());
            }
            Err(e) => {
                let reason = format!("cannot serve metrics on {addr}: {e}");
                out.emit(json!({"error": reason}), "", Some(&reason));
                return EXIT_INDETERMINATE;
            }
        },
    };
    let files: CodeFiles = Arc::default();
    let mut tasks = JoinSet::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut requests = 0u64;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = &mut stop => {
                eprintln!("signal received: shutting down");
                break;
            }
            // Reap finished requests as we go, so the set does not grow with the input.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                eprintln!("cannot read stdin: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        requests += 1;
        let (service, files) = (service.clone(), files.clone());
        tasks.spawn(async move {
            let answer = answer(&service, &files, &line).await;
            print_line(&answer);
        });
    }
    // End of input: let the requests already taken finish (bounded by their own timeouts).
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    let report = service.shutdown(grace).await;
    tasks.shutdown().await;
    drop(server);
    eprintln!(
        "served {requests} requests; shut down {}",
        if drained && report.drained {
            "cleanly"
        } else {
            "with work still running after the grace period"
        }
    );
    EXIT_OK
}

/// Answers one request line.
async fn answer(service: &ValidationService, files: &CodeFiles, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return json!({"id": Value::Null, "error": "a request must be a JSON object"}),
        Err(e) => return json!({"id": Value::Null, "error": format!("malformed request: {e}")}),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    match handle(service, files, &request).await {
        Ok(Value::Object(mut fields)) => {
            fields.insert("id".into(), id);
            Value::Object(fields)
        }
        Ok(other) => json!({"id": id, "result": other}),
        Err(e) => json!({"id": id, "error": format!("{e:#}")}),
    }
}

async fn handle(
    service: &ValidationService,
    files: &CodeFiles,
    request: &Value,
) -> anyhow::Result<Value> {
    let config = service.host().config();
    if let Some(paths) = request.get("heads_up") {
        let paths = paths
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("heads_up must be a list of code file paths"))?;
        let mut codes = Vec::new();
        for path in paths {
            let path = path
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("heads_up must be a list of code file paths"))?;
            codes.push(code_file(files, config, path)?);
        }
        let hashes: Vec<Value> = service
            .heads_up(codes)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(hash) => json!(hash.to_string()),
                Err(e) => json!({"error": e.to_string()}),
            })
            .collect();
        return Ok(json!({"heads_up": hashes}));
    }
    let code: CodeRef = match (request.get("code"), request.get("code_hash")) {
        (Some(Value::String(path)), None) => code_file(files, config, path)?.into(),
        (None, Some(Value::String(hash))) => hash
            .parse::<CodeHash>()
            .map_err(|e| anyhow::anyhow!("malformed code_hash: {e}"))?
            .into(),
        _ => anyhow::bail!(
            "a request needs either \"code\" (a path) or \"code_hash\", or \"heads_up\""
        ),
    };
    let params = request
        .get("params")
        .ok_or_else(|| anyhow::anyhow!("a validation request needs \"params\""))?;
    let params = crate::params::parse(&params.to_string())?;
    let priority = match request.get("priority") {
        None => ExecutionPriority::Backing,
        Some(Value::String(p)) => p.parse().map_err(anyhow::Error::msg)?,
        Some(_) => anyhow::bail!("priority must be backing, approval or dispute"),
    };
    let outcome = service.validate(code, params, priority).await;
    Ok(crate::outcome_json(&outcome).0)
}

fn code_file(files: &CodeFiles, config: &Config, path: &str) -> anyhow::Result<Arc<[u8]>> {
    let path = PathBuf::from(path);
    if let Some(code) = files.lock().unwrap_or_else(|e| e.into_inner()).get(&path) {
        return Ok(code.clone());
    }
    let code: Arc<[u8]> = crate::read_code(&path, config)?.into();
    files
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path, code.clone());
    Ok(code)
}

fn print_line(value: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
