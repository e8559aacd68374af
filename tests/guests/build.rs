//! Builds every guest in `guest-components/` into `<target-dir>/guests/wasm32-wasip2/release`,
//! and tells the crate where they are:
//!
//! - the Rust guests (a cargo workspace) for `wasm32-wasip2`, installing the target with rustup
//!   when it is missing; a failure fails the build;
//! - the JavaScript guest `js-validate` with node and npm (`npm ci`, then componentize-js via
//!   its `build.mjs`). Node, npm or the npm registry may be missing: then the build goes on
//!   without it, says so in a `cargo:warning`, and sets `PVF_JS_GUEST=0` so that the crate does
//!   not claim it (`JS_GUEST_BUILT`, `available()`). It is rebuilt only when its inputs
//!   (`package.json`, `package-lock.json`, `build.mjs`, `src/`, `wit/`) are newer than the
//!   output. `PVF_JS_GUEST_BUILD=off` skips it, `=require` turns a failure into a build error;
//! - the composed guests ([`COMPOSED`]): Rust guests whose imports are plugged with the exports
//!   of other Rust guests (library components) by `wac-graph`, written beside the others. An
//!   import that a plug exports must not remain, or the build fails.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Instant, SystemTime};

const TARGET: &str = "wasm32-wasip2";
/// The folder of the JavaScript guest in `guest-components/`.
const JS_GUEST_DIR: &str = "js-validate";
/// The name of its built component (`<name>.wasm`), as for the Rust guests.
const JS_GUEST_NAME: &str = "js_validate";
/// `auto` (default), `off` or `require`: how to treat the JavaScript guest.
const JS_GUEST_SWITCH: &str = "PVF_JS_GUEST_BUILD";
/// The composed guests: the name of the composed component, the guest whose imports are
/// plugged (the socket), and the library guests whose exports plug them. All are names of
/// built components (`<name>.wasm`).
const COMPOSED: &[(&str, &str, &[&str])] = &[("composed_adder", "adder_socket", &["codec_lib"])];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root exists");
    let guests = root.join("guest-components");
    let wit = root.join("wit");
    let js_guest = guests.join(JS_GUEST_DIR);
    watch_inputs(&guests, &js_guest);
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-env-changed={JS_GUEST_SWITCH}");

    ensure_target_installed();

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = workspace_target_dir(&out_dir).join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("failed to run cargo for the guests");
    if !output.status.success() {
        panic!(
            "building the guests failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=PVF_GUEST_DIR={}", dir.display());

    for &(name, socket, plugs) in COMPOSED {
        if let Err(e) = compose(&dir, name, socket, plugs) {
            panic!("composing the guest {name} from {socket} and {plugs:?} failed: {e:?}");
        }
    }

    let js_built = build_js_guest(&js_guest, &wit, &dir.join(format!("{JS_GUEST_NAME}.wasm")));
    println!("cargo:rustc-env=PVF_JS_GUEST={}", u8::from(js_built));
}

