//! `pvf doctor`: what isolation this machine gives a worker, checked by running one.
//!
//! It starts this executable as the confinement probe (`pvf __pvf-confine-probe report`, a cleared
//! environment, at most [`PROBE_TIMEOUT`]), which confines itself exactly as a worker does and
//! prints each layer's state; then prints the isolation mode, each layer (active, or unavailable
//! and why), the store directory, the environment fingerprint artifacts are filed under, and the
//! execution-environment id with the parts it is hashed from (the registered extensions, the
//! verdict-bearing limits: see `pvf_host::ExecutionEnvironment`).
//!
//! In the worker modes it also starts one execution worker (a per-job one with `--isolation
//! per-job`) and prints the layers it reports: its seccomp list differs from the preparation
//! worker's, and a per-job worker's children make namespaces of their own.
//!
//! Exit 0 when every layer is active, or when unavailable layers are not `required`; 2 when a
//! required layer is unavailable or the probe failed (then no layer is known to be active).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvf_host::worker::PROBE_ARG;
use serde_json::{Value, json};

use crate::output::{EXIT_INDETERMINATE, EXIT_OK, Output};

/// How long the probe may take (it confines itself and exits: milliseconds).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One layer as the probe reported it.
struct ReportedLayer {
    name: String,
    active: bool,
    /// The detail of an active layer, or why it is unavailable.
    text: String,
}

/// Runs `pvf doctor`. `isolation`: the mode preparation runs in (`workers`, `in-process`).
/// `required`: whether an unavailable layer fails the check (exit 2) or is only reported.
pub fn run(out: &Output, config: &pvf_host::Config, store: &Path, required: bool) -> u8 {
    let isolation = config.get_isolation().as_str();
    let probe = run_probe();
    let fingerprint = fingerprint();
    let environment = pvf_host::ExecutionEnvironment::for_config(config).map_err(|e| e.to_string());
    // The execution workers' own sandbox (their seccomp list differs; a per-job worker's children
    // make namespaces of their own), from a worker started for the purpose.
    let execution = config
        .get_isolation()
        .compiles_in_workers()
        .then(|| pvf_host::worker::exec::execution_worker_layers(config));
    let execution_layers: Vec<ReportedLayer> = match &execution {
        Some(Ok(report)) => parse_report(report).unwrap_or_default(),
        _ => Vec::new(),
    };
    let execution_error = match &execution {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    let (layers, probe_error) = match probe {
        Ok(layers) => (layers, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let all_active = probe_error.is_none()
        && layers.iter().all(|l| l.active)
        && execution_error.is_none()
        && execution_layers.iter().all(|l| l.active);
    let ok = all_active || (!required && probe_error.is_none());

    let json_layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            if l.active {
                json!({"name": l.name, "state": "active", "detail": l.text})
            } else {
                json!({"name": l.name, "state": "unavailable", "reason": l.text})
            }
        })
        .collect();
    let value = json!({
        "isolation": isolation,
        "store": store.display().to_string(),
        "fingerprint": fingerprint.as_ref().ok(),
        "fingerprint_error": fingerprint.as_ref().err(),
        "environment": environment.as_ref().ok().map(|e| e.id().to_hex()),
        "environment_parts": environment.as_ref().ok().map(|e| e
            .parts()
            .iter()
            .map(|p| json!({"name": p.name, "value": p.value}))
            .collect::<Vec<_>>()),
        "environment_error": environment.as_ref().err(),
        "extensions": config.get_extensions().ids(),
        "layers": json_layers,
        "execution_layers": execution_layers.iter().map(|l| if l.active {
            json!({"name": l.name, "state": "active", "detail": l.text})
        } else {
            json!({"name": l.name, "state": "unavailable", "reason": l.text})
        }).collect::<Vec<_>>(),
        "execution_error": execution_error,
        "probe_error": probe_error,
        "all_active": all_active,
        "required": required,
    });

    let width = layers.iter().map(|l| l.name.len()).max().unwrap_or(0);
    let mut human = vec![
        format!("isolation    {isolation}"),
        format!("store        {}", store.display()),
        match &fingerprint {
            Ok(hex) => format!("fingerprint  {hex}"),
            Err(e) => format!("fingerprint  unknown: {e}"),
        },
    ];
    let extensions = config.get_extensions().ids();
    human.push(format!(
        "extensions   {}",
        if extensions.is_empty() {
            "none (WASI only)".to_string()
        } else {
            extensions.join(", ")
        }
    ));
    match &environment {
        Ok(env) => {
            human.push(format!("environment  {}", env.id()));
            let width = env.parts().iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in env.parts() {
                human.push(format!("  {:width$}  {}", p.name, p.value));
            }
        }
        Err(e) => human.push(format!("environment  unknown: {e}")),
    }
    human.push("layers".to_owned());
    for l in &layers {
        human.push(match (l.active, l.text.is_empty()) {
            (true, true) => format!("  {:width$}  active", l.name),
            (true, false) => format!("  {:width$}  active ({})", l.name, l.text),
            (false, _) => format!("  {:width$}  UNAVAILABLE: {}", l.name, l.text),
        });
    }
    if execution.is_some() {
        human.push("execution worker layers".to_owned());
        let width = execution_layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(0);
        for l in &execution_layers {
            human.push(match (l.active, l.text.is_empty()) {
                (true, true) => format!("  {:width$}  active", l.name),
                (true, false) => format!("  {:width$}  active ({})", l.name, l.text),
                (false, _) => format!("  {:width$}  UNAVAILABLE: {}", l.name, l.text),
            });
        }
        if let Some(e) = &execution_error {
            human.push(format!("  no execution worker could start: {e}"));
        }
    }
    let unavailable = layers.iter().filter(|l| !l.active).count();
    let reason = match &probe_error {
        Some(e) => Some(format!("the confinement probe failed: {e}")),
        None if unavailable > 0 => Some(format!(
            "{unavailable} of {} isolation layers unavailable{}",
            layers.len(),
            if required { "" } else { " (not required)" }
        )),
        None => {
            human.push(format!("all {} layers active", layers.len()));
            None
        }
    };
    let code = if ok { EXIT_OK } else { EXIT_INDETERMINATE };
    // A failing check's reason goes to stderr (below); a passing one's is part of the text.
    if let (true, Some(reason)) = (ok, &reason) {
        human.push(reason.clone());
    }
    out.emit(value, &human.join("\n"), reason.as_deref().filter(|_| !ok));
    code
}

/// Runs the probe's `report` and parses its lines.
fn run_probe() -> Result<Vec<ReportedLayer>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut child = Command::new(exe)
        .args([PROBE_ARG, "report"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {PROBE_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("cannot wait for the probe: {e}")),
        }
    };
    // The report is a few hundred bytes: it fit in the pipe while the probe ran.
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.by_ref()
            .take(64 << 10)
            .read_to_string(&mut stdout)
            .map_err(|e| format!("cannot read the probe's report: {e}"))?;
    }
    if !status.success() {
        let mut stderr = String::new();
        if let Some(pipe) = child.stderr.take() {
            let _ = pipe.take(4 << 10).read_to_string(&mut stderr);
        }
        let last = stderr.lines().last().unwrap_or("").trim().to_owned();
        return Err(format!("the probe ended with {status}: {last}"));
    }
    parse_report(&stdout)
}

