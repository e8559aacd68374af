//! Opening, inspecting and removing store entries, each of which is hostile until proven a
//! plain file of plausible size.
//!
//! Every entry the store opens — artifacts, lock files, `.in-use`, temporaries, the fingerprint
//! directory — is opened with `O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC` (a FIFO cannot block the
//! open, a symlink is never followed, in or out of the store) and checked with `fstat` on the
//! descriptor that was opened (so the check and the use see the same inode). Inspection uses
//! `lstat`. Removal removes the entry with the store's name whatever its type.

use std::fmt;
use std::io;

use cap_std::fs::{Dir, File, OpenOptions, OpenOptionsExt};
use rustix::fs::{AtFlags, FileType, OFlags, Stat, fstat, statat};

/// What a store entry is, as `lstat` (or `fstat` on the opened descriptor) sees it. Only
/// [`EntryKind::File`] can hold an artifact; anything else at an artifact's name is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// Something else.
    Unknown,
}

impl EntryKind {
    /// `"file"`, `"directory"`, `"symlink"`, `"fifo"`, `"socket"`, `"block device"`,
    /// `"character device"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::BlockDevice => "block device",
            Self::CharDevice => "character device",
            Self::Unknown => "unknown",
        }
    }

    pub(super) fn of(stat: &Stat) -> Self {
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Directory,
            FileType::Symlink => Self::Symlink,
            FileType::Fifo => Self::Fifo,
            FileType::Socket => Self::Socket,
            FileType::BlockDevice => Self::BlockDevice,
            FileType::CharacterDevice => Self::CharDevice,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an entry could not be opened as what the store expects.
#[derive(Debug)]
pub(super) enum OpenError {
    /// Nothing has that name.
    NotFound,
    /// Something of another kind has that name.
    WrongKind(EntryKind),
    /// The open or the `fstat` failed.
    Io(io::Error),
}

impl OpenError {
    /// The error as an [`io::Error`], for callers that only report it.
    pub(super) fn into_io(self) -> io::Error {
        match self {
            Self::NotFound => io::ErrorKind::NotFound.into(),
            Self::WrongKind(kind) => {
                io::Error::other(format!("unexpected kind of entry: a {kind}"))
            }
            Self::Io(e) => e,
        }
    }
}

/// Open options that can neither block (`O_NONBLOCK`: a FIFO opens at once) nor follow a
/// symlink (`O_NOFOLLOW`); cap-std adds `O_CLOEXEC`. The caller adds the access mode.
pub(super) fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW).bits() as i32);
    options
}

/// Opens `name` in `dir` with `options` (made by [`options`]) and checks, on the opened
/// descriptor, that it is a regular file. Returns the file and its `fstat`.
pub(super) fn open_file(
    dir: &Dir,
    name: &str,
    options: &OpenOptions,
) -> Result<(File, Stat), OpenError> {
    let file = match dir.open_with(name, options) {
        Ok(file) => file,
        Err(e) => return Err(classify(dir, name, EntryKind::File, e)),
    };
    let stat = fstat(&file).map_err(|e| OpenError::Io(e.into()))?;
    match EntryKind::of(&stat) {
        EntryKind::File => Ok((file, stat)),
        kind => Err(OpenError::WrongKind(kind)),
    }
}

/// Opens the directory `name` in `dir` without following a symlink.
pub(super) fn open_dir(dir: &Dir, name: &str) -> Result<Dir, OpenError> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::DIRECTORY).bits() as i32);
    let file = match dir.open_with(name, &options) {
        Ok(file) => file,
        Err(e) => return Err(classify(dir, name, EntryKind::Directory, e)),
    };
    let stat = fstat(&file).map_err(|e| OpenError::Io(e.into()))?;
    match EntryKind::of(&stat) {
        EntryKind::Directory => Ok(Dir::from_std_file(file.into_std())),
        kind => Err(OpenError::WrongKind(kind)),
    }
}

/// Turns a failed open of an `expected` entry into [`OpenError`]: a symlink (`ELOOP`), socket
/// (`ENXIO`), directory (`EISDIR`) or file (`ENOTDIR`) where something else was expected is
/// reported by its kind.
fn classify(dir: &Dir, name: &str, expected: EntryKind, error: io::Error) -> OpenError {
    if error.kind() == io::ErrorKind::NotFound {
        return OpenError::NotFound;
    }
    match lstat(dir, name) {
        Ok(Some(stat)) => match EntryKind::of(&stat) {
            kind if kind == expected => OpenError::Io(error),
            kind => OpenError::WrongKind(kind),
        },
        Ok(None) => OpenError::NotFound,
        Err(_) => OpenError::Io(error),
    }
}

/// `lstat` of `name` in `dir`: `Ok(None)` when there is no such entry.
pub(super) fn lstat(dir: &Dir, name: &str) -> io::Result<Option<Stat>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the entry `name` of `dir` whatever it is (a symlink itself, never its target; a
/// directory only when it is empty: what is inside is not the store's, so a directory holding
/// anything stays and the removal fails, to be reported). Only for names the store owns.
/// Returns what was removed, `None` when nothing was there.
pub(super) fn remove(dir: &Dir, name: &str) -> io::Result<Option<EntryKind>> {
    let Some(stat) = lstat(dir, name)? else {
        return Ok(None);
    };
    let kind = EntryKind::of(&stat);
    let removed = match kind {
        EntryKind::Directory => dir.remove_dir(name),
        _ => dir.remove_file(name),
    };
    match removed {
        Ok(()) => Ok(Some(kind)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The size of `stat`'s entry in bytes when it is a regular file, otherwise 0.
pub(super) fn file_size(stat: &Stat) -> u64 {
    match EntryKind::of(stat) {
        EntryKind::File => stat.st_size.max(0) as u64,
        _ => 0,
    }
}

/// The disk space removing `stat`'s entry frees when it is a regular file: its length, or the
/// blocks it occupies if fewer (a sparse file). 0 for anything else.
pub(super) fn freed_by_removal(stat: &Stat) -> u64 {
    file_size(stat).min((stat.st_blocks.max(0) as u64).saturating_mul(512))
}
