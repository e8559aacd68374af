//! Keeping the store tidy: listing, pruning (least recently used first, time-to-live), removing
//! the store's own entries from other environments' directories and dead writers' temporary
//! files, and last-use tracking.
//!
//! The store deletes only what it wrote: entries with its own names (`<code-hash>.artifact`,
//! `<code-hash>.failed`, `<code-hash>.lock`, `.in-use`, `.tmp-*`), whatever their type, and then
//! a directory that is left empty. Anything else in another environment's directory stays and is
//! reported ([`PruneReport::kept_foreign`], and one warning per directory). Symlinks are never
//! followed.

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use cap_std::fs::{Dir, File};
use rustix::fs::{
    AtFlags, Stat, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, fstat, futimens, statat,
};

use super::entry::{self, EntryKind, OpenError};
use super::locks::{self, Mode};
use super::{
    ARTIFACT_SUFFIX, ArtifactStore, CodeHash, FAILED_SUFFIX, IN_USE, LAST_USE_GRANULARITY,
    LOCK_SUFFIX, MAX_ARTIFACT_BYTES, MAX_FAILURE_RECORD_BYTES, TMP_PREFIX, parse_hex32,
};
use crate::error::StoreError;

/// One entry with an artifact's name (`<code-hash>.artifact`), as listed by
/// [`ArtifactStore::list`]: an artifact, or something else that has taken an artifact's name
/// (see [`ArtifactInfo::kind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The code hash the artifact was prepared from.
    pub code_hash: CodeHash,
    /// The fingerprint directory it lives in.
    pub fingerprint: String,
    /// Whether that is this process's fingerprint (others are never loaded).
    pub current: bool,
    /// Size of the file in bytes (0 when it is not a regular file).
    pub size: u64,
    /// When the artifact was last used (loaded or written), to within
    /// [`LAST_USE_GRANULARITY`](super::LAST_USE_GRANULARITY).
    pub last_used: Option<SystemTime>,
    /// What the entry is. Anything but a regular file can never be loaded: verification and
    /// pruning remove it.
    pub kind: EntryKind,
}

impl ArtifactInfo {
    /// Whether the entry may hold a loadable artifact: a regular file of at most
    /// [`MAX_ARTIFACT_BYTES`]. Its checksum is not checked here (`verify_store` does).
    pub fn plausible(&self) -> bool {
        self.kind == EntryKind::File && self.size <= MAX_ARTIFACT_BYTES
    }
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
    /// Entries with an artifact's name removed from this fingerprint's directory: artifacts
    /// the policy dropped, and entries that could never be loaded (not a regular file, or
    /// larger than [`MAX_ARTIFACT_BYTES`]), which are removed whatever the policy.
    pub removed_artifacts: Vec<CodeHash>,
    /// Directories of other fingerprints removed (they held only the store's own entries).
    pub removed_fingerprints: Vec<String>,
    /// Failure records (entries with a record's name, `<code-hash>.failed`) removed from this
    /// fingerprint's directory: those unused for longer than the policy's idle time, and
    /// entries that could never be read as one (not a regular file, or larger than
    /// [`MAX_FAILURE_RECORD_BYTES`]). Records do not count against the byte budget. (Other
    /// fingerprints' records go with their directory, in `removed_fingerprints`.)
    pub removed_failures: Vec<CodeHash>,
    /// Artifacts that qualified for removal but were in use (kept).
    pub skipped_in_use: Vec<CodeHash>,
    /// Bytes freed: the disk space of the regular files removed (a sparse file counts what it
    /// occupies, not its length).
    pub freed_bytes: u64,
    /// Entries the store did not write, found in other fingerprints' directories and kept
    /// (with their directory, which is kept too), as `<fingerprint>/<name>`.
    pub kept_foreign: Vec<String>,
}

/// What cleaning other fingerprints' directories did.
#[derive(Debug, Default)]
pub(super) struct OthersCleaned {
    pub(super) removed: Vec<String>,
    pub(super) freed: u64,
    pub(super) kept_foreign: Vec<String>,
}

/// An entry with an artifact's or a failure record's name, as `lstat` saw it.
pub(super) struct Listed {
    pub(super) hash: CodeHash,
    pub(super) kind: EntryKind,
    pub(super) size: u64,
    /// What removing it frees (see [`entry::freed_by_removal`]).
    pub(super) disk: u64,
    pub(super) last_used: Option<SystemTime>,
}

impl Listed {
    fn loadable(&self) -> bool {
        self.kind == EntryKind::File && self.size <= MAX_ARTIFACT_BYTES
    }
}

