//! The artifact store: one directory per environment fingerprint, one checksummed file per code
//! hash, atomic writes.
//!
//! Layout under the store's root directory:
//!
//! ```text
//! <fingerprint-hex>/                      one per environment (see EnvFingerprint)
//!     .in-use                             shared-locked by every process using this directory
//!     <code-hash-hex>.artifact            header + wasmtime artifact; mtime = last use
//!     <code-hash-hex>.failed              failure record: the code failed preparation
//!                                         deterministically (see [`failures`]); mtime = last use
//!     <code-hash-hex>.lock                per-key lock: prepare (exclusive), load (shared)
//!     .tmp-<code-hash-hex>-<pid>-<n>      a write in progress (or left by a crash)
//! ```
//!
//! Several processes may share a store; see [`locks`] for how they coordinate. Last use is the
//! artifact's modification time, refreshed on load when older than [`LAST_USE_GRANULARITY`]:
//! at most one metadata write per artifact per hour, none on most hits.
//!
//! An artifact file is `MAGIC (8 bytes) | checksum (32 bytes) | wasmtime artifact`, where the
//! checksum is blake3 over the fingerprint, the code hash and the artifact bytes: a file copied
//! from another fingerprint directory or renamed to another code hash fails verification.
//!
//! Every entry is hostile: it is opened without blocking or following symlinks, must be a
//! regular file of at most [`MAX_ARTIFACT_BYTES`] (see [`entry`]), and is read into a buffer
//! allocated fallibly. Anything else at an artifact's name is [`StoreError::Corrupt`]: discarded
//! and re-prepared, never a verdict.
//!
//! A failure record (`FAILURE_MAGIC | checksum | kind byte | reason`, at most
//! [`MAX_FAILURE_RECORD_BYTES`]) remembers code that failed preparation deterministically, with
//! the same salted checksum, atomic write and hostile-entry rules; a bad one is no record (the
//! code is compiled again). Records and artifacts of one code hash are independent.
//!
//! Nothing here takes a path: the store is reached only through the [`Dir`] it was opened with.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cap_std::fs::Dir;

use crate::env::{EnvFingerprint, hex_string, parse_hex32};
use crate::error::StoreError;

mod entry;
mod failures;
mod locks;
mod maintenance;

pub use entry::EntryKind;
use entry::OpenError;
pub use failures::{
    FailureInfo, FailureKind, FailureRecord, FailureState, FailureVerifyReport,
    MAX_FAILURE_REASON_BYTES, MAX_FAILURE_RECORD_BYTES,
};
pub(crate) use locks::FileLock;
use locks::Mode;
pub use maintenance::{ArtifactInfo, PrunePolicy, PruneReport};

