//! What the benchmarks share: the guests under test with valid parameters and the head they
//! must produce, helpers around a `ValidationHost` and its store, and the raw-wasmtime harness
//! (an engine with the library's configuration, a WASI p2 linker, a fresh `Store` per call).
//!
//! Each bench binary includes this module (`mod common;`) and uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvf_host::{CacheStatus, CodeHash, Config, ValidationHost, ValidationParams, Verdict};
use tempfile::TempDir;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Host bindings of `wit/validation.wit` for the raw side, generated independently of the
/// library's own.
pub mod raw_bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "validation-function",
        path: "../wit",
    });
}

pub use raw_bindings::ValidationFunctionPre;
pub use raw_bindings::pvf::validation::types as wit;

/// Rounds of hashing asked of `undying` (over a 1024-byte payload).
pub const UNDYING_ROUNDS: u32 = 2000;

/// One guest under test: its code, valid parameters and the head they must produce.
pub struct Guest {
    pub name: &'static str,
    pub code: Vec<u8>,
    pub hash: CodeHash,
    pub params: ValidationParams,
    pub wit_params: wit::ValidationParams,
    pub expected_head: Vec<u8>,
}

impl Guest {
    /// Writes the guest's parameters as a `pvf validate --params` file at `path`.
    pub fn write_params_file(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                r#"{{"parent_head":"0x{}","block_data":"0x{}","relay_parent_number":{}}}"#,
                hex::encode(&self.params.parent_head),
                hex::encode(&self.params.block_data),
                self.params.relay_parent_number
            ),
        )
        .expect("write params");
    }

    /// Loads guest `name` (`adder`, `undying` or `js_validate`) and finds the head its
    /// parameters must produce with the library (checked against the known answer where there
    /// is one), so that a broken setup cannot produce silent numbers.
    pub fn load(name: &'static str) -> Self {
        let (parent_head, block_data) = match name {
            // `js_validate` has the rules of `adder`.
            "adder" | "js_validate" => (1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec()),
            "undying" => {
                let mut block_data = UNDYING_ROUNDS.to_le_bytes().to_vec();
                block_data.extend((0..1024u32).map(|i| (i * 31 + 7) as u8));
                (Vec::new(), block_data)
            }
            other => panic!("no parameters for guest {other}"),
        };
        let params = ValidationParams::new(parent_head, block_data, 7);
        let wit_params = wit_params(&params);
        let code = pvf_test_guests::bytes(name);
        let store = TempDir::new().expect("tempdir");
        let host = open_host(store.path(), Config::new());
        let outcome = host.validate(&code, &params);
        let expected_head = match outcome.verdict {
            Verdict::Valid(result) => result.head_data,
            other => panic!("{name}: expected a valid verdict, got {other:?}"),
        };
        if name != "undying" {
            assert_eq!(expected_head, 3u64.to_le_bytes(), "{name}: 1 + 2");
        }
        Self {
            name,
            hash: CodeHash::of(&code),
            code,
            params,
            wit_params,
            expected_head,
        }
    }

    /// Checks a `pvf` outcome: the expected cache path and a valid verdict with the right head.
    pub fn check_pvf(&self, outcome: &pvf_host::Outcome, cache: CacheStatus) {
        assert_eq!(outcome.cache, cache, "{}: cache status", self.name);
        match &outcome.verdict {
            Verdict::Valid(result) => {
                assert_eq!(result.head_data, self.expected_head, "{}: head", self.name)
            }
            other => panic!("{}: expected a valid verdict, got {other:?}", self.name),
        }
    }

    /// Checks a `raw` result: the right head.
    pub fn check_raw(&self, result: &wit::ValidationResult) {
        assert_eq!(
            result.head_data, self.expected_head,
            "{}: raw head",
            self.name
        );
    }
}

/// The raw side's copy of `params`.
pub fn wit_params(params: &ValidationParams) -> wit::ValidationParams {
    wit::ValidationParams {
        parent_head: params.parent_head.clone(),
        block_data: params.block_data.clone(),
        relay_parent_number: params.relay_parent_number,
        relay_parent_storage_root: params.relay_parent_storage_root.to_vec(),
    }
}

/// Opens a `ValidationHost` with `config` on the store directory `dir`.
pub fn open_host(dir: &Path, config: Config) -> ValidationHost {
    let dir = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .expect("open store dir");
    ValidationHost::new(dir, config).expect("open host")
}

/// The default configuration without the in-memory component cache: every validation goes to
/// the store. (The cache is not part of the wasmtime configuration: the engine is the same.)
pub fn disk_only() -> Config {
    Config::new().memory_cache_bytes(0)
}

/// Where `host` keeps the artifact of `code` below the store directory `root`.
pub fn artifact_path(root: &Path, host: &ValidationHost, code: &[u8]) -> PathBuf {
    root.join(host.fingerprint().to_hex())
        .join(format!("{}.artifact", CodeHash::of(code)))
}

/// Flips one byte in the middle of the file at `path` (in place).
pub fn corrupt(path: &Path) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open artifact");
    let len = file.metadata().expect("stat artifact").len();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, len / 2)
        .expect("read artifact byte");
    byte[0] ^= 0xff;
    file.write_all_at(&byte, len / 2)
        .expect("write artifact byte");
}