impl ArtifactStore {
    /// Lists every entry with an artifact's name below the root, whatever its type: this
    /// fingerprint's and other fingerprints'. A directory of another fingerprint that cannot be
    /// read is skipped (with a warning).
    pub fn list(&self) -> Result<Vec<ArtifactInfo>, StoreError> {
        let current = self.fingerprint.to_hex();
        let mut out = Vec::new();
        let mut add = |fp: &str, listed: Vec<Listed>| {
            out.extend(listed.into_iter().map(|a| ArtifactInfo {
                code_hash: a.hash,
                fingerprint: fp.to_string(),
                current: fp == current,
                size: a.size,
                last_used: a.last_used,
                kind: a.kind,
            }));
        };
        add(&current, artifacts_in(&self.dir, &current)?);
        for (fp, listed) in entries_of_others(&self.root, &current, ARTIFACT_SUFFIX)? {
            add(&fp, listed);
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

    /// The code hashes of every entry with an artifact's name in this fingerprint's directory,
    /// whatever its type (loading one that is not a regular file fails as corrupt).
    pub fn hashes(&self) -> Result<Vec<CodeHash>, StoreError> {
        Ok(artifacts_in(&self.dir, &self.fingerprint.to_hex())?
            .into_iter()
            .map(|a| a.hash)
            .collect())
    }

    /// Prunes the store:
    ///
    /// 1. removes the store's own entries from the directories of other fingerprints that no
    ///    live process uses (their artifacts can never be used here), and each directory left
    ///    empty; anything else stays, reported in [`PruneReport::kept_foreign`];
    /// 2. removes entries with an artifact's name that can never be loaded (not a regular file,
    ///    or larger than [`MAX_ARTIFACT_BYTES`]);
    /// 3. removes this fingerprint's artifacts unused for longer than the policy's idle time;
    /// 4. removes the least recently used of the rest until they fit in the byte budget;
    /// 5. removes this fingerprint's failure records unused for longer than the idle time, and
    ///    entries with a record's name that can never be read as one (records do not count
    ///    against the byte budget; other fingerprints' records went in step 1).
    ///
    /// Never removes an artifact that another process is preparing or loading (it is reported
    /// in `skipped_in_use`); removal is atomic per file.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport, StoreError> {
        let others = self.remove_other_fingerprints()?;
        let mut report = PruneReport {
            removed_fingerprints: others.removed,
            freed_bytes: others.freed,
            kept_foreign: others.kept_foreign,
            ..PruneReport::default()
        };

        let (mut mine, unloadable): (Vec<Listed>, Vec<Listed>) =
            artifacts_in(&self.dir, &self.fingerprint.to_hex())?
                .into_iter()
                .partition(Listed::loadable);
        for junk in unloadable {
            tracing::info!(code_hash = %junk.hash, kind = %junk.kind, size = junk.size, "removing an entry with an artifact's name that cannot be loaded");
            self.remove_unused(&junk, &mut report)?;
        }
        // Least recently used first.
        mine.sort_by_key(|a| a.last_used);
        let mut total: u64 = mine.iter().map(|a| a.size).sum();
        let now = SystemTime::now();
        for artifact in mine {
            let idle = artifact
                .last_used
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let too_old = policy.max_idle.is_some_and(|max| idle > max);
            let over_budget = policy.max_bytes.is_some_and(|max| total > max);
            if !too_old && !over_budget {
                continue;
            }
            if self.remove_unused(&artifact, &mut report)? {
                total -= artifact.size;
            }
        }
        self.prune_failures(policy, now, &mut report)?;
        Ok(report)
    }

    /// Removes this fingerprint's failure records unused for longer than the policy's idle time
    /// and entries with a record's name that could never be read as one. Records are a few KiB
    /// each and are not counted against the byte budget. No lock is needed: removing a record
    /// under a reader changes nothing it reads, and a record removed under a writer's rename is
    /// at worst written again by the next failed preparation. An entry that cannot be removed
    /// (a directory holding something) is kept with a warning.
    fn prune_failures(
        &self,
        policy: &PrunePolicy,
        now: SystemTime,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        for record in entries_in(&self.dir, &self.fingerprint.to_hex(), FAILED_SUFFIX)? {
            let readable =
                record.kind == EntryKind::File && record.size <= MAX_FAILURE_RECORD_BYTES;
            let idle = record
                .last_used
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default();
            let too_old = policy.max_idle.is_some_and(|max| idle > max);
            if readable && !too_old {
                continue;
            }
            let name = record.hash.failure_name();
            match entry::remove(&self.dir, &name) {
                Ok(removed) => {
                    if removed.is_some() {
                        report.freed_bytes += record.disk;
                        report.removed_failures.push(record.hash);
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "cannot remove a failure record")
                }
            }
        }
        Ok(())
    }

    /// Removes `artifact` unless another process holds its key's lock; records what happened.
    /// Whether it was removed.
    fn remove_unused(
        &self,
        artifact: &Listed,
        report: &mut PruneReport,
    ) -> Result<bool, StoreError> {
        let hash = artifact.hash;
        match locks::try_lock(&self.dir, &hash.lock_name(), Mode::Exclusive) {
            Ok(Some(_lock)) => {
                self.remove(&hash)?;
                let _ = self.dir.remove_file(hash.lock_name());
                report.freed_bytes += artifact.disk;
                report.removed_artifacts.push(hash);
                Ok(true)
            }
            Ok(None) => {
                report.skipped_in_use.push(hash);
                Ok(false)
            }
            Err(e) => Err(StoreError::io(format!("lock {}", hash.lock_name()), e)),
        }
    }

    /// Cleans the directories of other fingerprints whose `.in-use` no live process holds:
    /// removes the entries with the store's own names, then each directory left empty. Entries
    /// the store did not write are kept, with their directory, and named in one warning per
    /// directory. A directory that cannot be cleaned is skipped with a warning.
    pub(super) fn remove_other_fingerprints(&self) -> Result<OthersCleaned, StoreError> {
        let current = self.fingerprint.to_hex();
        let mut cleaned = OthersCleaned::default();
        for fp in fingerprint_dirs(&self.root)? {
            if fp == current {
                continue;
            }
            if let Err(e) = self.clean_other_fingerprint(&fp, &mut cleaned) {
                tracing::warn!(fingerprint = %fp, error = %e, "could not clean another environment's directory");
            }
        }
        Ok(cleaned)
    }

    fn clean_other_fingerprint(
        &self,
        fp: &str,
        cleaned: &mut OthersCleaned,
    ) -> Result<(), StoreError> {
        let dir = match entry::open_dir(&self.root, fp) {
            Ok(dir) => dir,
            // Gone, or replaced by something that is not a directory (not ours to touch).
            Err(OpenError::NotFound | OpenError::WrongKind(_)) => return Ok(()),
            Err(OpenError::Io(e)) => return Err(StoreError::io(format!("open directory {fp}"), e)),
        };
        let Some(unused) = locks::try_lock(&dir, IN_USE, Mode::Exclusive)
            .map_err(|e| StoreError::io(format!("lock {fp}/{IN_USE}"), e))?
        else {
            tracing::debug!(fingerprint = %fp, "another live process uses this environment; kept");
            return Ok(());
        };
        let mut kept = Vec::new();
        let mut freed = 0;
        for name in names_in(&dir, fp)? {
            // A name that is not UTF-8 is never one of the store's.
            let Some(name) = name.to_str().filter(|name| is_store_name(name)) else {
                kept.push(format!("{fp}/{}", name.to_string_lossy()));
                continue;
            };
            if name == IN_USE {
                continue;
            }
            // No live process uses this directory (we hold `.in-use`): even temporaries are
            // left-overs.
            let size = entry::lstat(&dir, name)
                .map_err(|e| StoreError::io(format!("stat {fp}/{name}"), e))?
                .map_or(0, |stat| entry::freed_by_removal(&stat));
            entry::remove(&dir, name)
                .map_err(|e| StoreError::io(format!("remove {fp}/{name}"), e))?;
            freed += size;
        }
        // Our marker goes last, while we still hold it; then the directory, if nothing is left.
        entry::remove(&dir, IN_USE)
            .map_err(|e| StoreError::io(format!("remove {fp}/{IN_USE}"), e))?;
        drop(unused);
        cleaned.freed += freed;
        if kept.is_empty() {
            match self.root.remove_dir(fp) {
                Ok(()) => {
                    tracing::info!(fingerprint = %fp, bytes = freed, "removed another environment's artifacts");
                    cleaned.removed.push(fp.to_string());
                }
                // Someone started using it meanwhile (or it is already gone): leave it.
                Err(e) => {
                    tracing::debug!(fingerprint = %fp, error = %e, "kept another environment's directory")
                }
            }
        } else {
            kept.sort();
            tracing::warn!(
                fingerprint = %fp,
                freed_bytes = freed,
                kept = ?kept,
                "kept another environment's directory: it holds entries the store did not write"
            );
            cleaned.kept_foreign.extend(kept);
        }
        Ok(())
    }

    /// Removes `.tmp-*` entries whose writing process is gone, whatever their type. One that
    /// cannot be removed is left with a warning: it costs disk space, not correctness.
    pub(super) fn remove_stale_temporaries(&self) -> Result<(), StoreError> {
        for name in names_in(&self.dir, &self.fingerprint.to_hex())? {
            let Some(name) = name.to_str() else { continue };
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
                if let Err(e) = entry::remove(&self.dir, name) {
                    tracing::warn!(file = %name, error = %e, "cannot remove a dead writer's temporary file");
                }
            }
        }
        Ok(())
    }
}

