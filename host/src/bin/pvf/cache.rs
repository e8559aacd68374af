//! `pvf cache list | verify | prune`: inspect and maintain the artifact store.
//!
//! `list` prints a table in the manner of `docker image ls`:
//!
//! ```text
//! CODE HASH                                                          ENVIRONMENT              SIZE      LAST USED       STATE
//! 0013e8ff65bd95c9b7aa4d42db21dbb6e714a261583e72dc4f0252232adcc27c   e3df1e4b48ed (current)   225 kB    3 minutes ago   ready
//! 667cabdc04c9a19363e0a5b4c3968f90ab363f4203818e5815e4b3f878679f03   e3df1e4b48ed (current)   43.4 MB   2 days ago      ready
//! aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa   e3df1e4b48ed (current)   0 B       1 hour ago      bad: fifo
//! 7c1e0d3f5a9b2c4e6f8a0b1c3d5e7f9a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e   9a0b5c2d7e11             230 kB    4 weeks ago     stale
//! ```
//!
//! The code hash is printed whole (it names the file `<code-hash>.artifact`), the environment
//! (fingerprint) by its first 12 hex digits; sizes are decimal (kB, MB, GB), last use relative
//! (to within an hour: the store refreshes it at most hourly).
//!
//! STATE is `ready` (this environment's, a regular file of plausible size; `cache verify`
//! checks its checksum), `stale` (another environment's: never loaded here, pruned once
//! unused), `bad: <kind>` (something that is not a regular file has an artifact's name) or
//! `bad: too large` (above the store's maximum). `--json` prints `{"fingerprint", "artifacts":
//! [{"code_hash", "fingerprint", "current", "size", "last_used_unix", "kind", "state"}]}`.
//!
//! Failure records (`<code-hash>.failed`: code that failed preparation deterministically) are
//! rows of the same table after the artifacts, their STATE starting with `failed`:
//! `failed (invalid code)`, `failed (wrong world)`, `failed (pre-check limit)` (this
//! environment's, checksum verified), `failed (stale)` (another environment's, never read) or
//! `failed (bad: <why>)` (damaged or not a regular file: `cache verify` and `cache prune` remove
//! it). In `--json` they are a separate list, so that `artifacts` keeps meaning artifacts:
//! `"failures": [{"code_hash", "fingerprint", "current", "size", "last_used_unix", "kind",
//! "failure": "invalid code"|"wrong world"|"pre-check limit"|null, "reason": string|null,
//! "state"}]`. `cache verify` adds `"failures_checked"` and `"bad_failures": [{"code_hash",
//! "reason", "removed"}]`; `cache prune` adds `"removed_failures"`.

use std::time::{SystemTime, UNIX_EPOCH};

use pvf_host::{
    ArtifactInfo, EntryKind, FailureInfo, FailureState, PrunePolicy, StoreError, ValidationService,
};
use serde_json::{Value, json};

use crate::CacheCommand;
use crate::output::{EXIT_INDETERMINATE, EXIT_OK, Output};

