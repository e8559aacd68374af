//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pvf_host::{
    CacheStatus, CodeHash, Config, Isolation, Outcome, ValidationHost, ValidationParams, Verdict,
};
use tempfile::TempDir;

/// The isolation the tests run under: `PVF_TEST_ISOLATION=in-process` or `per-job` runs every
/// test that builds its host from [`config`] (or runs `pvf` through [`pvf`]) in that mode; the
/// default is workers. `tests/run-tests.sh` runs the integration tests in all three: the parity
/// suite.
pub fn isolation() -> Isolation {
    match std::env::var("PVF_TEST_ISOLATION").as_deref() {
        Ok("in-process") => Isolation::InProcess,
        Ok("per-job") => Isolation::PerJob,
        Ok("workers") | Err(_) => Isolation::Workers,
        Ok(other) => panic!("PVF_TEST_ISOLATION={other}: expected in-process, workers or per-job"),
    }
}

/// `Config::new()` with the tests' isolation ([`isolation`]) and this build's `pvf` binary as
/// the preparation worker.
pub fn config() -> Config {
    Config::new()
        .isolation(isolation())
        .worker_executable(env!("CARGO_BIN_EXE_pvf"))
}

/// The configuration tests use: a short wall-clock timeout so `halt` ends quickly, fuel large
/// enough that the timeout, not the fuel, ends it, and no in-memory cache, so that every call
/// goes through the store (the `memory_cache` tests turn it on).
pub fn test_config() -> Config {
    config()
        .execution_timeout(Duration::from_millis(300))
        .fuel(1_000_000_000_000)
        .memory_cache_bytes(0)
}

/// A fresh store directory.
pub fn store_dir() -> TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// A host over `dir` with [`test_config`].
pub fn host(dir: &Path) -> ValidationHost {
    host_with(dir, test_config())
}

/// A host over `dir` with `config`.
pub fn host_with(dir: &Path, config: Config) -> ValidationHost {
    let dir = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .expect("open store dir");
    ValidationHost::new(dir, config).expect("open host")
}

/// Params for `adder`: parent head `a`, block data `b`.
pub fn adder_params(a: u64, b: u64) -> ValidationParams {
    ValidationParams::new(a.to_le_bytes().to_vec(), b.to_le_bytes().to_vec(), 7)
}

/// Params for `undying`: `rounds` rounds over a small payload.
pub fn undying_params(rounds: u32) -> ValidationParams {
    let mut block = rounds.to_le_bytes().to_vec();
    block.extend_from_slice(b"undying payload");
    ValidationParams::new(vec![1, 2, 3], block, 9)
}

/// The guest `name`'s component bytes.
pub fn guest(name: &str) -> Vec<u8> {
    pvf_test_guests::bytes(name)
}

/// The path of the stored artifact of `code` in `host`'s store below `dir`.
pub fn artifact_path(dir: &Path, host: &ValidationHost, code: &[u8]) -> PathBuf {
    dir.join(host.fingerprint().to_hex())
        .join(format!("{}.artifact", CodeHash::of(code)))
}

/// Asserts `outcome` is valid with head data `head` and cache path `cache`.
pub fn assert_valid(outcome: &Outcome, head: &[u8], cache: CacheStatus) {
    match &outcome.verdict {
        Verdict::Valid(r) => assert_eq!(r.head_data, head, "head data"),
        other => panic!("expected valid, got {other:?}"),
    }
    assert_eq!(outcome.cache, cache, "cache path");
}

/// The names of every file in the fingerprint directory of `host` below `dir`, but the
/// directory's `.in-use` marker.
pub fn files_in_store(dir: &Path, host: &ValidationHost) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(host.fingerprint().to_hex()))
        .expect("list store")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".in-use")
        .collect();
    names.sort();
    names
}

