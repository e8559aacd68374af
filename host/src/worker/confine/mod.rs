//! The worker's OS confinement (placeholder until the layers land: reports every layer as
//! unavailable).

use std::ffi::OsString;
use std::process::ExitCode;

/// Which layers to apply.
#[derive(Debug, Clone, Default)]
pub struct ConfinePolicy {}

impl ConfinePolicy {
    /// Every layer.
    pub fn production() -> Self {
        Self {}
    }
}

/// Whether a layer is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerState {
    /// In force.
    Active,
    /// Not in force, and why.
    Unavailable(String),
}

/// One layer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStatus {
    /// The layer.
    pub name: &'static str,
    /// Its state.
    pub state: LayerState,
}

/// Every layer's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfineReport {
    /// The layers, in the order they were applied.
    pub layers: Vec<LayerStatus>,
}

/// Phase 1.
pub fn confine_process(_policy: &ConfinePolicy) -> ConfineReport {
    ConfineReport {
        layers: vec![LayerStatus {
            name: "landlock",
            state: LayerState::Unavailable("not built yet".into()),
        }],
    }
}

/// Phase 2.
pub fn restrict_syscalls(_policy: &ConfinePolicy) -> LayerStatus {
    LayerStatus {
        name: "seccomp",
        state: LayerState::Unavailable("not built yet".into()),
    }
}

/// The probe entry: applies the production confinement, then tries what `args` names.
pub fn probe_main(_args: &[OsString]) -> ExitCode {
    ExitCode::from(2)
}
