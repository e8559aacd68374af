//! Keeping the store tidy: listing, pruning (least recently used first, time-to-live), removing
//! other environments' directories and dead writers' temporary files, and last-use tracking.

use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, File, Metadata};
use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, fstat, futimens, statat};

use super::locks::{self, Mode};
use super::{
    ARTIFACT_SUFFIX, ArtifactStore, CodeHash, IN_USE, LAST_USE_GRANULARITY, TMP_PREFIX, parse_hex32,
};
use crate::error::StoreError;

/// One stored artifact, as listed by [`ArtifactStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The code hash the artifact was prepared from.
    pub code_hash: CodeHash,
    /// The fingerprint directory it lives in.
    pub fingerprint: String,
    /// Whether that is this process's fingerprint (others are never loaded).
    pub current: bool,
    /// Size of the file in bytes.
    pub size: u64,
    /// When the artifact was last used (loaded or written), to within
    /// [`LAST_USE_GRANULARITY`](super::LAST_USE_GRANULARITY).
    pub last_used: Option<SystemTime>,
}

/// What to prune: see [`ArtifactStore::prune`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePolicy {
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_idle: Option<Duration>,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl PrunePolicy {
    /// The reference system's policy: keep at most 10 GiB, drop artifacts unused for 24 h.
    pub fn new() -> Self {
        Self {
            max_bytes: Some(10 << 30),
            max_idle: Some(Duration::from_secs(24 * 3600)),
        }
    }

    /// Keep at most `bytes` of this environment's artifacts (`None`: no budget).
    pub fn max_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Remove artifacts not used for longer than `idle` (`None`: no time-to-live).
    pub fn max_idle(mut self, idle: Option<Duration>) -> Self {
        self.max_idle = idle;
        self
    }
}

/// What [`ArtifactStore::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Artifacts removed from this fingerprint's directory.
    pub removed_artifacts: Vec<CodeHash>,
    /// Directories of other fingerprints removed whole.
    pub removed_fingerprints: Vec<String>,
    /// Artifacts that qualified for removal but were in use (kept).
    pub skipped_in_use: Vec<CodeHash>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