/// Writes `bytes` to `dir/artifact` the way the library's store does: a temporary file, fsync,
/// rename into place, fsync of the directory.
pub fn write_durably(dir: &Path, bytes: &[u8]) {
    let tmp = dir.join(".tmp-artifact");
    let mut file = std::fs::File::create(&tmp).expect("create");
    file.write_all(bytes).expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    std::fs::rename(&tmp, dir.join("artifact")).expect("rename");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// The per-call state of a raw store: a WASI context and its resource table.
pub struct RawState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Raw wasmtime: an engine with the library's configuration and a WASI p2 linker.
pub struct Raw {
    pub engine: Engine,
    linker: Linker<RawState>,
    metered: bool,
}

impl Raw {
    /// Raw wasmtime with exactly the library's (default) configuration.
    pub fn new() -> Self {
        Self::with_engine(raw_engine())
    }

    /// Raw wasmtime with the engine configuration `config`.
    pub fn with_config(config: &wasmtime::Config) -> Self {
        Self::with_engine(Engine::new(config).expect("engine"))
    }

    fn with_engine(engine: Engine) -> Self {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("add WASI to the linker");
        // With fuel enabled a store starts with none; without, `set_fuel` fails.
        let metered = Store::new(&engine, ()).set_fuel(1).is_ok();
        Self {
            engine,
            linker,
            metered,
        }
    }

    /// Compiles `code`.
    pub fn compile(&self, code: &[u8]) -> Component {
        Component::new(&self.engine, code).expect("compile")
    }

    /// Reads a precompiled artifact from `path` and deserializes it.
    pub fn load(&self, path: &Path) -> Component {
        self.deserialize(&std::fs::read(path).expect("read artifact"))
    }

    /// Deserializes artifact bytes read from a file this benchmark wrote.
    pub fn deserialize(&self, bytes: &[u8]) -> Component {
        #[allow(unsafe_code)]
        // SAFETY: the bytes come from a file written by this benchmark (this process, or the
        // bench process that started this one-shot raw process) with what
        // `Engine::precompile_component` returned for an engine with the same configuration, and
        // nothing else writes it.
        let component = unsafe { Component::deserialize(&self.engine, bytes) };
        component.expect("deserialize")
    }

    /// Links `component` against WASI and finds its `validate-block` export.
    pub fn link(&self, component: &Component) -> ValidationFunctionPre<RawState> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .expect("instantiate_pre");
        ValidationFunctionPre::new(pre).expect("the validation-function world")
    }

    /// Links `component`, instantiates it in a fresh store and calls `validate-block`.
    pub fn run(
        &self,
        component: &Component,
        params: &wit::ValidationParams,
    ) -> wit::ValidationResult {
        self.run_pre(&self.link(component), params).0
    }

    /// Instantiates `pre` in a fresh store with a default WASI context and calls
    /// `validate-block`; also returns the fuel consumed (instantiation and call) when the
    /// configuration enables fuel.
    pub fn run_pre(
        &self,
        pre: &ValidationFunctionPre<RawState>,
        params: &wit::ValidationParams,
    ) -> (wit::ValidationResult, Option<u64>) {
        self.run_pre_ctx(pre, WasiCtx::builder().build(), params)
    }

    /// [`Raw::run_pre`] with the WASI context `ctx`.
    pub fn run_pre_ctx(
        &self,
        pre: &ValidationFunctionPre<RawState>,
        ctx: WasiCtx,
        params: &wit::ValidationParams,
    ) -> (wit::ValidationResult, Option<u64>) {
        let mut store = Store::new(
            &self.engine,
            RawState {
                ctx,
                table: ResourceTable::new(),
            },
        );
        // The configuration enables epoch interruption; nothing advances this engine's epoch
        // (it stays 0), so this deadline is never reached.
        store.set_epoch_deadline(u64::MAX);
        // A store starts without fuel: give it an unlimited budget (the cost of metering does
        // not depend on the budget).
        if self.metered {
            store.set_fuel(u64::MAX).expect("fuel is enabled");
        }
        let instance = pre.instantiate(&mut store).expect("instantiate");
        let result = instance
            .pvf_validation_validate()
            .call_validate_block(&mut store, params)
            .expect("call")
            .expect("the guest accepted the candidate");
        let consumed = self
            .metered
            .then(|| u64::MAX - store.get_fuel().expect("fuel is enabled"));
        (result, consumed)
    }
}

/// The `pvf` binary the benches run: this build's, or the one `PVF_BENCH_PVF` names (e.g. a copy
/// of an earlier build, to measure before and after a change in the same conditions).
pub fn pvf_binary() -> PathBuf {
    std::env::var_os("PVF_BENCH_PVF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pvf")))
}

/// Runs `pvf --json validate CODE --params PARAMS` once, as its own process (the
/// process-per-call design), on the store `cache_dir`; stdin closed, stderr discarded.
pub fn pvf_validate_process(
    cache_dir: &Path,
    code: &Path,
    params_file: &Path,
) -> std::process::Output {
    pvf_validate_process_in("workers", cache_dir, code, params_file)
}

/// [`pvf_validate_process`] with `--isolation ISOLATION`.
pub fn pvf_validate_process_in(
    isolation: &str,
    cache_dir: &Path,
    code: &Path,
    params_file: &Path,
) -> std::process::Output {
    std::process::Command::new(pvf_binary())
        .arg("--cache-dir")
        .arg(cache_dir)
        .args(["--isolation", isolation, "--json", "validate"])
        .arg(code)
        .arg("--params")
        .arg(params_file)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .expect("run pvf")
}

/// An engine with exactly the library's (default) configuration.
pub fn raw_engine() -> Engine {
    Engine::new(&pvf_host::wasmtime_config(&Config::new())).expect("engine")
}

/// Times `f` once.
pub fn time<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let started = Instant::now();
    let r = f();
    (started.elapsed(), r)
}

/// The median of `samples` (sorted in place); the mean of the middle two for an even count.
pub fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    }
}
