//! `ailuro-fuzz TARGET|all [--iterations N] [--seed S] [--corpus DIR] [--timeout SECS] [--out DIR]`
//! `ailuro-fuzz TARGET --reproduce FILE`
//! `ailuro-fuzz --list`
//!
//! Long, on-demand fuzzing runs of the same targets the CI test runs briefly. Exit status 0 when
//! no failure was found, 1 when some were (inputs saved, see the report), 2 on usage errors.

use ailuro_toolio::{errln, outln};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ailuro_fuzz::{targets, Config, Limits};

fn usage() -> String {
    let names: Vec<&str> = targets::all().iter().map(|t| t.name()).collect();
    format!(
        "usage: ailuro-fuzz TARGET|all [--iterations N] [--seed S] [--corpus DIR] [--timeout SECS] \
         [--out DIR] [--max-failures N] [--huge-ram-claims]\n       ailuro-fuzz TARGET --reproduce FILE\n       \
         ailuro-fuzz --list\ntargets: {}",
        names.join(", ")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            errln!("ailuro-fuzz: {e}\n{}", usage());
            ExitCode::from(2)
        }
    }
}

fn num(v: Option<&String>, what: &str) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{what} needs a value"))?;
    let r = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("{what}: not a number: {v}"))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let mut target = None;
    let mut cfg = Config {
        seed: 1,
        iterations: 10_000,
        out_dir: ailuro_fuzz::default_out_dir(),
        limits: Limits::default(),
        corpus_dir: None,
        max_failures: 20,
    };
    let mut reproduce = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => {
                for t in targets::all() {
                    outln!("{}", t.name());
                }
                return Ok(ExitCode::SUCCESS);
            }
            "-h" | "--help" => {
                outln!("{}", usage());
                return Ok(ExitCode::SUCCESS);
            }
            "--iterations" | "-n" => cfg.iterations = num(it.next(), a)?,
            "--seed" | "-s" => cfg.seed = num(it.next(), a)?,
            "--timeout" => cfg.limits.timeout = Duration::from_secs(num(it.next(), a)?),
            "--max-failures" => cfg.max_failures = num(it.next(), a)? as usize,
            "--corpus" => cfg.corpus_dir = Some(PathBuf::from(it.next().ok_or("--corpus needs a directory")?)),
            "--out" => cfg.out_dir = PathBuf::from(it.next().ok_or("--out needs a directory")?),
            "--huge-ram-claims" => {
                ailuro_fuzz::snapshot::HUGE_RAM_CLAIMS.store(true, std::sync::atomic::Ordering::Relaxed)
            }
            "--reproduce" => reproduce = Some(PathBuf::from(it.next().ok_or("--reproduce needs a file")?)),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if target.is_none() => target = Some(s.to_string()),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    let target = target.ok_or("no target given")?;
    if let Some(file) = reproduce {
        let input = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let r = ailuro_fuzz::reproduce(&target, &input)?;
        outln!("{target}: {r:?}");
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<_> = if target == "all" {
        targets::all()
    } else {
        vec![targets::by_name(&target).ok_or_else(|| format!("unknown target {target}"))?]
    };
    let mut failures = 0;
    for t in list {
        let s = ailuro_fuzz::run_target(t, &cfg);
        outln!("{}", s.summary());
        for f in &s.failures {
            outln!(
                "  {:?} at iteration {}: {}\n    input: {}",
                f.kind,
                f.iteration,
                f.message.lines().next().unwrap_or(""),
                f.input.display()
            );
        }
        failures += s.failures.len();
    }
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
