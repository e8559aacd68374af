//! Failure records: the store's memory of code that failed preparation deterministically, so
//! that it is not compiled again after a restart.
//!
//! A record is the file `<code-hash>.failed` in the fingerprint's directory, beside the
//! artifacts, so a changed environment never sees it. Its format:
//!
//! ```text
//! FAILURE_MAGIC "PVFFAIL\x01" (8 bytes)
//! checksum (32 bytes)   blake3 of the rest, keyed with a key derived from the fingerprint and
//!                       the code hash (domain "pvf-host failure record checksum key v1")
//! kind (1 byte)         1 invalid code, 2 wrong world, 3 pre-check limit
//! reason                UTF-8, the rest of the file, at most MAX_FAILURE_REASON_BYTES
//! ```
//!
//! A record is written like an artifact (temporary file, fsync, rename, directory fsync) and read
//! like one (opened without blocking or following symlinks, its size checked on the opened
//! descriptor before a byte is read, never more than [`MAX_FAILURE_RECORD_BYTES`] read). A
//! record that fails any check — a flipped bit, a truncation, a file copied from another code
//! hash or another fingerprint's directory, anything that is not a regular file of plausible
//! size — is no record: it is removed and the code is compiled again. Damage costs a
//! recompilation, never a verdict.
//!
//! Records and artifacts are independent: removing one never removes the other, and no lock is
//! taken to read, write or remove a record (the file is replaced atomically, and removing it
//! under a reader cannot change what the reader reads). The caller decides what a record
//! means next to an artifact; see [`FailureKind`].

use std::fmt;
use std::io::Read;
use std::time::SystemTime;

use super::entry::{self, EntryKind, OpenError};
use super::maintenance::{self, Listed};
use super::{ArtifactStore, CodeHash, FAILED_SUFFIX};
use crate::error::StoreError;

/// The first bytes of every failure record (format version 1).
const FAILURE_MAGIC: &[u8; 8] = b"PVFFAIL\x01";
const FAILURE_HEADER_LEN: usize = FAILURE_MAGIC.len() + 32;
const FAILURE_CHECKSUM_CONTEXT: &str = "pvf-host failure record checksum key v1";

/// The longest reason a failure record keeps, in bytes (4 KiB, as a rejection reason); a longer
/// one is cut at a character boundary.
pub const MAX_FAILURE_REASON_BYTES: usize = 4096;

/// The largest failure record file the store writes or reads: header, kind and the longest
/// reason (4137 bytes). A larger entry at a record's name is never read.
pub const MAX_FAILURE_RECORD_BYTES: u64 =
    (FAILURE_HEADER_LEN + 1 + MAX_FAILURE_REASON_BYTES) as u64;

/// Why code failed preparation deterministically: every honest node with the same environment
/// gets the same failure.
///
/// A record says nothing about an artifact of the same code and the other way round: the store
/// keeps both if asked. [`FailureKind::PrecheckLimit`] in particular may sit beside an artifact
/// prepared for execution under the lenient limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The code is not a valid component (decoding, wasm validation).
    InvalidCode,
    /// The component does not target the `validation-function` world (missing or mistyped
    /// export, an import the host does not provide).
    WrongWorld,
    /// Compiling exceeded a strict pre-check limit (memory or CPU). It answers pre-checks only:
    /// preparation for execution uses the lenient limits and must not be refused for it.
    PrecheckLimit,
}

impl FailureKind {
    /// `"invalid code"`, `"wrong world"` or `"pre-check limit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCode => "invalid code",
            Self::WrongWorld => "wrong world",
            Self::PrecheckLimit => "pre-check limit",
        }
    }

    /// The kind's byte in the record file.
    fn to_byte(self) -> u8 {
        match self {
            Self::InvalidCode => 1,
            Self::WrongWorld => 2,
            Self::PrecheckLimit => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::InvalidCode),
            2 => Some(Self::WrongWorld),
            3 => Some(Self::PrecheckLimit),
            _ => None,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A remembered deterministic preparation failure of one code hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// Why the code failed.
    pub kind: FailureKind,
    /// What the preparation said, at most [`MAX_FAILURE_REASON_BYTES`] (the store cuts a longer
    /// one at a character boundary when it writes it).
    pub reason: String,
}

