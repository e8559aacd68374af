//! The artifact store: one directory per environment fingerprint, one checksummed file per code
//! hash, atomic writes.
//!
//! Layout under the store's root directory:
//!
//! ```text
//! <fingerprint-hex>/                      one per environment (see EnvFingerprint)
//!     <code-hash-hex>.artifact            header + wasmtime artifact
//!     .tmp-<code-hash-hex>-<pid>-<n>      a write in progress (or left by a crash)
//! ```
//!
//! An artifact file is `MAGIC (8 bytes) | checksum (32 bytes) | wasmtime artifact`, where the
//! checksum is blake3 over the fingerprint, the code hash and the artifact bytes: a file copied
//! from another fingerprint directory or renamed to another code hash fails verification.
//!
//! Nothing here takes a path: the store is reached only through the [`Dir`] it was opened with.

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use cap_std::fs::Dir;

use crate::env::{EnvFingerprint, hex_string};
use crate::error::StoreError;

/// The first bytes of every artifact file (format version 1).
const MAGIC: &[u8; 8] = b"PVFART\x00\x01";
const HEADER_LEN: usize = MAGIC.len() + 32;
const ARTIFACT_SUFFIX: &str = ".artifact";
const TMP_PREFIX: &str = ".tmp-";

/// Distinguishes temporary files of concurrent writers in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The blake3 hash of (decompressed) code: the key of its artifact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeHash([u8; 32]);

impl CodeHash {
    /// The hash of `code` (already decompressed).
    pub fn of(code: &[u8]) -> Self {
        Self(*blake3::hash(code).as_bytes())
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn file_name(&self) -> String {
        format!("{self}{ARTIFACT_SUFFIX}")
    }
}

impl fmt::Display for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_string(&self.0))
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeHash({self})")
    }
}

impl FromStr for CodeHash {
    type Err = String;

    /// Parses 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s)
            .map(Self)
            .ok_or_else(|| format!("not a code hash (64 hex digits): {s:?}"))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// An artifact whose checksum was verified against this store's fingerprint and its code hash.
/// Only [`ArtifactStore::load`] makes one.
pub(crate) struct VerifiedArtifact {
    file: Vec<u8>,
}

impl VerifiedArtifact {
    /// The wasmtime artifact bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.file[HEADER_LEN..]
    }
}

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
    /// When the file was last modified (written).
    pub modified: Option<SystemTime>,
}

/// What [`ArtifactStore::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Artifacts removed from this fingerprint's directory.
    pub removed_artifacts: Vec<CodeHash>,
    /// Directories of other fingerprints removed whole.
    pub removed_fingerprints: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
}

