//! The execution-environment id: which rules a verdict was reached under.
//!
//! Two honest nodes reach the same verdict on the same candidate only if they run the same
//! contract, the same extensions at the same prices, and the same verdict-bearing limits. The
//! [`ExecutionEnvironment`] is a blake3 hash over exactly those, with the parts kept so that two
//! operators whose nodes disagree can see at once *what* differs (`pvf doctor` prints them).
//!
//! In the id (each changes what some candidate's verdict is):
//!
//! - the contract version (`pvf:validation@0.1.0`);
//! - each registered extension: its id, its digest, and its functions' names, shapes and prices;
//! - the fuel budget; linear-memory, table, instance and wasm-stack limits; the code-size limit;
//! - the pre-check's strict compile limits (exceeding them is `invalid`);
//! - the host's fixed guest-facing constants: the result and params limits, the host-call price,
//!   the random-bytes cap, the virtual clocks, the resource-table and handle limits, the reason
//!   cap, the hostcall data budget;
//! - wasmtime's compatibility hash of the engine configuration (its version, features, tunables
//!   and target ISA flags — so the id also differs between CPUs with different features; the
//!   parts say when that is the only difference).
//!
//! Not in the id (they change *whether* this node can answer in time, never which answer):
//! timeouts, queue sizes, pool and cache sizes, the isolation mode, the lenient preparation
//! limits, the store's location and options.

use std::fmt;

use wasmtime::Engine;

use crate::config::Config;
use crate::env::{engine_digest, hex_string};
use crate::execute::{
    MAX_COMPONENT_HANDLES, MAX_HOST_RESOURCES, MAX_REASON_BYTES, hostcall_budget,
};
use crate::guest_wasi::{
    HOST_CALL_FUEL, MAX_RANDOM_BYTES_PER_CALL, MONOTONIC_STEP_NANOS, OUTPUT_CAPTURE_BYTES,
    WALL_CLOCK_SECS,
};
use crate::limits::{
    MAX_BLOCK_DATA_BYTES, MAX_HEAD_DATA_BYTES, MAX_HORIZONTAL_MESSAGE_BYTES,
    MAX_HORIZONTAL_MESSAGES, MAX_MESSAGES_TOTAL_BYTES, MAX_UPWARD_MESSAGE_BYTES,
    MAX_UPWARD_MESSAGES,
};

/// The contract every guest implements, the first part of the id.
pub const CONTRACT_VERSION: &str = "pvf:validation@0.1.0";

/// The id of an execution environment: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvironmentId([u8; 32]);

impl EnvironmentId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id in 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex_string(&self.0)
    }
}

impl fmt::Display for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EnvironmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvironmentId({})", self.to_hex())
    }
}

/// One named input of the id, with its value as text (what `pvf doctor` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentPart {
    /// What the part is, e.g. `fuel` or `extension pvf:crypto@0.1.0`.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// The execution environment of a host: its id and the parts it was hashed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEnvironment {
    id: EnvironmentId,
    parts: Vec<EnvironmentPart>,
}

impl ExecutionEnvironment {
    /// The environment of a host opened with `config` on `engine` (an engine made from the same
    /// config).
    pub(crate) fn of(engine: &Engine, config: &Config) -> Self {
        let mut parts = Vec::new();
        let mut part = |name: &str, value: String| {
            parts.push(EnvironmentPart {
                name: name.to_string(),
                value,
            })
        };
        part("contract", CONTRACT_VERSION.to_string());
        for (id, identity) in config.extensions.identity() {
            part(&format!("extension {id}"), hex_string(&identity));
        }
        part("fuel", config.fuel.to_string());
        part("max_memory_bytes", config.max_memory_bytes.to_string());
        part("max_table_elements", config.max_table_elements.to_string());
        part("max_instances", config.max_instances.to_string());
        part(
            "max_wasm_stack_bytes",
            config.max_wasm_stack_bytes.to_string(),
        );
        part("max_code_bytes", config.max_code_bytes.to_string());
        let strict = config.precheck_limits;
        part(
            "precheck_limits",
            format!(
                "cpu={}s heap={} threads={}",
                strict.cpu_secs(),
                strict.memory_bytes,
                strict.threads
            ),
        );
        part(
            "result_limits",
            format!(
                "head={MAX_HEAD_DATA_BYTES} upward={MAX_UPWARD_MESSAGES}x{MAX_UPWARD_MESSAGE_BYTES} \
                 horizontal={MAX_HORIZONTAL_MESSAGES}x{MAX_HORIZONTAL_MESSAGE_BYTES} \
                 messages_total={MAX_MESSAGES_TOTAL_BYTES} block_data={MAX_BLOCK_DATA_BYTES} \
                 reason={MAX_REASON_BYTES}"
            ),
        );
        part(
            "host_calls",
            format!(
                "call_fuel={HOST_CALL_FUEL} random_cap={MAX_RANDOM_BYTES_PER_CALL} \
                 output_cap={OUTPUT_CAPTURE_BYTES} resources={MAX_HOST_RESOURCES} \
                 handles={MAX_COMPONENT_HANDLES} hostcall_budget={}",
                hostcall_budget(config)
            ),
        );
        part(
            "clocks",
            format!("wall={WALL_CLOCK_SECS}s monotonic_step={MONOTONIC_STEP_NANOS}ns"),
        );
        part("wasmtime", hex_string(&engine_digest(engine)));
        Self::from_parts(parts)
    }