/// Writes `<dir>/<name>.wasm`: the component `<dir>/<socket>.wasm` with each of its imports that
/// one of `plugs` exports satisfied by an instance of that plug, exporting what the socket
/// exports. What is left to import (WASI, and the type-only instances such as
/// `pvf:validation/types` that every Rust guest imports) is imported once by the composition.
/// Fails when an import that a plug exports remains.
fn compose(dir: &Path, name: &str, socket: &str, plugs: &[&str]) -> anyhow::Result<()> {
    use wac_graph::{CompositionGraph, EncodeOptions, types::Package};

    let started = Instant::now();
    let mut graph = CompositionGraph::new();
    let mut register = |guest: &str| -> anyhow::Result<wac_graph::PackageId> {
        // Package names are only labels here (the components are defined, not imported).
        let label = format!("pvf-guests:{}", guest.replace('_', "-"));
        let path = dir.join(format!("{guest}.wasm"));
        let package = Package::from_file(&label, None, &path, graph.types_mut())?;
        Ok(graph.register_package(package)?)
    };
    let socket_id = register(socket)?;
    let plug_ids = plugs
        .iter()
        .map(|plug| register(plug))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plugged: Vec<String> = plug_ids
        .iter()
        .flat_map(|&plug| graph.types()[graph[plug].ty()].exports.keys().cloned())
        .collect();
    wac_graph::plug(&mut graph, plug_ids, socket_id)?;
    let bytes = graph.encode(EncodeOptions::default())?;

    // Nothing that a plug exports may be left to import.
    let mut types = wac_graph::types::Types::default();
    let composed = Package::from_bytes(name, None, bytes.clone(), &mut types)?;
    let left: Vec<&String> = types[composed.ty()]
        .imports
        .keys()
        .filter(|import| plugged.contains(import))
        .collect();
    anyhow::ensure!(left.is_empty(), "imports left after composition: {left:?}");

    let output = dir.join(format!("{name}.wasm"));
    if std::fs::read(&output).ok().as_deref() != Some(&bytes[..]) {
        // Never a half-written component under the final name.
        let partial = dir.join(format!("{name}.wasm.partial"));
        std::fs::write(&partial, &bytes)?;
        std::fs::rename(&partial, &output)?;
    }
    // Plain output, as for the JS guest (`cargo build -vv`, the build script's `output` file).
    println!(
        "composed guest {name}: {socket} + {plugs:?} in {:.2} s, {} bytes",
        started.elapsed().as_secs_f64(),
        bytes.len()
    );
    Ok(())
}

