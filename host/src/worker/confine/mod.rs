//! The worker's OS confinement (placeholder: filled in by the confinement work).

use std::ffi::OsString;
use std::process::ExitCode;

/// The probe entry: applies the production confinement, then tries what `args` names.
pub fn probe_main(_args: &[OsString]) -> ExitCode {
    ExitCode::from(2)
}
