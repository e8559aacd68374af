//! `pvf cache list | verify | prune`: inspect and maintain the artifact store.

use std::time::UNIX_EPOCH;

use pvf_host::{PrunePolicy, ValidationService};
use serde_json::{Value, json};

use crate::CacheCommand;
use crate::output::{EXIT_INDETERMINATE, EXIT_OK, Output};

/// Runs one `pvf cache` subcommand; returns the exit code.
pub async fn cache_command(out: &Output, service: &ValidationService, cmd: CacheCommand) -> u8 {
    let host = service.host();
    let fingerprint = host.fingerprint().to_hex();
    match cmd {
        CacheCommand::List => match host.store().list() {
            Ok(list) => {
                let artifacts: Vec<Value> = list
                    .iter()
                    .map(|a| {
                        json!({
                            "code_hash": a.code_hash.to_string(),
                            "fingerprint": a.fingerprint,
                            "current": a.current,
                            "size": a.size,
                            "last_used_unix": a.last_used.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
                            "kind": a.kind.as_str(),
                        })
                    })
                    .collect();
                let human = list
                    .iter()
                    .map(|a| {
                        format!(
                            "{}  {:>10}  {}{}",
                            a.code_hash,
                            a.size,
                            &a.fingerprint[..16],
                            if a.current { " (current)" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                out.emit(
                    json!({"fingerprint": fingerprint, "artifacts": artifacts}),
                    &human,
                    None,
                );
                EXIT_OK
            }
            Err(e) => store_failure(out, &e),
        },
        CacheCommand::Verify => match service.verify_store().await {
            Ok(report) => {
                let consistent = report.bad.iter().all(|(_, _, removed)| *removed);
                let bad: Vec<Value> = report
                    .bad
                    .iter()
                    .map(|(h, why, removed)| json!({"code_hash": h.to_string(), "reason": why, "removed": removed}))
                    .collect();
                let mut human = format!(
                    "checked {} artifacts, {} bad",
                    report.checked,
                    report.bad.len()
                );
                for (h, why, removed) in &report.bad {
                    human.push_str(&format!(
                        "\n{h}: {} ({why})",
                        if *removed { "removed" } else { "NOT removed" }
                    ));
                }
                out.emit(
                    json!({"fingerprint": fingerprint, "checked": report.checked, "bad": bad, "consistent": consistent}),
                    &human,
                    (!consistent).then_some("some bad artifacts could not be removed"),
                );
                if consistent {
                    EXIT_OK
                } else {
                    EXIT_INDETERMINATE
                }
            }
            Err(e) => store_failure(out, &e),
        },
        CacheCommand::Prune {
            max_bytes,
            older_than,
        } => {
            let mut policy = PrunePolicy::new();
            if let Some(bytes) = max_bytes {
                policy = policy.max_bytes(Some(bytes));
            }
            if let Some(idle) = older_than {
                policy = policy.max_idle(Some(idle));
            }
            prune(out, service, policy).await
        }
    }
}

async fn prune(out: &Output, service: &ValidationService, policy: PrunePolicy) -> u8 {
    match service.prune(policy).await {
        Ok(r) => {
            let mut human = format!(
                "removed {} artifacts and {} stale environment directories, freed {} bytes",
                r.removed_artifacts.len(),
                r.removed_fingerprints.len(),
                r.freed_bytes
            );
            if !r.kept_foreign.is_empty() {
                human.push_str(&format!(
                    "\nkept what the store did not write: {}",
                    r.kept_foreign.join(", ")
                ));
            }
            out.emit(
                json!({
                    "removed_artifacts": r.removed_artifacts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                    "removed_fingerprints": r.removed_fingerprints,
                    "skipped_in_use": r.skipped_in_use.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                    "freed_bytes": r.freed_bytes,
                    "kept_foreign": r.kept_foreign,
                }),
                &human,
                None,
            );
            EXIT_OK
        }
        Err(e) => store_failure(out, &e),
    }
}

fn store_failure(out: &Output, err: &pvf_host::StoreError) -> u8 {
    let reason = err.to_string();
    out.emit(json!({"error": reason}), "", Some(&reason));
    EXIT_INDETERMINATE
}
