//! Compile bombs: small, valid components whose *compilation* (not execution) is expensive, for
//! the tests and benchmarks of preparation limits (memory cap, CPU-time cap).
//!
//! Each bomb is the bundled [`adder`](crate::bytes) component plus one appended core-module
//! section (component section id 1) holding one pathological function. Wasmtime compiles every
//! core module of a component, instantiated or not, so the bomb goes off in
//! `Engine::precompile_component` / `Component::new`; the component still targets the world
//! exactly as `adder` does (the extra module is never instantiated), so a small version of a
//! bomb prepares and validates like `adder`.
//!
//! Every function here is deterministic: the same arguments give the same bytes.
//!
//! Measure a bomb with the `bomb_cost` example of this crate (in-process, the host's exact
//! engine configuration):
//!
//! ```text
//! cargo run -p pvf-test-guests --example bomb_cost -- memory
//! cargo run -p pvf-test-guests --example bomb_cost -- cpu
//! ```
//!
//! **Never compile the full bombs without a cap** (`ulimit -v`, `prlimit --as=`, or the host's
//! sandboxed preparation): the memory bomb takes about 2 GB.
//!
//! Figures below were measured on the development machine (x86-64, 2 shared cores, wasmtime
//! 48.0.8 / Cranelift 0.135.8, dev profile with dependencies at opt-level 2), compiling with
//! `pvf_host::wasmtime_config(&pvf_host::Config::new().pooling(false))`.

use wasm_encoder::{
    BlockType, CodeSection, Encode, ExportKind, ExportSection, Function, FunctionSection,
    Instruction, Module, TypeSection, ValType,
};

/// The most locals a wasm function may declare (wasmparser's limit); more fails validation.
pub const MAX_LOCALS: u32 = 50_000;

/// Locals of [`memory_bomb_component`].
pub const MEMORY_BOMB_LOCALS: u32 = MAX_LOCALS;

/// Empty blocks of [`memory_bomb_component`].
pub const MEMORY_BOMB_BLOCKS: u32 = 10_000;

/// Loop nesting depth of [`cpu_bomb_component`].
pub const CPU_BOMB_DEPTH: u32 = 1_600;

/// The memory bomb: [`memory_bomb_with`]`(`[`MEMORY_BOMB_LOCALS`]`, `[`MEMORY_BOMB_BLOCKS`]`)`.
///
/// Measured: 266,691 bytes. Compiling it peaks at 1,929 MiB RSS (`adder` alone: 17 MiB; `pvf
/// prepare`: 1,934 MiB) after 0.44 s of user CPU time plus 0.9–2.6 s of system time (the kernel
/// zero-filling ~490,000 pages; it varies with the machine's load), 1.7–4.5 s wall, the same
/// with `RAYON_NUM_THREADS=1` (one function: one compile thread). Under
/// `prlimit --as=1073741824`, `pvf prepare` aborts ("memory allocation … failed", SIGABRT)
/// after 0.6 s CPU, 0.7 s wall, at 816 MiB RSS. It does *not* exceed a 4 GiB cap: for that use
/// `memory_bomb_with(50_000, 24_000)` (4.6 GB).
pub fn memory_bomb_component() -> Vec<u8> {
    memory_bomb_with(MEMORY_BOMB_LOCALS, MEMORY_BOMB_BLOCKS)
}