/// Parses `name<TAB>active[<TAB>detail]` / `name<TAB>unavailable<TAB>why` lines.
fn parse_report(text: &str) -> Result<Vec<ReportedLayer>, String> {
    let layers = text
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let name = fields.next().unwrap_or("").to_owned();
            let state = fields.next().unwrap_or("");
            let text = fields.next().unwrap_or("").to_owned();
            let active = match state {
                "active" => true,
                "unavailable" => false,
                _ => return Err(format!("unexpected report line {line:?}")),
            };
            Ok(ReportedLayer { name, active, text })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if layers.is_empty() {
        return Err("the probe reported no layer".to_owned());
    }
    Ok(layers)
}

/// The environment fingerprint this build files artifacts under, as hex (computed as the one-shot
/// commands' host does, without opening the store).
fn fingerprint() -> Result<String, String> {
    let config = pvf_host::Config::new().pooling(false);
    let engine = wasmtime::Engine::new(&pvf_host::wasmtime_config(&config))
        .map_err(|e| format!("cannot build the engine: {e:#}"))?;
    pvf_host::EnvFingerprint::current(&engine, &config)
        .map(|f| f.to_hex())
        .map_err(|e| format!("cannot read this executable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_parses_and_garbage_does_not() {
        let layers = parse_report("landlock\tactive\tABI 7\nseccomp\tunavailable\tnot x86_64\n")
            .expect("parses");
        assert_eq!(layers.len(), 2);
        assert!(layers[0].active && layers[0].text == "ABI 7");
        assert!(!layers[1].active && layers[1].text == "not x86_64");
        assert!(parse_report("").is_err());
        assert!(parse_report("landlock\tmaybe\n").is_err());
    }
}
