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
//!
//! A request line holds at most [`MAX_REQUEST_LINE_BYTES`]: the largest params file plus room
//! for the other fields. A longer line is answered with an error as soon as the limit is passed;
//! the rest of it is read and dropped without being kept, and the next line is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvf_host::{CodeHash, CodeRef, Config, ExecutionPriority, ValidationService};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinSet;

use crate::output::{EXIT_INDETERMINATE, EXIT_OK, Output, one_line};
use crate::params::MAX_PARAMS_BYTES;

/// Room in a request line beyond its params: the id, the code path or hash, the priority, the
/// keys and whitespace.
pub const REQUEST_SLACK_BYTES: usize = 64 * 1024;

/// The longest request line, in bytes (without its `\n`; a `\r` before it counts): the largest
/// params file ([`MAX_PARAMS_BYTES`]) plus [`REQUEST_SLACK_BYTES`], 23,199,744 bytes.
pub const MAX_REQUEST_LINE_BYTES: usize = MAX_PARAMS_BYTES + REQUEST_SLACK_BYTES;

/// Code files read so far, by path: each file is read once per `serve` session.
type CodeFiles = Arc<Mutex<HashMap<PathBuf, Arc<[u8]>>>>;

/// A worker's confinement report in one phrase: the active layers, then the unavailable ones.
fn describe_layers(report: &str) -> String {
    let (mut active, mut missing) = (Vec::new(), Vec::new());
    for line in report.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, '\t');
        let name = fields.next().unwrap_or_default();
        match fields.next() {
            Some("active") => active.push(name.to_owned()),
            _ => missing.push(name.to_owned()),
        }
    }
    let mut text = format!("sandbox layers active: {}", active.join(", "));
    if !missing.is_empty() {
        text.push_str(&format!("; UNAVAILABLE: {}", missing.join(", ")));
    }
    text
}

pub(crate) async fn run(
    out: &Output,
    service: ValidationService,
    metrics: Option<SocketAddr>,
    grace: Duration,
) -> u8 {
    let host = service.host();
    // The execution workers' sandbox, as the first one reports it (started now, not at the
    // first request).
    let sandbox = {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.host().start_execution_worker())
            .await
            .ok()
            .flatten()
    };
    let sandbox = match sandbox {
        None => "no sandbox: guests run in this process".to_string(),
        Some(Ok(report)) => describe_layers(&report),
        Some(Err(e)) => format!("no execution worker could start: {e}"),
    };
    eprintln!(
        "serving: environment {} (extensions: {}), isolation {} ({} execution slots; {sandbox})",
        host.environment().id(),
        match host.config().get_extensions().ids() {
            ids if ids.is_empty() => "none".to_string(),
            ids => ids.join(", "),
        },
        host.config().get_isolation().as_str(),
        host.config().get_execution_workers(),
    );
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
    let mut lines = BoundedLines::new(tokio::io::stdin(), MAX_REQUEST_LINE_BYTES);
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
            Ok(Line::Text(line)) => line,
            Ok(Line::Refused(reason)) => {
                requests += 1;
                print_line(&json!({"id": Value::Null, "error": reason}));
                continue;
            }
            Ok(Line::End) => break,
            Err(e) => {
                eprintln!("cannot read stdin: {}", one_line(&e.to_string()));
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
            print_answer(&answer);
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
async fn answer(service: &ValidationService, files: &CodeFiles, line: &str) -> Answer {
    let request: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Answer::Json(
                json!({"id": Value::Null, "error": "a request must be a JSON object"}),
            );
        }
        Err(e) => {
            return Answer::Json(
                json!({"id": Value::Null, "error": format!("malformed request: {e}")}),
            );
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    Answer::Json(match handle(service, files, &request).await {
        Ok(Handled::Outcome(outcome)) => return Answer::Outcome(id, outcome),
        Ok(Handled::Json(Value::Object(mut fields))) => {
            fields.insert("id".into(), id);
            Value::Object(fields)
        }
        Ok(Handled::Json(other)) => json!({"id": id, "result": other}),
        Err(e) => json!({"id": id, "error": format!("{e:#}")}),
    })
}

/// What a request is answered with.
enum Answer {
    /// A JSON object, `id` included.
    Json(Value),
    /// A validation's outcome and the request's `id`: serialized as it is written, so that a
    /// large result is never held as hex strings (see `ResultJson`).
    Outcome(Value, pvf_host::Outcome),
}

/// What [`handle`] produced.
enum Handled {
    Json(Value),
    Outcome(pvf_host::Outcome),
}

async fn handle(
    service: &ValidationService,
    files: &CodeFiles,
    request: &Value,
) -> anyhow::Result<Handled> {
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
        return Ok(Handled::Json(json!({"heads_up": hashes})));
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
    let params = crate::params::parse_value(params)?;
    let priority = match request.get("priority") {
        None => ExecutionPriority::Backing,
        Some(Value::String(p)) => p.parse().map_err(anyhow::Error::msg)?,
        Some(_) => anyhow::bail!("priority must be backing, approval or dispute"),
    };
    let outcome = service.validate(code, params, priority).await;
    Ok(Handled::Outcome(outcome))
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

/// What [`BoundedLines::next_line`] read.
#[derive(Debug, PartialEq)]
enum Line {
    /// A line, without its line break (`\n` or `\r\n`); at most the limit with the `\r`.
    Text(String),
    /// A line that cannot be served (too long, not UTF-8, no memory), and why. The rest of a
    /// line too long is skipped.
    Refused(String),
    /// The end of input.
    End,
}

/// Lines of a reader, each at most `limit` bytes, read without ever holding more than `limit`
/// bytes of one line. Cancel-safe (the state lives here, between reads), so it can be raced in
/// `select!`.
struct BoundedLines<R> {
    reader: BufReader<R>,
    limit: usize,
    /// The line read so far.
    line: Vec<u8>,
    /// Dropping the rest of a line that was too long.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    fn new(reader: R, limit: usize) -> Self {
        Self::with_buffer(reader, limit, 64 * 1024)
    }

    /// [`BoundedLines::new`] reading `buffer` bytes at a time.
    fn with_buffer(reader: R, limit: usize, buffer: usize) -> Self {
        Self {
            reader: BufReader::with_capacity(buffer, reader),
            limit,
            line: Vec::new(),
            skipping: false,
        }
    }

    /// The next line; a line over the limit is refused as soon as the limit is passed.
    async fn next_line(&mut self) -> std::io::Result<Line> {
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                self.skipping = false;
                if self.line.is_empty() {
                    return Ok(Line::End);
                }
                return Ok(self.finish());
            }
            let (part, used, ends) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if self.skipping {
                self.reader.consume(used);
                self.skipping = !ends;
                continue;
            }
            let refused = if self.line.len() + part.len() > self.limit {
                Some(format!(
                    "request line longer than the limit of {} bytes",
                    self.limit
                ))
            } else if self.line.try_reserve(part.len()).is_err() {
                Some("cannot allocate memory for the request line".to_string())
            } else {
                self.line.extend_from_slice(part);
                None
            };
            self.reader.consume(used);
            if let Some(reason) = refused {
                self.line = Vec::new();
                self.skipping = !ends;
                return Ok(Line::Refused(reason));
            }
            if ends {
                return Ok(self.finish());
            }
        }
    }

    /// The line read so far, as text.
    fn finish(&mut self) -> Line {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        match String::from_utf8(line) {
            Ok(text) => Line::Text(text),
            Err(_) => Line::Refused("a request line must be UTF-8".to_string()),
        }
    }
}

