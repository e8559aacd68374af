//! Landlock: a ruleset that handles every access right the `landlock` crate knows (filesystem,
//! TCP and UDP ports, scopes) and grants none. Once restricted, the worker can open no file or
//! directory (not even for reading), execute nothing, bind or connect no TCP port, connect to no
//! abstract unix socket and signal no process outside its sandbox.
//!
//! Best effort: the kernel enforces the rights its ABI knows (the crate drops the others), so the
//! report names the kernel's ABI. Applied while the worker is single-threaded; threads started
//! later inherit the domain.

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, LandlockStatus, RestrictionStatus, Ruleset, RulesetAttr,
    RulesetError, RulesetStatus, Scope,
};

use super::LayerStatus;

const NAME: &str = "landlock";

/// The newest ABI whose rights are requested (the newest the crate knows).
const NEWEST: ABI = ABI::V10;

/// Restricts the calling thread (and its future threads and children) to nothing.
pub(super) fn restrict() -> LayerStatus {
    match restrict_to_nothing() {
        Ok(status) => describe(&status),
        Err(e) => LayerStatus::unavailable(NAME, e.to_string()),
    }
}

fn restrict_to_nothing() -> Result<RestrictionStatus, RulesetError> {
    Ruleset::default()
        .handle_access(AccessFs::from_all(NEWEST))?
        .handle_access(AccessNet::from_all(NEWEST))?
        .scope(Scope::from_all(NEWEST))?
        .create()?
        .restrict_self()
}

fn describe(status: &RestrictionStatus) -> LayerStatus {
    let abi = match status.landlock {
        LandlockStatus::NotEnabled => {
            return LayerStatus::unavailable(
                NAME,
                "supported by the kernel but not enabled at boot",
            );
        }
        LandlockStatus::NotImplemented => {
            return LayerStatus::unavailable(NAME, "not built into this kernel");
        }
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => match kernel_abi {
            Some(kernel) => format!("kernel ABI {kernel}, rights of ABI {effective_abi} handled"),
            None => format!("ABI {effective_abi}"),
        },
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => LayerStatus::active(NAME, format!("{abi}, fully enforced")),
        RulesetStatus::PartiallyEnforced => LayerStatus::active(
            NAME,
            format!(
                "{abi}: every right the kernel knows is handled and none granted; the rights of \
                 newer ABIs (up to {NEWEST}) are unknown to it"
            ),
        ),
        RulesetStatus::NotEnforced => {
            LayerStatus::unavailable(NAME, format!("{abi}: the ruleset could not be enforced"))
        }
    }
}