/// Runs one `pvf cache` subcommand; returns the exit code.
pub async fn cache_command(out: &Output, service: &ValidationService, cmd: CacheCommand) -> u8 {
    let host = service.host();
    let fingerprint = host.fingerprint().to_hex();
    match cmd {
        CacheCommand::List => match host
            .store()
            .list()
            .and_then(|list| Ok((list, host.store().list_failures()?)))
        {
            Ok((list, failures)) => {
                let artifacts: Vec<Value> = list
                    .iter()
                    .map(|a| {
                        json!({
                            "code_hash": a.code_hash.to_string(),
                            "fingerprint": a.fingerprint,
                            "current": a.current,
                            "size": a.size,
                            "last_used_unix": unix_secs(a.last_used),
                            "kind": a.kind.as_str(),
                            "state": state(a),
                        })
                    })
                    .collect();
                let failures_json: Vec<Value> = failures.iter().map(failure_json).collect();
                out.emit(
                    json!({"fingerprint": fingerprint, "artifacts": artifacts, "failures": failures_json}),
                    &list_table(&list, &failures, SystemTime::now()),
                    None,
                );
                EXIT_OK
            }
            Err(e) => store_failure(out, &e),
        },
        CacheCommand::Verify => match service
            .verify_store()
            .await
            .and_then(|report| Ok((report, host.store().verify_failures()?)))
        {
            Ok((report, failures)) => {
                let consistent = report
                    .bad
                    .iter()
                    .chain(&failures.bad)
                    .all(|(_, _, removed)| *removed);
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
                human.push_str(&format!(
                    "\nchecked {} failure records, {} bad",
                    failures.checked,
                    failures.bad.len()
                ));
                for (h, why, removed) in &failures.bad {
                    human.push_str(&format!(
                        "\n{h}: failure record {} ({why})",
                        if *removed { "removed" } else { "NOT removed" }
                    ));
                }
                let bad_failures: Vec<Value> = failures
                    .bad
                    .iter()
                    .map(|(h, why, removed)| json!({"code_hash": h.to_string(), "reason": why, "removed": removed}))
                    .collect();
                out.emit(
                    json!({
                        "fingerprint": fingerprint,
                        "checked": report.checked,
                        "bad": bad,
                        "failures_checked": failures.checked,
                        "bad_failures": bad_failures,
                        "consistent": consistent,
                    }),
                    &human,
                    (!consistent).then_some("some bad entries could not be removed"),
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
                "removed {} artifacts, {} failure records and {} stale environment directories, freed {} bytes",
                r.removed_artifacts.len(),
                r.removed_failures.len(),
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
                    "removed_failures": r.removed_failures.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
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

fn store_failure(out: &Output, err: &StoreError) -> u8 {
    let reason = err.to_string();
    out.emit(json!({"error": reason}), "", Some(&reason));
    EXIT_INDETERMINATE
}

/// The STATE column (and `state` field) of an entry.
fn state(a: &ArtifactInfo) -> String {
    if a.kind != EntryKind::File {
        format!("bad: {}", a.kind)
    } else if !a.plausible() {
        "bad: too large".to_string()
    } else if a.current {
        "ready".to_string()
    } else {
        "stale".to_string()
    }
}

/// The STATE column (and `state` field) of a failure record.
fn failure_state(f: &FailureInfo) -> String {
    match &f.state {
        FailureState::Recorded(record) => format!("failed ({})", record.kind),
        FailureState::Stale => "failed (stale)".to_string(),
        FailureState::Bad(why) => format!("failed (bad: {why})"),
    }
}

/// The JSON object of a failure record in `cache list --json`.
fn failure_json(f: &FailureInfo) -> Value {
    let record = match &f.state {
        FailureState::Recorded(record) => Some(record),
        _ => None,
    };
    json!({
        "code_hash": f.code_hash.to_string(),
        "fingerprint": f.fingerprint,
        "current": f.current,
        "size": f.size,
        "last_used_unix": unix_secs(f.last_used),
        "kind": f.kind.as_str(),
        "failure": record.map(|r| r.kind.as_str()),
        "reason": record.map(|r| r.reason.as_str()),
        "state": failure_state(f),
    })
}

fn unix_secs(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// The human table of `cache list`: a header, then one row per entry (artifacts, then failure
/// records), columns aligned.
fn list_table(list: &[ArtifactInfo], failures: &[FailureInfo], now: SystemTime) -> String {
    let mut rows = vec![[
        "CODE HASH".to_string(),
        "ENVIRONMENT".to_string(),
        "SIZE".to_string(),
        "LAST USED".to_string(),
        "STATE".to_string(),
    ]];
    let mut row = |code_hash: String,
                   fingerprint: &str,
                   current: bool,
                   size: u64,
                   last_used: Option<SystemTime>,
                   state: String| {
        let environment = fingerprint.get(..12).unwrap_or(fingerprint);
        rows.push([
            code_hash,
            if current {
                format!("{environment} (current)")
            } else {
                environment.to_string()
            },
            human_size(size),
            last_used.map_or_else(|| "never".to_string(), |t| ago(t, now)),
            state,
        ]);
    };
    for a in list {
        row(
            a.code_hash.to_string(),
            &a.fingerprint,
            a.current,
            a.size,
            a.last_used,
            state(a),
        );
    }
    for f in failures {
        row(
            f.code_hash.to_string(),
            &f.fingerprint,
            f.current,
            f.size,
            f.last_used,
            failure_state(f),
        );
    }
    let mut widths = [0; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `bytes` in decimal units, as `docker` prints sizes: `512 B`, `1.2 kB`, `12.3 MB`, `123 GB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 99.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// How long before `now` `then` was, in words: `3 minutes ago`, `about an hour ago`.
fn ago(then: SystemTime, now: SystemTime) -> String {
    let Ok(elapsed) = now.duration_since(then) else {
        return "in the future".to_string();
    };
    let secs = elapsed.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match secs {
        0 => "less than a second ago".to_string(),
        s if s < MINUTE => plural(s, "second"),
        s if s < 2 * MINUTE => "about a minute ago".to_string(),
        s if s < HOUR => plural(s / MINUTE, "minute"),
        s if s < 2 * HOUR => "about an hour ago".to_string(),
        s if s < 2 * DAY => plural(s / HOUR, "hour"),
        s if s < 14 * DAY => plural(s / DAY, "day"),
        s if s < 60 * DAY => plural(s / (7 * DAY), "week"),
        s if s < 730 * DAY => plural(s / (30 * DAY), "month"),
        s => plural(s / (365 * DAY), "year"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_000), "1.0 kB");
        assert_eq!(human_size(1_234_567), "1.2 MB");
        assert_eq!(human_size(12_345_678), "12.3 MB");
        assert_eq!(human_size(123_456_789), "123 MB");
        assert_eq!(human_size(53_687_091_200), "53.7 GB");
        assert_eq!(human_size(u64::MAX), "18447 PB");
    }

    #[test]
    fn times_read_like_docker() {
        let now = SystemTime::now();
        let before = |secs| ago(now - Duration::from_secs(secs), now);
        assert_eq!(before(0), "less than a second ago");
        assert_eq!(before(1), "1 second ago");
        assert_eq!(before(59), "59 seconds ago");
        assert_eq!(before(90), "about a minute ago");
        assert_eq!(before(180), "3 minutes ago");
        assert_eq!(before(3600), "about an hour ago");
        assert_eq!(before(5 * 3600), "5 hours ago");
        assert_eq!(before(3 * 86400), "3 days ago");
        assert_eq!(before(21 * 86400), "3 weeks ago");
        assert_eq!(before(90 * 86400), "3 months ago");
        assert_eq!(before(3 * 365 * 86400), "3 years ago");
        assert_eq!(ago(now + Duration::from_secs(60), now), "in the future");
    }
}