fn print_line(value: &Value) {
    if let Err(e) = crate::output::print_json_line(value) {
        eprintln!("cannot write an answer: {}", one_line(&e.to_string()));
    }
}

/// Prints one answer line (a validation's result serialized straight into stdout).
fn print_answer(answer: &Answer) {
    match answer {
        Answer::Json(value) => print_line(value),
        Answer::Outcome(id, outcome) => {
            let json = crate::outcome_json(outcome).0.with_id(id);
            if let Err(e) = crate::output::print_json_line(&json) {
                eprintln!("cannot write an answer: {}", one_line(&e.to_string()));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::{BoundedLines, Line};

    /// Every line of `input` read with `limit`, `buffer` bytes at a time.
    fn lines(input: &[u8], limit: usize, buffer: usize) -> Vec<Line> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = BoundedLines::with_buffer(input, limit, buffer);
            let mut out = Vec::new();
            loop {
                match reader.next_line().await.unwrap() {
                    Line::End => return out,
                    line => out.push(line),
                }
            }
        })
    }

    #[test]
    fn lines_are_bounded_whatever_the_chunks() {
        let text = |s: &str| Line::Text(s.to_string());
        let long = || Line::Refused("request line longer than the limit of 8 bytes".to_string());
        let utf8 = || Line::Refused("a request line must be UTF-8".to_string());
        let cases: Vec<(&[u8], Vec<Line>)> = vec![
            (b"", vec![]),
            (
                b"a\nbb\r\n\nccc",
                vec![text("a"), text("bb"), text(""), text("ccc")],
            ),
            (b"12345678\n", vec![text("12345678")]),
            (b"1234567\r\n", vec![text("1234567")]),
            (b"12345678\r\nnext\n", vec![long(), text("next")]),
            (b"123456789\nnext\n", vec![long(), text("next")]),
            (b"123456789", vec![long()]),
            (
                b"12345678901234567890123\n\nnext",
                vec![long(), text(""), text("next")],
            ),
            (b"\xff\xfe\nnext\n", vec![utf8(), text("next")]),
        ];
        for (input, expected) in cases {
            for buffer in [1, 2, 3, 7, 64] {
                assert_eq!(
                    lines(input, 8, buffer),
                    expected,
                    "{:?} read {buffer} bytes at a time",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
}