/// The persistent store of prepared artifacts for one environment fingerprint.
pub struct ArtifactStore {
    root: Dir,
    dir: Dir,
    fingerprint: EnvFingerprint,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// Opens the store below `root` for `fingerprint`: creates the fingerprint's directory if
    /// needed and removes temporary files left there by writers that are no longer running.
    pub fn open(root: Dir, fingerprint: EnvFingerprint) -> Result<Self, StoreError> {
        let name = fingerprint.to_hex();
        match root.create_dir(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(format!("create directory {name}"), e)),
        }
        let dir = root
            .open_dir(&name)
            .map_err(|e| StoreError::io(format!("open directory {name}"), e))?;
        let store = Self {
            root,
            dir,
            fingerprint,
        };
        store.remove_stale_temporaries()?;
        Ok(store)
    }

    /// The fingerprint this store serves.
    pub fn fingerprint(&self) -> EnvFingerprint {
        self.fingerprint
    }

    /// Reads and verifies the artifact of `hash`.
    ///
    /// `Ok(None)` when there is none. `Err(StoreError::Corrupt)` when the file is there but is not
    /// what this store wrote for this code; `Err(StoreError::Io)` when it cannot be read. Either
    /// error means the artifact must not be used.
    pub(crate) fn load(&self, hash: &CodeHash) -> Result<Option<VerifiedArtifact>, StoreError> {
        let name = hash.file_name();
        let file = match self.dir.read(&name) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("read {name}"), e)),
        };
        let corrupt = |reason: &str| StoreError::Corrupt {
            file: name.clone(),
            reason: reason.to_string(),
        };
        if file.len() < HEADER_LEN {
            return Err(corrupt("shorter than the header"));
        }
        if &file[..MAGIC.len()] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let expected = &file[MAGIC.len()..HEADER_LEN];
        let actual = self.checksum(hash, &file[HEADER_LEN..]);
        if expected != actual.as_bytes() {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(Some(VerifiedArtifact { file }))
    }

    /// Whether an artifact file for `hash` exists (not verified).
    pub fn contains(&self, hash: &CodeHash) -> bool {
        self.dir.exists(hash.file_name())
    }

    /// Stores `artifact` (wasmtime's serialized component) for `hash`, atomically: written to a
    /// temporary file, fsynced, renamed into place, and the directory fsynced. Readers see the
    /// old file or the new one, never a partial one.
    pub(crate) fn store(&self, hash: &CodeHash, artifact: &[u8]) -> Result<(), StoreError> {
        let tmp = format!(
            "{TMP_PREFIX}{hash}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let result = self.write_then_rename(&tmp, &hash.file_name(), hash, artifact);
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result
    }

    fn write_then_rename(
        &self,
        tmp: &str,
        name: &str,
        hash: &CodeHash,
        artifact: &[u8],
    ) -> Result<(), StoreError> {
        let checksum = self.checksum(hash, artifact);
        let mut file = self
            .dir
            .create(tmp)
            .map_err(|e| StoreError::io(format!("create {tmp}"), e))?;
        let write = |file: &mut cap_std::fs::File| -> std::io::Result<()> {
            file.write_all(MAGIC)?;
            file.write_all(checksum.as_bytes())?;
            file.write_all(artifact)?;
            file.sync_all()
        };
        write(&mut file).map_err(|e| StoreError::io(format!("write {tmp}"), e))?;
        drop(file);
        self.dir
            .rename(tmp, &self.dir, name)
            .map_err(|e| StoreError::io(format!("rename {tmp} to {name}"), e))?;
        self.sync_dir()
    }

    /// Removes the artifact of `hash`, if any.
    pub fn remove(&self, hash: &CodeHash) -> Result<(), StoreError> {
        let name = hash.file_name();
        match self.dir.remove_file(&name) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove {name}"), e)),
        }
    }

    /// Lists every artifact below the root: this fingerprint's and other fingerprints'.
    pub fn list(&self) -> Result<Vec<ArtifactInfo>, StoreError> {
        let current = self.fingerprint.to_hex();
        let mut out = Vec::new();
        for fp in self.fingerprint_dirs()? {
            let dir = self
                .root
                .open_dir(&fp)
                .map_err(|e| StoreError::io(format!("open directory {fp}"), e))?;
            for (code_hash, meta) in artifacts_in(&dir, &fp)? {
                out.push(ArtifactInfo {
                    code_hash,
                    fingerprint: fp.clone(),
                    current: fp == current,
                    size: meta.len(),
                    modified: meta.modified().ok().map(|t| t.into_std()),
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

    /// Removes the directories of other fingerprints (their artifacts can never be used here)
    /// and, when `max_bytes` is given, this fingerprint's least recently written artifacts until
    /// the rest fit in `max_bytes`.
    pub fn prune(&self, max_bytes: Option<u64>) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let current = self.fingerprint.to_hex();
        for fp in self.fingerprint_dirs()? {
            if fp == current {
                continue;
            }
            let dir = self
                .root
                .open_dir(&fp)
                .map_err(|e| StoreError::io(format!("open directory {fp}"), e))?;
            let bytes: u64 = artifacts_in(&dir, &fp)?.iter().map(|(_, m)| m.len()).sum();
            self.root
                .remove_dir_all(&fp)
                .map_err(|e| StoreError::io(format!("remove directory {fp}"), e))?;
            report.freed_bytes += bytes;
            report.removed_fingerprints.push(fp);
        }
        if let Some(budget) = max_bytes {
            let mut mine = artifacts_in(&self.dir, &current)?;
            // Oldest first.
            mine.sort_by_key(|(_, m)| m.modified().ok().map(|t| t.into_std()));
            let mut total: u64 = mine.iter().map(|(_, m)| m.len()).sum();
            for (hash, meta) in mine {
                if total <= budget {
                    break;
                }
                self.remove(&hash)?;
                total -= meta.len();
                report.freed_bytes += meta.len();
                report.removed_artifacts.push(hash);
            }
        }
        Ok(report)
    }

    fn checksum(&self, hash: &CodeHash, artifact: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_derive_key("pvf-host artifact checksum v1");
        h.update(self.fingerprint.as_bytes());
        h.update(hash.as_bytes());
        h.update(artifact);
        h.finalize()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        // The directory handle itself may be an `O_PATH` descriptor, which cannot be fsynced;
        // open the directory for reading and fsync that.
        self.dir
            .open(".")
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("fsync directory", e))
    }

    /// Names of the root's subdirectories that look like fingerprints.
    fn fingerprint_dirs(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let entries = self
            .root
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

    /// Removes `.tmp-*` files whose writing process is gone.
    fn remove_stale_temporaries(&self) -> Result<(), StoreError> {
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
fn artifacts_in(
    dir: &Dir,
    what: &str,
) -> Result<Vec<(CodeHash, cap_std::fs::Metadata)>, StoreError> {
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