/// The `pvf` binary with `--cache-dir dir`, stdin closed.
pub fn pvf(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvf"));
    cmd.arg("--cache-dir")
        .arg(dir)
        .arg("--isolation")
        .arg(isolation().as_str())
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` and returns its output, failing the test if it takes more than 60 s.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvf");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("pvf did not finish within 60 s: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` with `--json` and parses the one JSON object it prints.
pub fn run_json(cmd: &mut Command) -> (i32, serde_json::Value, String) {
    let out = run(cmd.arg("--json"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one line on stdout, got {stdout:?} (stderr {stderr})"
    );
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"));
    assert!(
        !stderr.contains("thread 'main' panicked"),
        "pvf panicked: {stderr}"
    );
    (out.status.code().expect("exit code"), value, stderr)
}

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write file");
    path
}

/// Runs `f` on its own thread and returns its result, failing the test if it takes longer than
/// `limit`: a regression that blocks (e.g. opening a FIFO) fails instead of hanging CI. The
/// stuck thread is left behind; the test process ends anyway.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish within {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// Something that is not a good store file, put where one should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadEntry {
    /// A named pipe: a blocking open of it waits for a writer forever.
    Fifo,
    /// A directory holding a file.
    Directory,
    /// A symlink to a file outside the store.
    Symlink,
    /// A Unix domain socket.
    Socket,
    /// A sparse file of 50 GB: reading it whole needs 50 GB of memory.
    Sparse50G,
    /// A sparse file one byte over the store's maximum artifact size.
    JustOverMax,
}

impl BadEntry {
    /// Every kind, for tests over an artifact's path.
    pub const ALL: [BadEntry; 6] = [
        BadEntry::Fifo,
        BadEntry::Directory,
        BadEntry::Symlink,
        BadEntry::Socket,
        BadEntry::Sparse50G,
        BadEntry::JustOverMax,
    ];

    /// The kinds that are not regular files.
    pub const NOT_FILES: [BadEntry; 4] = [
        BadEntry::Fifo,
        BadEntry::Directory,
        BadEntry::Symlink,
        BadEntry::Socket,
    ];

    /// The kind `pvf cache list` reports for it.
    pub fn kind(self) -> &'static str {
        match self {
            BadEntry::Fifo => "fifo",
            BadEntry::Directory => "directory",
            BadEntry::Symlink => "symlink",
            BadEntry::Socket => "socket",
            BadEntry::Sparse50G | BadEntry::JustOverMax => "file",
        }
    }

    /// Replaces whatever is at `path` with this bad entry. `outside` is a directory outside the
    /// store (the symlink's target goes there; the socket is bound there first, since a socket's
    /// path must be short).
    pub fn plant(self, path: &Path, outside: &Path) {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
        match self {
            BadEntry::Fifo => rustix::fs::mknodat(
                rustix::fs::CWD,
                path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap(),
            // Empty: a directory holding anything is not the store's to delete (see
            // `store_faults::a_non_empty_directory_at_an_artifact_path_is_reported_and_kept`).
            BadEntry::Directory => std::fs::create_dir(path).unwrap(),
            BadEntry::Symlink => {
                let target = outside.join("symlink-target");
                std::fs::write(&target, b"outside the store").unwrap();
                std::os::unix::fs::symlink(&target, path).unwrap();
            }
            BadEntry::Socket => {
                let short = outside.join("s");
                let _ = std::fs::remove_file(&short);
                drop(std::os::unix::net::UnixListener::bind(&short).unwrap());
                std::fs::rename(&short, path).unwrap();
            }
            BadEntry::Sparse50G => std::fs::File::create(path)
                .unwrap()
                .set_len(50 << 30)
                .unwrap(),
            BadEntry::JustOverMax => std::fs::File::create(path)
                .unwrap()
                .set_len(pvf_host::MAX_ARTIFACT_BYTES + 1)
                .unwrap(),
        }
    }

    /// Asserts the symlink's target outside the store (if any) is untouched.
    pub fn assert_outside_untouched(self, outside: &Path) {
        if self == BadEntry::Symlink {
            assert_eq!(
                std::fs::read(outside.join("symlink-target")).unwrap(),
                b"outside the store",
                "the symlink's target outside the store is untouched"
            );
        }
    }
}

/// Whether something (anything, a dangling symlink included) is at `path`.
pub fn entry_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes, if it can be read.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `cmd` like [`run`], but kills it and fails the test when its resident memory passes
/// `max_rss` bytes (sampled every few milliseconds while it runs) or it runs for `deadline`.
/// Returns the output and the highest peak resident memory seen (a lower bound of the true
/// peak: a process that ends between two samples is not seen at its peak).
pub fn run_bounded(cmd: &mut Command, deadline: Duration, max_rss: u64) -> (Output, u64) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvf");
    let ends = std::time::Instant::now() + deadline;
    let mut peak = 0;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return (child.wait_with_output().expect("collect output"), peak);
        }
        peak = peak.max(peak_rss(child.id()).unwrap_or(0));
        if peak > max_rss {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pvf used more than {max_rss} bytes of memory ({peak}): {cmd:?}");
        }
        if std::time::Instant::now() > ends {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pvf did not finish within {deadline:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