/// The first bytes of every artifact file (format version 1).
const MAGIC: &[u8; 8] = b"PVFART\x00\x01";
const HEADER_LEN: usize = MAGIC.len() + 32;
const ARTIFACT_SUFFIX: &str = ".artifact";
const LOCK_SUFFIX: &str = ".lock";
const FAILED_SUFFIX: &str = ".failed";
const TMP_PREFIX: &str = ".tmp-";
const IN_USE: &str = ".in-use";
/// The largest artifact file the store writes or reads, header included: 512 MiB.
///
/// A file above it is [`StoreError::Corrupt`] (discarded, the code re-prepared) and is never
/// read, so a huge (e.g. sparse) file at an artifact's name costs neither memory nor time; an
/// artifact above it is not stored (the prepared component is still used, from memory).
///
/// Why this value: wasmtime's artifacts of the bundled guests measured 3.6 to 5.3 times the
/// size of their component (the 12.0 MB JavaScript guest: 43.4 MB; `bulky`, many small
/// functions: 0.56 MB to 2.9 MB), and code is limited to 64 MiB decompressed
/// (`Config::max_code_bytes`): the largest code at the densest ratio measured makes about
/// 340 MiB. 512 MiB keeps that with half again as margin, while bounding the worst read (and
/// its allocation) to half a gibibyte.
pub const MAX_ARTIFACT_BYTES: u64 = 512 << 20;
/// How stale an artifact's last-use time may get before a load refreshes it.
pub const LAST_USE_GRANULARITY: Duration = Duration::from_secs(3600);

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

    /// The hash whose bytes are `bytes` (as [`Self::as_bytes`] gives them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn file_name(&self) -> String {
        format!("{self}{ARTIFACT_SUFFIX}")
    }

    fn lock_name(&self) -> String {
        format!("{self}{LOCK_SUFFIX}")
    }

    fn failure_name(&self) -> String {
        format!("{self}{FAILED_SUFFIX}")
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

/// An artifact whose checksum was verified against this store's fingerprint and its code hash.
/// Only [`ArtifactStore::load`] makes one.
/// Or, from a preparation worker, an artifact whose digest matched and whose worker was the
/// same build with a compatible engine ([`crate::worker::Compiled`]). Or, in an execution
/// worker, the bytes of one of those that the host sent ([`VerifiedArtifact::sent_by_host`]).
pub(crate) struct VerifiedArtifact {
    file: Vec<u8>,
    start: usize,
}

impl VerifiedArtifact {
    /// The wasmtime artifact bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.file[self.start..]
    }

    /// The artifact a preparation worker compiled and the host checked.
    pub(crate) fn compiled(compiled: crate::worker::Compiled) -> Self {
        Self {
            file: compiled.into_artifact(),
            start: 0,
        }
    }

    /// In an execution worker: artifact bytes the host sent, which it had verified (a
    /// `VerifiedArtifact` of its own), and whose blake3 the worker checked against the digest
    /// the host sent with them.
    /// `message[start..]` is the artifact (the rest is the message it came in).
    pub(crate) fn sent_by_host(message: Vec<u8>, start: usize) -> Self {
        let start = start.min(message.len());
        Self {
            file: message,
            start,
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    pub(crate) keep_other_fingerprints: bool,
    pub(crate) lock_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreOptions {
    /// The defaults: directories of other fingerprints that no live process uses are removed
    /// at open; a process waits up to 6 minutes (the reference system's lenient preparation
    /// timeout) for another to finish preparing the same code before preparing it itself.
    pub fn new() -> Self {
        Self {
            keep_other_fingerprints: false,
            lock_wait: Duration::from_secs(360),
        }
    }

    /// Keep (`true`) or remove (`false`, default) unused directories of other fingerprints at open.
    pub fn keep_other_fingerprints(mut self, keep: bool) -> Self {
        self.keep_other_fingerprints = keep;
        self
    }

    /// How long to wait for another process preparing the same code (default 6 min).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }
}

/// The persistent store of prepared artifacts for one environment fingerprint.
pub struct ArtifactStore {
    root: Dir,
    dir: Dir,
    fingerprint: EnvFingerprint,
    options: StoreOptions,
    /// Our shared lock on `.in-use`: tells other processes this directory is live.
    _in_use: Option<FileLock>,
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
    /// needed (replacing anything else that has its name: a file, FIFO or symlink), marks it in
    /// use, removes temporary files left there by writers that are no longer running and (unless
    /// [`StoreOptions::keep_other_fingerprints`]) the store's own entries in the directories of
    /// other fingerprints that no live process uses.
    pub fn open(
        root: Dir,
        fingerprint: EnvFingerprint,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let name = fingerprint.to_hex();
        // Another process may remove this directory between our open and our lock (it saw it
        // unused): check we locked the directory that is there, and retry if not.
        let mut attempts = 0;
        let (dir, in_use) = loop {
            attempts += 1;
            match root.create_dir(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io(format!("create directory {name}"), e)),
            }
            let dir = match entry::open_dir(&root, &name) {
                Ok(dir) => dir,
                Err(OpenError::WrongKind(kind)) if attempts < 3 => {
                    // Our directory's name, but not a directory: it is ours to replace.
                    tracing::warn!(directory = %name, %kind, "the store's directory is not a directory; replacing it");
                    entry::remove(&root, &name)
                        .map_err(|e| StoreError::io(format!("remove {name}"), e))?;
                    continue;
                }
                Err(OpenError::NotFound) if attempts < 3 => continue,
                Err(e) => {
                    return Err(StoreError::io(
                        format!("open directory {name}"),
                        e.into_io(),
                    ));
                }
            };
            let in_use = match locks::lock(&dir, IN_USE, Mode::Shared, options.lock_wait) {
                Ok(lock) => lock,
                Err(e) => {
                    // A read-only store can still be read; it just cannot be marked in use.
                    tracing::warn!(error = %e, "cannot mark the store directory in use");
                    None
                }
            };
            if attempts >= 3 || maintenance::still_there(&root, &name, &dir) {
                break (dir, in_use);
            }
        };
        let store = Self {
            root,
            dir,
            fingerprint,
            options,
            _in_use: in_use,
        };
        store.remove_stale_temporaries()?;
        if !store.options.keep_other_fingerprints
            && let Err(e) = store.remove_other_fingerprints()
        {
            tracing::warn!(error = %e, "could not remove other environments' artifacts");
        }
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
        // An artifact that is there is whole (it was renamed into place), and removing it while
        // we read it cannot hurt (we read the file we opened): no lock needed.
        if let Some(artifact) = self.read_verified(hash)? {
            return Ok(Some(artifact));
        }
        // None yet: wait for a preparation of this code in another process, then look again.
        let _shared = self.lock_key(hash, Mode::Shared);
        self.read_verified(hash)
    }

    /// [`ArtifactStore::load`] for a caller that holds the key's lock from
    /// [`ArtifactStore::lock_for_prepare`] (taking the shared lock would wait for ourselves).
    pub(crate) fn load_locked(
        &self,
        hash: &CodeHash,
        _held: Option<&FileLock>,
    ) -> Result<Option<VerifiedArtifact>, StoreError> {
        self.read_verified(hash)
    }

    fn read_verified(&self, hash: &CodeHash) -> Result<Option<VerifiedArtifact>, StoreError> {
        let name = hash.file_name();
        let corrupt = |reason: &str| StoreError::Corrupt {
            file: name.clone(),
            reason: reason.to_string(),
        };
        let mut read = entry::options();
        read.read(true);
        let (file, stat) = match entry::open_file(&self.dir, &name, &read) {
            Ok(opened) => opened,
            Err(OpenError::NotFound) => return Ok(None),
            Err(OpenError::WrongKind(kind)) => {
                return Err(corrupt(&format!("not a regular file: a {kind}")));
            }
            Err(OpenError::Io(e)) => return Err(StoreError::io(format!("open {name}"), e)),
        };
        if stat.st_size.max(0) as u64 > MAX_ARTIFACT_BYTES {
            return Err(corrupt(&format!(
                "{} bytes, more than the maximum artifact size ({MAX_ARTIFACT_BYTES} bytes)",
                stat.st_size
            )));
        }
        // One allocation of the right size (growing a Vec while reading costs ~20% here), from
        // our own `fstat`, which `note_use` needs too, and fallible: the size is outside data.
        // Reading through `take` bounds the read if the file grows meanwhile, and skips the
        // `statx` and `lseek` that `File::read_to_end` would spend on its own size hint.
        let size = stat.st_size.max(0) as usize;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(size + 1).map_err(|e| {
            StoreError::io(
                format!("allocate {} bytes to read {name}", size + 1),
                std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
            )
        })?;
        (&file)
            .take(MAX_ARTIFACT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(format!("read {name}"), e))?;
        if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
            return Err(corrupt("grew beyond the maximum artifact size while read"));
        }
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("shorter than the header"));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let expected = &bytes[MAGIC.len()..HEADER_LEN];
        let actual = self.checksum(hash, &bytes[HEADER_LEN..]);
        if expected != actual.as_bytes() {
            return Err(corrupt("checksum mismatch"));
        }
        maintenance::note_use(&file, &stat);
        Ok(Some(VerifiedArtifact {
            file: bytes,
            start: HEADER_LEN,
        }))
    }

    /// Reads the artifact of `hash` and verifies its checksum, without loading it: `Ok(Some(size))`
    /// when it is good, `Ok(None)` when there is none, `Err(StoreError::Corrupt)` when it is bad.
    pub fn check(&self, hash: &CodeHash) -> Result<Option<u64>, StoreError> {
        Ok(self.load(hash)?.map(|a| a.bytes().len() as u64))
    }

    /// Takes the per-key lock of `hash` for preparing it: waits (bounded) while another process
    /// prepares or loads it. `None` when the lock cannot be had (read-only store, wait ran out):
    /// the caller goes on without it.
    pub(crate) fn lock_for_prepare(&self, hash: &CodeHash) -> Option<FileLock> {
        self.lock_key(hash, Mode::Exclusive)
    }

    /// Removes the lock file of `hash` (whose preparation failed), then releases `lock`.
    /// Processes waiting on the removed file notice and retry on a new one.
    pub(crate) fn discard_lock(&self, hash: &CodeHash, lock: FileLock) {
        let _ = self.dir.remove_file(hash.lock_name());
        drop(lock);
    }

    fn lock_key(&self, hash: &CodeHash, mode: Mode) -> Option<FileLock> {
        match locks::lock(&self.dir, &hash.lock_name(), mode, self.options.lock_wait) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                tracing::warn!(code_hash = %hash, ?mode, "gave up waiting for the artifact lock");
                None
            }
            Err(e) => {
                tracing::debug!(code_hash = %hash, error = %e, "cannot lock the artifact");
                None
            }
        }
    }

    /// Whether an artifact file for `hash` exists (a regular file; not verified).
    pub fn contains(&self, hash: &CodeHash) -> bool {
        matches!(
            entry::lstat(&self.dir, &hash.file_name()),
            Ok(Some(stat)) if EntryKind::of(&stat) == EntryKind::File
        )
    }

    /// Stores `artifact` (wasmtime's serialized component) for `hash`, atomically: written to a
    /// temporary file, fsynced, renamed into place, and the directory fsynced. Readers see the
    /// old file or the new one, never a partial one.
    ///
    /// An artifact whose file would exceed [`MAX_ARTIFACT_BYTES`] is refused (`StoreError::Io`,
    /// `FileTooLarge`): the store would discard it at the next load.
    pub(crate) fn store(&self, hash: &CodeHash, artifact: &[u8]) -> Result<(), StoreError> {
        let file_len = (HEADER_LEN + artifact.len()) as u64;
        if file_len > MAX_ARTIFACT_BYTES {
            return Err(StoreError::io(
                format!("store {}", hash.file_name()),
                std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!(
                        "{file_len} bytes, more than the maximum artifact size ({MAX_ARTIFACT_BYTES} bytes)"
                    ),
                ),
            ));
        }
        let checksum = self.checksum(hash, artifact);
        self.write_atomically(
            hash,
            &hash.file_name(),
            &[MAGIC, checksum.as_bytes(), artifact],
        )
    }

    /// Writes `parts`, one after the other, as the entry `name` of `hash`: to a temporary file
    /// (`.tmp-<hash>-<pid>-<n>`, removed on failure, or at the next open if we die), fsynced,
    /// renamed into place, and the directory fsynced.
    fn write_atomically(
        &self,
        hash: &CodeHash,
        name: &str,
        parts: &[&[u8]],
    ) -> Result<(), StoreError> {
        let tmp = format!(
            "{TMP_PREFIX}{hash}-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let result = self.write_then_rename(&tmp, name, parts);
        if result.is_err() {
            let _ = self.dir.remove_file(&tmp);
        }
        result
    }

    fn write_then_rename(&self, tmp: &str, name: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
        let mut file = self.create_temporary(tmp)?;
        let write = |file: &mut cap_std::fs::File| -> std::io::Result<()> {
            for part in parts {
                file.write_all(part)?;
            }
            file.sync_all()
        };
        write(&mut file).map_err(|e| StoreError::io(format!("write {tmp}"), e))?;
        drop(file);
        self.dir
            .rename(tmp, &self.dir, name)
            .map_err(|e| StoreError::io(format!("rename {tmp} to {name}"), e))?;
        self.sync_dir()
    }

    /// Creates the temporary file `tmp`: a new file of our own (`O_EXCL` neither follows a
    /// symlink nor opens a FIFO). Something already there (left by an earlier process with our
    /// pid) has our temporary's name and is removed first.
    fn create_temporary(&self, tmp: &str) -> Result<cap_std::fs::File, StoreError> {
        let mut create = entry::options();
        create.write(true).create_new(true);
        let mut result = entry::open_file(&self.dir, tmp, &create);
        let taken = match &result {
            Err(OpenError::WrongKind(_)) => true,
            Err(OpenError::Io(e)) => e.kind() == std::io::ErrorKind::AlreadyExists,
            _ => false,
        };
        if taken {
            entry::remove(&self.dir, tmp)
                .map_err(|e| StoreError::io(format!("remove {tmp}"), e))?;
            result = entry::open_file(&self.dir, tmp, &create);
        }
        result
            .map(|(file, _)| file)
            .map_err(|e| StoreError::io(format!("create {tmp}"), e.into_io()))
    }

    /// Removes the artifact of `hash`, if any: whatever has its name (a symlink itself, never its
    /// target; a directory only when empty — what is inside is not the store's, so removing a
    /// directory that holds anything fails, to be reported). A failure record of `hash` stays
    /// (see [`ArtifactStore::forget_failure`]).
    pub fn remove(&self, hash: &CodeHash) -> Result<(), StoreError> {
        let name = hash.file_name();
        match entry::remove(&self.dir, &name) {
            Ok(Some(_)) => self.sync_dir(),
            Ok(None) => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove {name}"), e)),
        }
    }

    /// The artifact's checksum: blake3 keyed with a key derived from this environment's
    /// fingerprint and the code hash (so a file moved from another directory or key fails).
    /// Keying rather than prefixing the salt lets blake3 hash the artifact from its first byte
    /// at full SIMD width: a 64-byte prefix cost ~15 % on a 225 KB artifact (BENCHMARKS.md).
    fn checksum(&self, hash: &CodeHash, artifact: &[u8]) -> blake3::Hash {
        self.salted_checksum("pvf-host artifact checksum key v2", hash, artifact)
    }

    /// blake3 of `bytes` keyed with a key derived, in the domain `context`, from this
    /// environment's fingerprint and `hash`.
    fn salted_checksum(&self, context: &str, hash: &CodeHash, bytes: &[u8]) -> blake3::Hash {
        let mut key = blake3::Hasher::new_derive_key(context);
        key.update(self.fingerprint.as_bytes());
        key.update(hash.as_bytes());
        blake3::keyed_hash(key.finalize().as_bytes(), bytes)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        // The directory handle itself may be an `O_PATH` descriptor, which cannot be fsynced;
        // open the directory for reading and fsync that.
        self.dir
            .open(".")
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io("fsync directory", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_store(dir: &tempfile::TempDir) -> ArtifactStore {
        let root = Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
        let fingerprint =
            EnvFingerprint::from_parts(&wasmtime::Engine::default(), b"test", "cpu", "kernel");
        ArtifactStore::open(root, fingerprint, StoreOptions::new()).unwrap()
    }

    /// An artifact whose file would exceed the maximum is not written (a load would discard it);
    /// one exactly at the maximum is.
    #[test]
    fn the_store_refuses_to_write_an_artifact_above_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let hash = CodeHash::of(b"too large");
        // Zeroed allocations are not touched before the size check: this costs no memory.
        let too_large = vec![0u8; MAX_ARTIFACT_BYTES as usize - HEADER_LEN + 1];
        match store.store(&hash, &too_large) {
            Err(StoreError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(too_large);
        assert!(!store.contains(&hash));
        assert_eq!(store.hashes().unwrap(), vec![]);

        let largest = vec![0u8; MAX_ARTIFACT_BYTES as usize - HEADER_LEN];
        store.store(&hash, &largest).unwrap();
        drop(largest);
        assert_eq!(
            store.check(&hash).unwrap(),
            Some(MAX_ARTIFACT_BYTES - HEADER_LEN as u64)
        );
    }
}