impl FailureRecord {
    /// A record of `kind` with `reason` cut to [`MAX_FAILURE_REASON_BYTES`] at a character
    /// boundary.
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        let end = cut(&reason);
        reason.truncate(end);
        Self { kind, reason }
    }

    /// The reason as the store writes it.
    fn stored_reason(&self) -> &str {
        &self.reason[..cut(&self.reason)]
    }
}

/// The length of the longest prefix of `reason` of at most [`MAX_FAILURE_REASON_BYTES`] that
/// ends at a character boundary.
fn cut(reason: &str) -> usize {
    let mut end = reason.len().min(MAX_FAILURE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// One entry with a failure record's name (`<code-hash>.failed`), as listed by
/// [`ArtifactStore::list_failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureInfo {
    /// The code hash the record is about.
    pub code_hash: CodeHash,
    /// The fingerprint directory it lives in.
    pub fingerprint: String,
    /// Whether that is this process's fingerprint (others are never read).
    pub current: bool,
    /// Size of the file in bytes (0 when it is not a regular file).
    pub size: u64,
    /// When the record was last used (written or read), to within
    /// [`LAST_USE_GRANULARITY`](super::LAST_USE_GRANULARITY).
    pub last_used: Option<SystemTime>,
    /// What the entry is.
    pub kind: EntryKind,
    /// What the record says, as far as it was read.
    pub state: FailureState,
}

/// What a listed failure record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureState {
    /// This environment's record, read and its checksum verified.
    Recorded(FailureRecord),
    /// Another environment's record: never read here; pruned with its directory.
    Stale,
    /// This environment's entry that is no valid record (why): reading it would remove it, and
    /// `verify_failures` and `prune` remove it.
    Bad(String),
}

/// What [`ArtifactStore::verify_failures`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureVerifyReport {
    /// How many entries with a record's name were checked.
    pub checked: usize,
    /// Records that were bad, why, and whether they were removed.
    pub bad: Vec<(CodeHash, String, bool)>,
}

/// What reading a record found.
enum Found {
    None,
    Good(FailureRecord),
    /// Not a valid record, and why.
    Damaged(String),
}

impl ArtifactStore {
    /// Writes the failure record of `hash`, replacing any, atomically (temporary file, fsync,
    /// rename, directory fsync), as artifacts are written. The reason is cut to
    /// [`MAX_FAILURE_REASON_BYTES`] at a character boundary. No lock is taken: the caller
    /// preparing the code holds the key's lock if it wants one writer.
    ///
    /// `Err(StoreError::Io)` when it cannot be written (read-only store, full disk); the store is
    /// unchanged then.
    pub fn record_failure(
        &self,
        hash: &CodeHash,
        record: &FailureRecord,
    ) -> Result<(), StoreError> {
        let mut body = Vec::with_capacity(1 + MAX_FAILURE_REASON_BYTES);
        body.push(record.kind.to_byte());
        body.extend_from_slice(record.stored_reason().as_bytes());
        let checksum = self.salted_checksum(FAILURE_CHECKSUM_CONTEXT, hash, &body);
        self.write_atomically(
            hash,
            &hash.failure_name(),
            &[FAILURE_MAGIC, checksum.as_bytes(), &body],
        )
    }

