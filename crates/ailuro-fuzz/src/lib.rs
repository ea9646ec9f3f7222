//! In-process, seeded, structure-aware mutation fuzzing of every Ailuro parser of untrusted input.
//!
//! No external fuzzing engine: a deterministic PRNG ([`rng`]) drives mutators that understand the
//! container formats ([`framed`] for the nondet log and the plugin log, [`snapshot`] for
//! snapshots and recording pairs, [`container`] for `.rr` archives, [`kernels`] for multiboot ELF
//! and bzImage) well enough to re-compress payloads and repair checksums, so that mutations reach
//! the decoders behind them; plus generic byte/text mutators ([`mutators`]).
//!
//! The property for every target ([`targets`]): the parser returns `Ok` or a clean `Err`; it never
//! panics (caught, with message, location and backtrace), never hangs (a watchdog bounds each
//! input) and never makes an absurd allocation (the global allocator [`alloc::TrackingAlloc`]
//! watches single requests). Failing inputs are saved under `target/ailuro-fuzz/failures/`
//! (see [`default_out_dir`]).
//!
//! Run in CI by `tests/fuzz_ci.rs` (bounded iterations, fixed seed; scale with
//! `AILURO_FUZZ_ITERS`), and on demand with the `ailuro-fuzz` binary:
//! `ailuro-fuzz TARGET|all --iterations N --seed S [--corpus DIR]`.

#![warn(missing_docs)]

pub mod alloc;
pub mod container;
pub mod corpus;
pub mod framed;
pub mod harness;
pub mod kernels;
pub mod mutators;
pub mod rng;
pub mod snapshot;
pub mod targets;

pub use harness::{run_target, Config, Failure, FailureKind, Limits, Stats};

#[global_allocator]
static ALLOC: alloc::TrackingAlloc = alloc::TrackingAlloc;

/// Default directory for failing inputs: `target/ailuro-fuzz/failures` of this workspace
/// (`CARGO_TARGET_DIR` if set at run time), overridable with `AILURO_FUZZ_OUT`.
pub fn default_out_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("AILURO_FUZZ_OUT") {
        return d.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("ailuro-fuzz").join("failures")
}

/// Run one input through target `name` once, outside the harness (for reproducing a saved
/// failure under a debugger): returns the target's result; panics propagate.
pub fn reproduce(name: &str, input: &[u8]) -> Result<Result<(), String>, String> {
    let t = targets::by_name(name).ok_or_else(|| format!("unknown target {name}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ctx = targets::Ctx::new(dir.path().to_path_buf());
    let _ = t.seeds(&mut ctx); // sets up what the target needs in its work directory
    Ok(t.run(input, &mut ctx))
}