/// Whether `name` is one the store gives its entries in a fingerprint directory.
fn is_store_name(name: &str) -> bool {
    name == IN_USE
        || name.starts_with(TMP_PREFIX)
        || [ARTIFACT_SUFFIX, FAILED_SUFFIX, LOCK_SUFFIX]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|hash| parse_hex32(hash).is_some())
            })
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
pub(super) fn note_use(file: &File, stat: &Stat) {
    let modified = mtime(stat);
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

/// The modification time of `stat`, since the Unix epoch (0 for times before it).
fn mtime(stat: &Stat) -> Duration {
    Duration::new(
        stat.st_mtime.max(0) as u64,
        stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Names of `root`'s subdirectories that look like fingerprints (symlinks are not followed).
pub(super) fn fingerprint_dirs(root: &Dir) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let entries = root
        .entries()
        .map_err(|e| StoreError::io("list the store root", e))?;
    for item in entries {
        let item = item.map_err(|e| StoreError::io("list the store root", e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if parse_hex32(&name).is_some() && item.file_type().is_ok_and(|t| t.is_dir()) {
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

/// Every entry of `dir` with an artifact's name, whatever its type, as `lstat` sees it.
fn artifacts_in(dir: &Dir, what: &str) -> Result<Vec<Listed>, StoreError> {
    entries_in(dir, what, ARTIFACT_SUFFIX)
}

/// The entries named `<code-hash><suffix>` in every fingerprint directory below `root` but
/// `current`'s, by fingerprint. A directory that vanished is skipped; one that cannot be read
/// is skipped with a warning.
pub(super) fn entries_of_others(
    root: &Dir,
    current: &str,
    suffix: &str,
) -> Result<Vec<(String, Vec<Listed>)>, StoreError> {
    let mut out = Vec::new();
    for fp in fingerprint_dirs(root)? {
        if fp == current {
            continue;
        }
        let listed = entry::open_dir(root, &fp)
            .map_err(OpenError::into_io)
            .and_then(|dir| entries_in(&dir, &fp, suffix).map_err(std::io::Error::other));
        match listed {
            Ok(listed) => out.push((fp, listed)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(fingerprint = %fp, error = %e, "cannot list another environment's directory")
            }
        }
    }
    Ok(out)
}

/// Every entry of `dir` named `<code-hash><suffix>`, whatever its type, as `lstat` sees it
/// (`what` names the directory in errors).
pub(super) fn entries_in(dir: &Dir, what: &str, suffix: &str) -> Result<Vec<Listed>, StoreError> {
    let mut out = Vec::new();
    for name in names_in(dir, what)? {
        let Some(name) = name.to_str() else { continue };
        let Some(hash) = name
            .strip_suffix(suffix)
            .and_then(|h| h.parse::<CodeHash>().ok())
        else {
            continue;
        };
        match entry::lstat(dir, name) {
            Ok(Some(stat)) => out.push(Listed {
                hash,
                kind: EntryKind::of(&stat),
                size: entry::file_size(&stat),
                disk: entry::freed_by_removal(&stat),
                last_used: SystemTime::UNIX_EPOCH.checked_add(mtime(&stat)),
            }),
            Ok(None) => {}
            Err(e) => return Err(StoreError::io(format!("stat {what}/{name}"), e)),
        }
    }
    Ok(out)
}

/// The names of `dir`'s entries (`what` names the directory in errors).
fn names_in(dir: &Dir, what: &str) -> Result<Vec<OsString>, StoreError> {
    let list = |e| StoreError::io(format!("list directory {what}"), e);
    dir.entries()
        .map_err(list)?
        .map(|item| item.map(|item| item.file_name()).map_err(list))
        .collect()
}