    /// The environment a host opened with `config` would run in, without opening one (for
    /// tools such as `pvf doctor`); a host reports its own with
    /// [`ValidationHost::environment`](crate::ValidationHost::environment).
    pub fn for_config(config: &Config) -> Result<Self, crate::HostError> {
        config
            .extensions
            .check()
            .map_err(|e| crate::HostError::Extension(e.to_string()))?;
        let engine = crate::engine::new_engine(config)
            .map_err(|e| crate::HostError::Engine(format!("{e:#}")))?;
        Ok(Self::of(&engine, config))
    }

    /// The environment hashed from `parts`, in order.
    fn from_parts(parts: Vec<EnvironmentPart>) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("pvf-host execution environment v1");
        for p in &parts {
            for text in [&p.name, &p.value] {
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
        Self {
            id: EnvironmentId(*hasher.finalize().as_bytes()),
            parts,
        }
    }

    /// The id.
    pub fn id(&self) -> EnvironmentId {
        self.id
    }

    /// What the id was hashed from, in order.
    pub fn parts(&self) -> &[EnvironmentPart] {
        &self.parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CompileLimits;
    use crate::engine::new_engine;
    use std::time::Duration;

    fn id(config: &Config) -> EnvironmentId {
        let engine = new_engine(config).unwrap();
        ExecutionEnvironment::of(&engine, config).id()
    }

    #[test]
    fn the_id_is_stable_and_ignores_execution_only_settings() {
        let base = Config::new();
        assert_eq!(id(&base), id(&Config::new()));
        let execution_only = Config::new()
            .execution_timeout(Duration::from_secs(12))
            .memory_cache_bytes(0)
            .pooling(false)
            .isolation(crate::Isolation::InProcess)
            .prepare_limits(CompileLimits::lenient().threads(1));
        assert_eq!(id(&base), id(&execution_only));
    }

    #[test]
    fn the_id_changes_with_every_verdict_bearing_setting() {
        let base = id(&Config::new());
        let changed = [
            Config::new().fuel(1),
            Config::new().max_memory_bytes(1 << 20),
            Config::new().max_table_elements(10),
            Config::new().max_instances(3),
            Config::new().max_wasm_stack_bytes(512 << 10),
            Config::new().max_code_bytes(1 << 20),
            Config::new().precheck_limits(CompileLimits::strict().memory_bytes(1 << 29)),
            Config::new().crypto(false),
        ];
        for (i, config) in changed.iter().enumerate() {
            assert_ne!(id(config), base, "setting {i} does not change the id");
        }
    }

    #[test]
    fn the_parts_name_the_contract_and_the_extensions() {
        let config = Config::new();
        let engine = new_engine(&config).unwrap();
        let env = ExecutionEnvironment::of(&engine, &config);
        assert_eq!(env.parts()[0].value, CONTRACT_VERSION);
        assert!(
            env.parts()
                .iter()
                .any(|p| p.name == "extension pvf:crypto@0.1.0")
        );
        assert_eq!(env.id().to_hex().len(), 64);
        assert_eq!(env, ExecutionEnvironment::from_parts(env.parts().to_vec()));
    }
}