/// A memory bomb of `locals` locals (at most [`MAX_LOCALS`]) and `blocks` empty blocks: the
/// `adder` component plus [`memory_bomb_module`]. Compiling it takes about
/// `4 × locals × blocks` bytes on top of the compiler's usual needs; the component is about
/// `adder` (53 KB) `+ 3 × blocks + 3–4 × locals` bytes.
///
/// Measured (bytes; peak RSS of the whole compiling process, `adder` alone being 17 MiB; CPU
/// time, user + system):
///
/// | locals, blocks | bytes | peak RSS | CPU |
/// |---|---|---|---|
/// | 10, 10 | 53,245 | 17 MiB | 0.13 s (as `adder`) |
/// | 5,000, 5,000 | 83,074 | 112 MiB | 0.36 s |
/// | 20,000, 5,000 | 131,691 | 399 MiB | 0.42 s |
/// | 50,000, 8,000 | 260,691 | 1,547 MiB | 1.1 s (0.35 + 0.73) |
/// | 50,000, 10,000 (the default) | 266,691 | 1,929 MiB | 1.4–3.0 s (0.44 + 0.9–2.6) |
/// | 50,000, 20,000 | 296,691 | 3,838 MiB | 5.7 s (0.97 + 4.74) |
/// | 50,000, 24,000 | 308,691 | 4,601 MiB | 5.5 s (1.25 + 4.24) |
///
/// Small versions (say `(10, 10)`) prepare, pre-check and link like `adder`.
///
/// # Panics
/// When `locals` is more than [`MAX_LOCALS`].
pub fn memory_bomb_with(locals: u32, blocks: u32) -> Vec<u8> {
    adder_with_core_module(&memory_bomb_module(locals, blocks))
}

/// The core module of a memory bomb: one function with `locals` i32 locals whose body is
/// `blocks` empty `block … end` pairs, then `i32.const 0`, `local.tee` of every local, `drop`.
///
/// Why it blows up: Cranelift's SSA builder (`cranelift_frontend::ssa::SSABuilder`) keeps, for
/// every variable (a wasm local), a dense map from block number to its definition in that block
/// (`SecondaryMap<Variable, SecondaryMap<Block, PackedOption<Value>>>`). Each wasm `block` makes
/// one Cranelift block, so after `blocks` blocks every `local.tee` writes entry number ≈ `blocks`
/// of its variable's map, which grows it to that length, zero-filled: 4 bytes × `blocks` per
/// local, all written (resident), in a memset, and held until the function is translated. The
/// stored values are dead, so later passes cost nothing. More blocks cost CPU quadratically (the
/// egraph pass on a chain of `blocks` blocks), hence the most locals and ten thousand blocks.
///
/// # Panics
/// When `locals` is more than [`MAX_LOCALS`].
pub fn memory_bomb_module(locals: u32, blocks: u32) -> Vec<u8> {
    assert!(
        locals <= MAX_LOCALS,
        "a function has at most {MAX_LOCALS} locals"
    );
    let locals = locals.max(1);
    one_function_module(locals, |f| {
        for _ in 0..blocks {
            f.instruction(&Instruction::Block(BlockType::Empty))
                .instruction(&Instruction::End);
        }
        f.instruction(&Instruction::I32Const(0));
        for i in 0..locals {
            f.instruction(&Instruction::LocalTee(i));
        }
        f.instruction(&Instruction::Drop);
    })
}

/// The CPU bomb: [`cpu_bomb_with`]`(`[`CPU_BOMB_DEPTH`]`)`.
///
/// Measured: 64,402 bytes. Compiling it takes 9.8 s of CPU time (user; 12–15 s wall on the busy
/// machine) while peak RSS stays at 61–71 MiB; one function, so one compile thread does it all:
/// the same with `RAYON_NUM_THREADS=1`. Under `prlimit --cpu=2`, `pvf prepare` is killed after
/// 1.96 s CPU at 38 MiB RSS.
pub fn cpu_bomb_component() -> Vec<u8> {
    cpu_bomb_with(CPU_BOMB_DEPTH)
}

/// A CPU bomb of `depth` nested loops: the `adder` component plus [`cpu_bomb_module`]. Compile
/// time grows with the cube of `depth` while memory grows linearly; the component is
/// `adder` (53 KB) `+ 7 × depth` bytes.
///
/// Measured CPU time (peak RSS of the compiling process): depth 10: 0.13 s (17 MiB, as
/// `adder`); 1,000: 2.7 s (46 MiB); 1,200: 4.4 s (52 MiB); 1,400: 6.7 s (59 MiB); 1,600 (the
/// default): 9.8 s (63 MiB); 3,000: 62 s (107 MiB). Small depths prepare, pre-check and link
/// like `adder`.
pub fn cpu_bomb_with(depth: u32) -> Vec<u8> {
    adder_with_core_module(&cpu_bomb_module(depth))
}

