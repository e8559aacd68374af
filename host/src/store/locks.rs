//! Advisory file locks (`flock`) that coordinate processes sharing one store.
//!
//! - `.in-use` in a fingerprint directory: every process that opened the store holds a *shared*
//!   lock on it for its lifetime. A directory whose `.in-use` can be locked *exclusively* has no
//!   live user and may be removed.
//! - `<code-hash>.lock`: held *exclusively* while preparing that code (one compilation across all
//!   processes), *shared* by a loader that found no artifact and waits for a preparation to end,
//!   and tried exclusively (without waiting) by pruning, which skips artifacts in use that way.
//!   A loader that finds the artifact needs no lock: the file is whole (renamed into place) and
//!   removing it under the reader cannot change what the reader reads.
//!
//! The kernel releases a lock when its holder dies, so a crashed process never blocks others.
//! Waits are bounded: after the deadline the caller goes on without the lock (at worst, the
//! same code is compiled twice; artifacts are still replaced atomically).
//!
//! Lock files are opened like every store entry (see [`super::entry`]): without blocking or
//! following symlinks. Something that is not a regular file at a lock's name (a FIFO, a
//! directory, a symlink) has the store's name and holds no lock: it is removed and the lock file
//! created afresh; if that fails, the caller goes on without the lock.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use cap_std::fs::{Dir, File};
use rustix::fs::{AtFlags, FlockOperation, flock, fstat, statat};

use super::entry::{self, OpenError};

/// A held lock; released when dropped (the descriptor is closed).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

/// Lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// Locks `name` in `dir` (creating it if needed and possible), waiting at most `wait`.
///
/// `Ok(None)` when the wait ran out. After locking, checks the name still refers to the locked
/// file (another process may have removed and re-created it meanwhile) and retries if not.
pub(crate) fn lock(
    dir: &Dir,
    name: &str,
    mode: Mode,
    wait: Duration,
) -> std::io::Result<Option<FileLock>> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        let file = open_lock_file(dir, name)?;
        let op = match mode {
            Mode::Shared => FlockOperation::NonBlockingLockShared,
            Mode::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match flock(&file, op) {
            Ok(()) => {
                if same_file(dir, name, &file)? {
                    return Ok(Some(FileLock { _file: file }));
                }
                // Replaced under us: lock the new one.
                continue;
            }
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Locks `name` without waiting: `Ok(None)` when someone else holds it.
pub(crate) fn try_lock(dir: &Dir, name: &str, mode: Mode) -> std::io::Result<Option<FileLock>> {
    lock(dir, name, mode, Duration::ZERO)
}

/// Opens (creating if needed) the lock file `name`: a regular file, opened without blocking or
/// following a symlink. Anything else with its name is removed and the file created afresh, once.
fn open_lock_file(dir: &Dir, name: &str) -> std::io::Result<File> {
    match open_regular_lock_file(dir, name) {
        Err(OpenError::WrongKind(kind)) => {
            tracing::warn!(file = name, %kind, "a lock file is not a regular file; replacing it");
            entry::remove(dir, name)?;
            open_regular_lock_file(dir, name).map_err(OpenError::into_io)
        }
        opened => opened.map_err(OpenError::into_io),
    }
}

fn open_regular_lock_file(dir: &Dir, name: &str) -> Result<File, OpenError> {
    let mut create = entry::options();
    create.read(true).write(true).create(true);
    match entry::open_file(dir, name, &create) {
        Ok((file, _)) => Ok(file),
        // A read-only store: lock the existing file if there is one.
        Err(OpenError::Io(e))
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            let mut read = entry::options();
            read.read(true);
            entry::open_file(dir, name, &read).map(|(file, _)| file)
        }
        Err(e) => Err(e),
    }
}

/// Whether `name` in `dir` is still the file `file` is open on.
fn same_file(dir: &Dir, name: &str, file: &File) -> std::io::Result<bool> {
    let held = fstat(file)?;
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) => Ok(now.st_ino == held.st_ino && now.st_dev == held.st_dev),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(false),
        Err(e) => Err(e.into()),
    }
}
