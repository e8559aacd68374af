//! Out-of-process preparation: untrusted code is compiled in a confined child process.
//!
//! The host side (this file) spawns the worker, checks it is the same build (handshake), hands
//! it one job, enforces the wall-clock backstop and classifies what comes back. The worker side
//! (`child`) confines itself (`confine`), compiles, and reports. Workers only compute: they never
//! touch the store and never decide a verdict class.

pub mod confine;

use std::ffi::OsString;
use std::process::ExitCode;

/// The first argument that makes the `pvf` binary a confinement probe (tests, `pvf doctor`).
pub const PROBE_ARG: &str = "__pvf-confine-probe";

/// Runs the worker or probe entry when the process was started as one (its first argument says
/// so), returning its exit code; `None` for an ordinary start. Call it first thing in `main` of
/// the binary that serves as the worker executable.
pub fn entry() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first() {
        Some(first) if first == PROBE_ARG => Some(confine::probe_main(&args[1..])),
        _ => None,
    }
}