/// The core module of a CPU bomb: one function of `depth` nested `loop`s, the innermost one
/// incrementing local 0, each loop branching back (`br_if 0`) while local 0 is non-zero.
///
/// Why it is slow: Cranelift's egraph elaborator decides for every pure instruction how far out
/// of the enclosing loops it may be hoisted (`Elaborator::process_elab_stack`): for each argument
/// it scans the loop stack from the outermost loop and asks `LoopAnalysis::is_in_loop`, which
/// walks the loop tree up from the argument's block. That is O(depth²) per instruction, and
/// every level holds a few pure instructions (wasmtime's fuel accounting and epoch check in
/// each loop header, the branch condition), so O(depth³) in all, with only O(depth) memory.
pub fn cpu_bomb_module(depth: u32) -> Vec<u8> {
    one_function_module(1, |f| {
        for _ in 0..depth {
            f.instruction(&Instruction::Loop(BlockType::Empty));
        }
        f.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::I32Const(1))
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::LocalSet(0));
        for _ in 0..depth {
            f.instruction(&Instruction::LocalGet(0))
                .instruction(&Instruction::BrIf(0))
                .instruction(&Instruction::End);
        }
    })
}

/// The bundled `adder` component with `core_module` appended as one more core-module section
/// (component section id 1). Wasmtime validates and compiles it with the rest of the component
/// even though nothing instantiates it.
///
/// # Panics
/// When `adder` was not built (see [`crate::bytes`]).
pub fn adder_with_core_module(core_module: &[u8]) -> Vec<u8> {
    let mut component = crate::bytes("adder");
    component.push(1); // section id 1: a core module
    core_module.len().encode(&mut component);
    component.extend_from_slice(core_module);
    component
}

/// A core module of one exported function `bomb: () -> ()` with `locals` i32 locals and the
/// instructions `body` writes (the final `end` is added here).
fn one_function_module(locals: u32, body: impl FnOnce(&mut Function)) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut exports = ExportSection::new();
    exports.export("bomb", ExportKind::Func, 0);
    let mut f = Function::new([(locals, ValType::I32)]);
    body(&mut f);
    f.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&f);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&exports)
        .section(&code);
    module.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bombs_are_deterministic_and_small() {
        assert_eq!(memory_bomb_with(100, 100), memory_bomb_with(100, 100));
        assert_eq!(cpu_bomb_with(10), cpu_bomb_with(10));
        let adder = crate::bytes("adder").len();
        // The byte counts the docs state.
        assert!(memory_bomb_component().len() < adder + 300_000);
        assert!(cpu_bomb_component().len() < adder + 12_000);
    }

    #[test]
    fn bomb_is_adder_plus_one_core_module_section() {
        let adder = crate::bytes("adder");
        let module = cpu_bomb_module(3);
        let bomb = adder_with_core_module(&module);
        assert_eq!(&bomb[..adder.len()], &adder[..]);
        assert_eq!(bomb[adder.len()], 1);
        assert!(bomb.ends_with(&module));
        assert!(module.starts_with(b"\0asm"));
    }

    /// Small bombs are valid components that compile with the host's engine configuration.
    #[test]
    fn small_bombs_compile_with_the_host_config() {
        let config = pvf_host::wasmtime_config(&pvf_host::Config::new().pooling(false));
        let engine = wasmtime::Engine::new(&config).unwrap();
        for bomb in [memory_bomb_with(10, 10), cpu_bomb_with(10)] {
            wasmtime::component::Component::new(&engine, &bomb).unwrap();
        }
    }
}