impl ArtifactStore {
    /// Lists every artifact below the root: this fingerprint's and other fingerprints'.
    pub fn list(&self) -> Result<Vec<ArtifactInfo>, StoreError> {
        let current = self.fingerprint.to_hex();
        let mut out = Vec::new();
        for fp in fingerprint_dirs(&self.root)? {
            let dir = match self.root.open_dir(&fp) {
                Ok(dir) => dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("open directory {fp}"), e)),
            };
            for (code_hash, meta) in artifacts_in(&dir, &fp)? {
                out.push(ArtifactInfo {
                    code_hash,
                    fingerprint: fp.clone(),
                    current: fp == current,
                    size: meta.len(),
                    last_used: last_used(&meta),
                });
            }
        }
        out.sort_by(|a, b| {
            (!a.current, &a.fingerprint, a.code_hash).cmp(&(
                !b.current,
                &b.fingerprint,
                b.code_hash,
            ))
        });
        Ok(out)
    }

    /// The code hashes of this fingerprint's artifacts.
    pub fn hashes(&self) -> Result<Vec<CodeHash>, StoreError> {
        Ok(artifacts_in(&self.dir, &self.fingerprint.to_hex())?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }

    /// Prunes the store:
    ///
    /// 1. removes the directories of other fingerprints that no live process uses (their
    ///    artifacts can never be used here);
    /// 2. removes this fingerprint's artifacts unused for longer than the policy's idle time;
    /// 3. removes the least recently used of the rest until they fit in the byte budget.
    ///
    /// Never removes an artifact that another process is preparing or loading (it is reported
    /// in `skipped_in_use`); removal is atomic per file.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let (fps, freed) = self.remove_other_fingerprints()?;
        report.removed_fingerprints = fps;
        report.freed_bytes += freed;

        let mut mine = artifacts_in(&self.dir, &self.fingerprint.to_hex())?;
        // Least recently used first.
        mine.sort_by_key(|(_, m)| last_used(m));
        let mut total: u64 = mine.iter().map(|(_, m)| m.len()).sum();
        let now = SystemTime::now();
        for (hash, meta) in mine {
            let idle = last_used(&meta)
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let too_old = policy.max_idle.is_some_and(|max| idle > max);
            let over_budget = policy.max_bytes.is_some_and(|max| total > max);
            if !too_old && !over_budget {
                continue;
            }
            match locks::try_lock(&self.dir, &hash.lock_name(), Mode::Exclusive) {
                Ok(Some(_lock)) => {
                    self.remove(&hash)?;
                    let _ = self.dir.remove_file(hash.lock_name());
                    total -= meta.len();
                    report.freed_bytes += meta.len();
                    report.removed_artifacts.push(hash);
                }
                Ok(None) => report.skipped_in_use.push(hash),
                Err(e) => return Err(StoreError::io(format!("lock {}", hash.lock_name()), e)),
            }
        }
        Ok(report)
    }

    /// Removes the directories of other fingerprints whose `.in-use` no live process holds.
    /// Returns their names and the bytes their artifacts took.
    pub(super) fn remove_other_fingerprints(&self) -> Result<(Vec<String>, u64), StoreError> {
        let current = self.fingerprint.to_hex();
        let mut removed = Vec::new();
        let mut freed = 0;
        for fp in fingerprint_dirs(&self.root)? {
            if fp == current {
                continue;
            }
            let dir = match self.root.open_dir(&fp) {
                Ok(dir) => dir,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(format!("open directory {fp}"), e)),
            };
            let Some(_unused) = locks::try_lock(&dir, IN_USE, Mode::Exclusive)
                .map_err(|e| StoreError::io(format!("lock {fp}/{IN_USE}"), e))?
            else {
                tracing::debug!(fingerprint = %fp, "another live process uses this environment; kept");
                continue;
            };
            let bytes: u64 = artifacts_in(&dir, &fp)?.iter().map(|(_, m)| m.len()).sum();
            self.root
                .remove_dir_all(&fp)
                .map_err(|e| StoreError::io(format!("remove directory {fp}"), e))?;
            tracing::info!(fingerprint = %fp, bytes, "removed another environment's artifacts");
            freed += bytes;
            removed.push(fp);
        }
        Ok((removed, freed))
    }

    /// Removes `.tmp-*` files whose writing process is gone.
    pub(super) fn remove_stale_temporaries(&self) -> Result<(), StoreError> {
        let entries = self
            .dir
            .entries()
            .map_err(|e| StoreError::io("list the fingerprint directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list the fingerprint directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                continue;
            };
            let writer_alive = rest
                .split('-')
                .nth(1)
                .and_then(|pid| pid.parse::<i32>().ok())
                .is_some_and(process_alive);
            if !writer_alive {
                tracing::info!(file = %name, "removing a temporary file left by a dead writer");
                match self.dir.remove_file(&name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("remove {name}"), e)),
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` in `root` is still the directory `dir` is open on.
pub(super) fn still_there(root: &Dir, name: &str, dir: &Dir) -> bool {
    match (fstat(dir), statat(root, name, AtFlags::SYMLINK_NOFOLLOW)) {
        (Ok(held), Ok(now)) => held.st_ino == now.st_ino && held.st_dev == now.st_dev,
        _ => false,
    }
}

/// Records a use of the artifact open as `file`: refreshes its modification time when older
/// than [`LAST_USE_GRANULARITY`]. Best effort (a read-only store keeps the old time).
pub(super) fn note_use(file: &File, stat: &rustix::fs::Stat) {
    let modified = Duration::new(
        stat.st_mtime.max(0) as u64,
        stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    if now.saturating_sub(modified) < LAST_USE_GRANULARITY {
        return;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
    };
    if let Err(e) = futimens(file, &times) {
        tracing::debug!(error = %e, "cannot record the artifact's last use");
    }
}

fn last_used(meta: &Metadata) -> Option<SystemTime> {
    meta.modified().ok().map(|t| t.into_std())
}

/// Names of `root`'s subdirectories that look like fingerprints.
fn fingerprint_dirs(root: &Dir) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let entries = root
        .entries()
        .map_err(|e| StoreError::io("list the store root", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list the store root", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if parse_hex32(&name).is_some() && entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a process with `pid` exists (this one always does).
fn process_alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e != rustix::io::Errno::SRCH,
        },
        None => false,
    }
}

/// The artifacts (by name) in `dir`, with their metadata.
fn artifacts_in(dir: &Dir, what: &str) -> Result<Vec<(CodeHash, Metadata)>, StoreError> {
    let mut out = Vec::new();
    let entries = dir
        .entries()
        .map_err(|e| StoreError::io(format!("list directory {what}"), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("list directory {what}"), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hash) = name
            .strip_suffix(ARTIFACT_SUFFIX)
            .and_then(|h| h.parse::<CodeHash>().ok())
        else {
            continue;
        };
        match entry.metadata() {
            Ok(meta) if meta.is_file() => out.push((hash, meta)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("stat {name}"), e)),
        }
    }
    Ok(out)
}