    /// The failure record of `hash`.
    ///
    /// `Ok(None)` when there is none. An entry at the record's name that is not a valid record of
    /// this code in this environment (damaged, truncated, copied from another code hash or
    /// fingerprint, not a regular file, larger than [`MAX_FAILURE_RECORD_BYTES`]) is removed
    /// (whatever it is: a symlink itself, never its target; a directory only when empty) and is
    /// `Ok(None)` too, with a warning: damage costs a recompilation, never a verdict.
    /// `Err(StoreError::Io)` when the entry cannot be opened or read (permissions, I/O): the
    /// caller should go on as if there were no record.
    ///
    /// Never blocks on the entry and never reads more than [`MAX_FAILURE_RECORD_BYTES`]. A good
    /// record's last-use time is refreshed (at most hourly), as an artifact's is on load.
    pub fn failure(&self, hash: &CodeHash) -> Result<Option<FailureRecord>, StoreError> {
        match self.read_failure(hash, true)? {
            Found::None => Ok(None),
            Found::Good(record) => Ok(Some(record)),
            Found::Damaged(why) => {
                let name = hash.failure_name();
                tracing::warn!(code_hash = %hash, reason = %why, "discarding a bad failure record");
                match entry::remove(&self.dir, &name) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "cannot remove a bad failure record")
                    }
                }
                Ok(None)
            }
        }
    }

    /// Removes the failure record of `hash`, if any (e.g. after the code prepared fine):
    /// whatever has its name (a symlink itself, never its target; a directory only when empty).
    pub fn forget_failure(&self, hash: &CodeHash) -> Result<(), StoreError> {
        let name = hash.failure_name();
        match entry::remove(&self.dir, &name) {
            Ok(Some(_)) => self.sync_dir(),
            Ok(None) => Ok(()),
            Err(e) => Err(StoreError::io(format!("remove {name}"), e)),
        }
    }

    /// Lists every entry with a failure record's name below the root, whatever its type: this
    /// fingerprint's (read and verified, without removing anything) and other fingerprints'
    /// (never read: [`FailureState::Stale`]). A directory of another fingerprint that cannot be
    /// read is skipped (with a warning). This environment's entries come first, then by
    /// fingerprint and code hash.
    pub fn list_failures(&self) -> Result<Vec<FailureInfo>, StoreError> {
        let current = self.fingerprint.to_hex();
        let info = |fp: &str, listed: Listed, state: FailureState| FailureInfo {
            code_hash: listed.hash,
            fingerprint: fp.to_string(),
            current: fp == current,
            size: listed.size,
            last_used: listed.last_used,
            kind: listed.kind,
            state,
        };
        let mut out = Vec::new();
        for listed in maintenance::entries_in(&self.dir, &current, FAILED_SUFFIX)? {
            let state = match self.read_failure(&listed.hash, false) {
                Ok(Found::Good(record)) => FailureState::Recorded(record),
                Ok(Found::Damaged(why)) => FailureState::Bad(why),
                Ok(Found::None) => continue,
                Err(e) => FailureState::Bad(format!("unreadable: {e}")),
            };
            out.push(info(&current, listed, state));
        }
        for (fp, listed) in maintenance::entries_of_others(&self.root, &current, FAILED_SUFFIX)? {
            out.extend(
                listed
                    .into_iter()
                    .map(|l| info(&fp, l, FailureState::Stale)),
            );
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

    /// Verifies every entry with a failure record's name in this fingerprint's directory: reads
    /// it (bounded) and checks its checksum. Bad ones (damaged, foreign, not a regular file, too
    /// large, unreadable) are removed (a directory only when empty, else reported as not
    /// removed).
    pub fn verify_failures(&self) -> Result<FailureVerifyReport, StoreError> {
        let mut report = FailureVerifyReport::default();
        let listed = maintenance::entries_in(&self.dir, &self.fingerprint.to_hex(), FAILED_SUFFIX)?;
        for hash in listed.into_iter().map(|l| l.hash) {
            let why = match self.read_failure(&hash, false) {
                // Removed meanwhile: nothing to check.
                Ok(Found::None) => continue,
                Ok(Found::Good(_)) => {
                    report.checked += 1;
                    continue;
                }
                Ok(Found::Damaged(why)) => why,
                Err(e) => format!("unreadable: {e}"),
            };
            report.checked += 1;
            let removed = entry::remove(&self.dir, &hash.failure_name()).is_ok();
            report.bad.push((hash, why, removed));
        }
        Ok(report)
    }

    /// Reads and verifies the record of `hash`; refreshes its last use when `note_use`.
    fn read_failure(&self, hash: &CodeHash, note_use: bool) -> Result<Found, StoreError> {
        let name = hash.failure_name();
        let mut read = entry::options();
        read.read(true);
        let (file, stat) = match entry::open_file(&self.dir, &name, &read) {
            Ok(opened) => opened,
            Err(OpenError::NotFound) => return Ok(Found::None),
            Err(OpenError::WrongKind(kind)) => {
                return Ok(Found::Damaged(format!("not a regular file: a {kind}")));
            }
            Err(OpenError::Io(e)) => return Err(StoreError::io(format!("open {name}"), e)),
        };
        let size = stat.st_size.max(0) as u64;
        if size > MAX_FAILURE_RECORD_BYTES {
            return Ok(Found::Damaged(format!(
                "{size} bytes, more than the maximum failure record size ({MAX_FAILURE_RECORD_BYTES} bytes)"
            )));
        }
        let mut bytes = Vec::new();
        // At most a few KiB, but the size is outside data: allocate fallibly all the same.
        bytes.try_reserve_exact(size as usize + 1).map_err(|e| {
            StoreError::io(
                format!("allocate {} bytes to read {name}", size + 1),
                std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
            )
        })?;
        (&file)
            .take(MAX_FAILURE_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io(format!("read {name}"), e))?;
        let verdict = self.decode_failure(hash, &bytes);
        if note_use && matches!(verdict, Found::Good(_)) {
            maintenance::note_use(&file, &stat);
        }
        Ok(verdict)
    }

    /// Checks and decodes the bytes of the record of `hash`.
    fn decode_failure(&self, hash: &CodeHash, bytes: &[u8]) -> Found {
        let damaged = |why: &str| Found::Damaged(why.to_string());
        if bytes.len() as u64 > MAX_FAILURE_RECORD_BYTES {
            return damaged("grew beyond the maximum failure record size while read");
        }
        if bytes.len() < FAILURE_HEADER_LEN + 1 {
            return damaged("shorter than the header");
        }
        let (header, body) = bytes.split_at(FAILURE_HEADER_LEN);
        if &header[..FAILURE_MAGIC.len()] != FAILURE_MAGIC {
            return damaged("bad magic");
        }
        let actual = self.salted_checksum(FAILURE_CHECKSUM_CONTEXT, hash, body);
        if &header[FAILURE_MAGIC.len()..] != actual.as_bytes() {
            return damaged("checksum mismatch");
        }
        // Only a writer with our fingerprint and checksum key gets here: an unknown kind or a
        // reason that is not UTF-8 is a bug or another format version, still no record.
        let Some(kind) = FailureKind::from_byte(body[0]) else {
            return damaged("unknown failure kind");
        };
        match std::str::from_utf8(&body[1..]) {
            Ok(reason) => Found::Good(FailureRecord {
                kind,
                reason: reason.to_string(),
            }),
            Err(_) => damaged("reason is not UTF-8"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use cap_std::fs::Dir;

    use super::*;
    use crate::env::EnvFingerprint;
    use crate::store::{PrunePolicy, StoreOptions};

    fn fingerprint(build: &[u8]) -> EnvFingerprint {
        EnvFingerprint::from_parts(&wasmtime::Engine::default(), build, "cpu", "kernel")
    }

    fn open_as(dir: &Path, build: &[u8]) -> ArtifactStore {
        let root = Dir::open_ambient_dir(dir, cap_std::ambient_authority()).unwrap();
        let options = StoreOptions::new().keep_other_fingerprints(true);
        ArtifactStore::open(root, fingerprint(build), options).unwrap()
    }

    fn open_store(dir: &tempfile::TempDir) -> ArtifactStore {
        open_as(dir.path(), b"test")
    }

    fn record_path(dir: &tempfile::TempDir, store: &ArtifactStore, hash: &CodeHash) -> PathBuf {
        dir.path()
            .join(store.fingerprint().to_hex())
            .join(hash.failure_name())
    }

    /// Makes a FIFO at `path`.
    fn make_fifo(path: &std::path::Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap()
    }

    fn invalid(reason: &str) -> FailureRecord {
        FailureRecord::new(FailureKind::InvalidCode, reason)
    }

    /// Runs `failure(hash)` on its own thread: fails the test if it takes more than 10 s
    /// (a FIFO opened blocking, a huge file read whole).
    fn failure_within_bound(
        store: &Arc<ArtifactStore>,
        hash: CodeHash,
    ) -> Result<Option<FailureRecord>, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = Arc::clone(store);
        std::thread::spawn(move || {
            let _ = tx.send(store.failure(&hash));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("reading a failure record finishes within 10 s")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".in-use")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_record_round_trips_is_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let hash = CodeHash::of(b"bad code");
        assert_eq!(store.failure(&hash).unwrap(), None);
        for kind in [
            FailureKind::InvalidCode,
            FailureKind::WrongWorld,
            FailureKind::PrecheckLimit,
        ] {
            let record = FailureRecord::new(kind, format!("{kind}: the details ✓"));
            store.record_failure(&hash, &record).unwrap();
            assert_eq!(store.failure(&hash).unwrap(), Some(record));
        }
        let empty = FailureRecord::new(FailureKind::WrongWorld, "");
        store.record_failure(&hash, &empty).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), Some(empty));

        // The layout: magic, checksum, kind byte, reason; no temporary left behind.
        store.record_failure(&hash, &invalid("no")).unwrap();
        let bytes = std::fs::read(record_path(&dir, &store, &hash)).unwrap();
        assert_eq!(&bytes[..8], b"PVFFAIL\x01");
        assert_eq!(bytes.len(), 8 + 32 + 1 + 2);
        assert_eq!(&bytes[40..], b"\x01no");
        let fp_dir = dir.path().join(store.fingerprint().to_hex());
        assert_eq!(names(&fp_dir), vec![hash.failure_name()]);

        // Records and artifacts are independent.
        store.store(&hash, b"an artifact").unwrap();
        store.forget_failure(&hash).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), None);
        assert!(store.check(&hash).unwrap().is_some());
        store.record_failure(&hash, &invalid("again")).unwrap();
        store.remove(&hash).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), Some(invalid("again")));
        store.forget_failure(&hash).unwrap();
        store.forget_failure(&hash).unwrap();
        assert_eq!(names(&fp_dir), Vec::<String>::new());
    }

    #[test]
    fn a_long_reason_is_cut_at_a_char_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let hash = CodeHash::of(b"chatty");
        // 'é' is two bytes starting at odd offsets: byte 4096 is inside one.
        let long = format!("a{}", "é".repeat(3000));
        let made = invalid(&long);
        assert_eq!(made.reason.len(), MAX_FAILURE_REASON_BYTES - 1);
        assert!(long.starts_with(&made.reason));
        // A record built by hand with a longer reason is cut when written.
        let by_hand = FailureRecord {
            kind: FailureKind::InvalidCode,
            reason: long.clone(),
        };
        store.record_failure(&hash, &by_hand).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), Some(made));
        let exact = invalid(&"x".repeat(MAX_FAILURE_REASON_BYTES + 10));
        assert_eq!(exact.reason.len(), MAX_FAILURE_REASON_BYTES);
        store.record_failure(&hash, &exact).unwrap();
        let size = std::fs::metadata(record_path(&dir, &store, &hash))
            .unwrap()
            .len();
        assert_eq!(size, MAX_FAILURE_RECORD_BYTES);
        assert_eq!(store.failure(&hash).unwrap(), Some(exact));
    }

    /// Every flipped bit and every truncation makes the record no record, and removes it.
    #[test]
    fn a_damaged_record_is_no_record_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let hash = CodeHash::of(b"bad code");
        store
            .record_failure(&hash, &invalid("unknown export `validate`"))
            .unwrap();
        let path = record_path(&dir, &store, &hash);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            for bit in [0, 7] {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                assert_eq!(store.failure(&hash).unwrap(), None, "bit {bit} of byte {i}");
                assert!(!path.exists(), "bit {bit} of byte {i}: removed");
            }
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert_eq!(store.failure(&hash).unwrap(), None, "cut to {len} bytes");
            assert!(!path.exists(), "cut to {len} bytes: removed");
        }
        let mut longer = good.clone();
        longer.push(b'!');
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), None, "one byte more");
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            store.failure(&hash).unwrap(),
            Some(invalid("unknown export `validate`"))
        );
    }

    #[test]
    fn a_record_under_another_hash_or_fingerprint_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let (a, b) = (CodeHash::of(b"a"), CodeHash::of(b"b"));
        store.record_failure(&a, &invalid("a is bad")).unwrap();
        let good = std::fs::read(record_path(&dir, &store, &a)).unwrap();

        std::fs::write(record_path(&dir, &store, &b), &good).unwrap();
        assert_eq!(store.failure(&b).unwrap(), None, "copied to another hash");
        assert!(!record_path(&dir, &store, &b).exists());
        std::fs::rename(record_path(&dir, &store, &a), record_path(&dir, &store, &b)).unwrap();
        assert_eq!(store.failure(&b).unwrap(), None, "moved to another hash");
        assert_eq!(store.failure(&a).unwrap(), None);
        assert!(!record_path(&dir, &store, &b).exists());

        let other = open_as(dir.path(), b"another build");
        std::fs::write(record_path(&dir, &other, &a), &good).unwrap();
        assert_eq!(other.failure(&a).unwrap(), None, "another fingerprint");
        assert!(!record_path(&dir, &other, &a).exists());
        // The fingerprint's own record is not visible from another environment.
        store.record_failure(&a, &invalid("a is bad")).unwrap();
        assert_eq!(other.failure(&a).unwrap(), None);
        assert_eq!(store.failure(&a).unwrap(), Some(invalid("a is bad")));
    }

    /// What may sit at a record's name instead of a record: never blocks, never read whole,
    /// no record, and removed when the store may remove it.
    #[test]
    fn a_hostile_entry_at_a_records_name_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = Arc::new(open_store(&dir));
        let hash = CodeHash::of(b"hostile");
        store.record_failure(&hash, &invalid("bad")).unwrap();
        let path = record_path(&dir, &store, &hash);
        // A valid record outside the store, for the symlink to point at.
        let target = outside.path().join("record");
        std::fs::copy(&path, &target).unwrap();
        std::fs::remove_file(&path).unwrap();

        type Plant = fn(&Path, &Path);
        let plants: [(&str, Plant, bool); 7] = [
            ("fifo", |p, _| make_fifo(p), true),
            (
                "empty directory",
                |p, _| std::fs::create_dir(p).unwrap(),
                true,
            ),
            (
                "directory holding a file",
                |p, _| {
                    std::fs::create_dir(p).unwrap();
                    std::fs::write(p.join("mine"), b"not the store's").unwrap();
                },
                false,
            ),
            (
                "symlink to a valid record",
                |p, target| std::os::unix::fs::symlink(target, p).unwrap(),
                true,
            ),
            (
                "socket",
                |p, target| {
                    // A socket's path must be short: bind it beside the target, then move it.
                    let short = target.with_file_name("s");
                    drop(std::os::unix::net::UnixListener::bind(&short).unwrap());
                    std::fs::rename(&short, p).unwrap();
                },
                true,
            ),
            (
                "50 GB sparse file",
                |p, _| std::fs::File::create(p).unwrap().set_len(50 << 30).unwrap(),
                true,
            ),
            (
                "file one byte over the maximum",
                |p, _| {
                    std::fs::File::create(p)
                        .unwrap()
                        .set_len(MAX_FAILURE_RECORD_BYTES + 1)
                        .unwrap()
                },
                true,
            ),
        ];
        for (what, plant, removable) in plants {
            plant(&path, &target);
            assert_eq!(failure_within_bound(&store, hash).unwrap(), None, "{what}");
            let left = std::fs::symlink_metadata(&path).is_ok();
            assert_eq!(left, !removable, "{what}: removed when ours");
            if left {
                std::fs::remove_dir_all(&path).unwrap();
            }
        }
        assert!(target.exists(), "the symlink's target is untouched");
        // A record can be written again afterwards.
        store.record_failure(&hash, &invalid("bad")).unwrap();
        assert_eq!(store.failure(&hash).unwrap(), Some(invalid("bad")));
    }

    #[test]
    fn list_shows_records_verify_removes_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let other = open_as(dir.path(), b"another build");
        let (good, damaged, fifo) = (
            CodeHash::of(b"good"),
            CodeHash::of(b"damaged"),
            CodeHash::of(b"fifo"),
        );
        let precheck = FailureRecord::new(FailureKind::PrecheckLimit, "compiled for 61 s");
        store.record_failure(&good, &precheck).unwrap();
        store.record_failure(&damaged, &invalid("bad")).unwrap();
        let path = record_path(&dir, &store, &damaged);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        make_fifo(&record_path(&dir, &store, &fifo));
        other.record_failure(&good, &invalid("elsewhere")).unwrap();

        let list = store.list_failures().unwrap();
        assert_eq!(list.len(), 4, "{list:?}");
        let find = |hash: CodeHash, current: bool| {
            list.iter()
                .find(|i| i.code_hash == hash && i.current == current)
                .unwrap_or_else(|| panic!("{hash} in {list:?}"))
        };
        assert_eq!(
            find(good, true).state,
            FailureState::Recorded(precheck.clone())
        );
        assert_eq!(find(good, true).kind, EntryKind::File);
        assert!(find(good, true).size > 40);
        assert!(find(good, true).last_used.is_some());
        assert_eq!(
            find(damaged, true).state,
            FailureState::Bad("checksum mismatch".into())
        );
        assert_eq!(find(fifo, true).kind, EntryKind::Fifo);
        assert!(matches!(find(fifo, true).state, FailureState::Bad(_)));
        assert_eq!(find(good, false).state, FailureState::Stale);
        assert_eq!(find(good, false).fingerprint, other.fingerprint().to_hex());
        assert!(
            list[3].fingerprint == other.fingerprint().to_hex(),
            "current first"
        );
        // Listing removed nothing.
        assert!(path.exists());

        let report = store.verify_failures().unwrap();
        assert_eq!(report.checked, 3);
        let mut bad: Vec<_> = report
            .bad
            .iter()
            .map(|(h, _, removed)| (*h, *removed))
            .collect();
        bad.sort();
        let mut expected = vec![(damaged, true), (fifo, true)];
        expected.sort();
        assert_eq!(bad, expected);
        assert!(!path.exists());
        assert_eq!(store.failure(&good).unwrap(), Some(precheck));
        assert_eq!(store.verify_failures().unwrap().bad, vec![]);
    }

    #[test]
    fn prune_removes_old_records_and_other_environments_ones_not_for_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let (old, fresh, fifo) = (
            CodeHash::of(b"old"),
            CodeHash::of(b"fresh"),
            CodeHash::of(b"fifo"),
        );
        store.record_failure(&old, &invalid("old")).unwrap();
        store.record_failure(&fresh, &invalid("fresh")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(record_path(&dir, &store, &old))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3 * 3600))
            .unwrap();
        make_fifo(&record_path(&dir, &store, &fifo));
        let other_fp = {
            let other = open_as(dir.path(), b"another build");
            other.record_failure(&old, &invalid("elsewhere")).unwrap();
            other.store(&old, b"an artifact").unwrap();
            other.fingerprint().to_hex()
        };

        // A byte budget of zero removes no record (nor the unused other environment).
        let budget_only = PrunePolicy::new().max_bytes(Some(0)).max_idle(None);
        let report = store.prune(&budget_only).unwrap();
        assert_eq!(
            report.removed_failures,
            vec![fifo],
            "only the unreadable one"
        );
        assert_eq!(report.removed_fingerprints, vec![other_fp.clone()]);
        assert!(!dir.path().join(&other_fp).exists());
        assert!(record_path(&dir, &store, &old).exists());

        let ttl = PrunePolicy::new().max_idle(Some(Duration::from_secs(3600)));
        let report = store.prune(&ttl).unwrap();
        assert_eq!(report.removed_failures, vec![old]);
        assert!(report.freed_bytes > 0);
        assert_eq!(store.failure(&old).unwrap(), None);
        assert_eq!(store.failure(&fresh).unwrap(), Some(invalid("fresh")));
    }

    /// A record's temporary file left by a dead writer is removed at open, like an artifact's.
    #[test]
    fn a_dead_writers_record_temporary_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir);
        let hash = CodeHash::of(b"crashed");
        let fp_dir = dir.path().join(store.fingerprint().to_hex());
        // A pid above the kernel's maximum (2^22): never a live process.
        let tmp = format!(".tmp-{hash}-{}-0", 0x7fff_fff0);
        std::fs::write(fp_dir.join(&tmp), b"PVFFAIL\x01half").unwrap();
        drop(store);
        let store = open_store(&dir);
        assert_eq!(names(&fp_dir), Vec::<String>::new());
        assert_eq!(store.failure(&hash).unwrap(), None);
    }
}