/// Tells cargo which inputs rebuild the guests: every entry of `guest-components/` except the
/// JavaScript guest's folder, and of that only its sources and package files — never its
/// `node_modules`, which `npm ci` rewrites (watching it would rerun this script on every build).
fn watch_inputs(guests: &Path, js_guest: &Path) {
    // Not the folder itself: cargo would scan it all, node_modules included. A new Rust guest
    // is a new member in guest-components/Cargo.toml, which is watched.
    let entries = std::fs::read_dir(guests).expect("guest-components/ is readable");
    for entry in entries {
        let path = entry.expect("guest-components/ is readable").path();
        if path != js_guest {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    for input in js_inputs(js_guest) {
        println!("cargo:rerun-if-changed={}", input.display());
    }
}

/// The files and folders the JavaScript guest's component is made from (besides `wit/`).
fn js_inputs(js_guest: &Path) -> Vec<PathBuf> {
    ["package.json", "package-lock.json", "build.mjs", "src"]
        .iter()
        .map(|name| js_guest.join(name))
        .collect()
}

/// Builds the JavaScript guest into `output` unless it is up to date; returns whether `output`
/// holds a component made from the current inputs. Never fails the build unless
/// `PVF_JS_GUEST_BUILD=require`: node, npm and the registry are optional.
fn build_js_guest(js_guest: &Path, wit: &Path, output: &Path) -> bool {
    let switch = std::env::var(JS_GUEST_SWITCH).unwrap_or_default();
    if switch == "off" {
        println!("cargo:warning=JS guest {JS_GUEST_NAME}: skipped ({JS_GUEST_SWITCH}=off)");
        return false;
    }
    match try_build_js_guest(js_guest, wit, output) {
        Ok(()) => true,
        Err(why) => {
            // A stale component must not pass for the current one.
            let _ = std::fs::remove_file(output);
            if switch == "require" {
                panic!("building the JS guest {JS_GUEST_NAME} failed: {why}");
            }
            for line in format!(
                "JS guest {JS_GUEST_NAME} not built (the Rust guests are; `available()` leaves it out): {why}"
            )
            .lines()
            {
                println!("cargo:warning={line}");
            }
            println!(
                "cargo:warning=to retry, touch {} (or set {JS_GUEST_SWITCH}=require to see it \
                 fail, =off to silence this)",
                js_guest.join("package.json").display()
            );
            false
        }
    }
}

fn try_build_js_guest(js_guest: &Path, wit: &Path, output: &Path) -> Result<(), String> {
    let mut inputs = js_inputs(js_guest);
    inputs.push(wit.to_path_buf());
    let newest_input = inputs
        .iter()
        .filter_map(|p| newest_mtime(p))
        .max()
        .ok_or_else(|| format!("no sources in {}", js_guest.display()))?;
    if mtime(output).is_some_and(|built| built >= newest_input) {
        return Ok(()); // Up to date: no npm, no node.
    }

    for tool in ["node", "npm"] {
        run(Command::new(tool).arg("--version"), js_guest)
            .map_err(|e| format!("`{tool}` is not usable ({e}); install node and npm"))?;
    }

    // Install componentize-js (and its engine, a wizer binary from its npm package) unless
    // node_modules already matches the package files. Install scripts are not needed (none of
    // the dependencies has one) and are disabled, so nothing is fetched from elsewhere.
    let lock = js_guest.join("package-lock.json");
    let installed = js_guest.join("node_modules/.package-lock.json");
    let package_files = [js_guest.join("package.json"), lock.clone()];
    let installed_fresh = mtime(&installed).is_some_and(|at| {
        package_files
            .iter()
            .filter_map(|p| mtime(p))
            .all(|changed| changed <= at)
    });
    if !installed_fresh {
        let started = Instant::now();
        // `npm install` writes the lockfile when there is none (commit it).
        let verb = if lock.exists() { "ci" } else { "install" };
        let mut npm = Command::new("npm");
        npm.arg(verb).args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--prefer-offline",
            // Fail within seconds when the registry refuses connections (npm's default
            // back-off takes over a minute).
            "--fetch-retries=1",
            "--fetch-retry-mintimeout=2000",
            "--fetch-retry-maxtimeout=10000",
            "--fetch-timeout=120000",
        ]);
        run(&mut npm, js_guest)
            .map_err(|e| format!("npm failed (is the npm registry reachable?): {e}"))?;
        // Plain output (not a warning, which cargo would repeat on every build): `cargo build
        // -vv` shows it, and it stays in the build script's `output` file.
        println!(
            "JS guest {JS_GUEST_NAME}: npm {verb} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let started = Instant::now();
    run(
        Command::new("node").arg("build.mjs").arg(output).arg(wit),
        js_guest,
    )
    .map_err(|e| format!("componentize-js failed: {e}"))?;
    let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    println!(
        "JS guest {JS_GUEST_NAME}: componentized in {:.1} s, {:.1} MB",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    Ok(())
}

/// Runs `cmd` in `dir`; an error tells why, with the tail of its output.
fn run(cmd: &mut Command, dir: &Path) -> Result<Output, String> {
    let output = cmd
        .current_dir(dir)
        .output()
        .map_err(|e| format!("could not run {:?}: {e}", cmd.get_program()))?;
    if output.status.success() {
        return Ok(output);
    }
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // The first lines (npm: the error code) and the last (node: the exception).
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = if lines.len() <= 10 {
        lines.join("\n")
    } else {
        format!(
            "{}\n...\n{}",
            lines[..4].join("\n"),
            lines[lines.len() - 5..].join("\n")
        )
    };
    let args: Vec<&OsStr> = cmd.get_args().collect();
    Err(format!(
        "{:?} {args:?} exited with {}:\n{tail}",
        cmd.get_program(),
        output.status
    ))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification time of `path` and, for a folder, of everything below it.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let own = mtime(path)?;
    let Ok(entries) = std::fs::read_dir(path) else {
        return Some(own);
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .chain([own])
        .max()
}

/// Installs the wasm32-wasip2 standard library with rustup when the toolchain lacks it.
fn ensure_target_installed() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("the wasm32-wasip2 target is missing and rustup could not be run to add it");
    assert!(
        status.success(),
        "`rustup target add {TARGET}` failed: {status}"
    );
}

/// The target directory this build writes to: the parent of the profile directory that
/// holds `build/<pkg>/out`.
fn workspace_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(Path::to_path_buf)
        .expect("OUT_DIR lies below <target>/<profile>/build")
}
