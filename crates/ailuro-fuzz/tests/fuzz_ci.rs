//! Bounded, seeded, deterministic fuzzing of every parser of untrusted input, as a CI test.
//!
//! `cargo test -p ailuro-fuzz --release -- --nocapture` prints one summary line per target.
//! Environment:
//! * `AILURO_FUZZ_ITERS`: inputs per target (default 3000; about 20 s on two cores in release).
//! * `AILURO_FUZZ_SEED`: seed (default 1). Failing inputs are saved under
//!   `target/ailuro-fuzz/failures/TARGET/` with a `.txt` describing how to reproduce them.
//! * `AILURO_FUZZ_JOBS`: targets run in parallel (default: available cores, at most 4).

use std::sync::{Arc, Mutex};

use ailuro_fuzz::{targets, Config, Limits, Stats};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn config(iterations: u64) -> Config {
    Config {
        seed: env_u64("AILURO_FUZZ_SEED", 1),
        iterations,
        out_dir: ailuro_fuzz::default_out_dir(),
        limits: Limits::default(),
        corpus_dir: None,
        max_failures: 5,
    }
}

/// Targets whose errors must include some from decoders behind every checksum (proof that the
/// structure-aware mutators repair checksums and re-compress correctly).
const MUST_GO_DEEP: &[&str] = &["log", "snapshot", "recording", "plog", "replay"];

#[test]
fn every_parser_returns_ok_or_a_clean_error() {
    let iterations = env_u64("AILURO_FUZZ_ITERS", 3000);
    let jobs =
        env_u64("AILURO_FUZZ_JOBS", std::thread::available_parallelism().map_or(2, |n| n.get().min(4) as u64)).max(1);
    let cfg = config(iterations);
    // Build the corpus once, before the clock of any target starts.
    let corpus = ailuro_fuzz::corpus::get();
    assert!(corpus.problems.is_empty(), "could not build the seed corpus: {:?}", corpus.problems);
    assert!(!corpus.recordings.is_empty() && !corpus.containers.is_empty() && !corpus.plogs.is_empty());

    let queue = Arc::new(Mutex::new(targets::all()));
    let results: Arc<Mutex<Vec<Stats>>> = Arc::new(Mutex::new(Vec::new()));
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (queue, results, cfg) = (queue.clone(), results.clone(), cfg.clone());
            s.spawn(move || loop {
                let Some(t) = queue.lock().unwrap().pop() else { break };
                let st = ailuro_fuzz::run_target(t, &cfg);
                results.lock().unwrap().push(st);
            });
        }
    });
    let mut results = results.lock().unwrap().clone();
    let order: Vec<&str> = targets::all().iter().map(|t| t.name()).collect();
    results.sort_by_key(|s| order.iter().position(|n| *n == s.target));

    let mut report = format!("ailuro-fuzz: seed {}, {iterations} inputs per target, {jobs} jobs\n", cfg.seed);
    for s in &results {
        report.push_str(&s.summary());
        report.push('\n');
        for f in &s.failures {
            report.push_str(&format!(
                "  {:?} at iteration {}: {}\n    input: {}\n",
                f.kind,
                f.iteration,
                f.message.lines().next().unwrap_or(""),
                f.input.display()
            ));
        }
    }
    report.push_str(&format!("total {:.1} s\n", started.elapsed().as_secs_f64()));
    println!("{report}");

    assert_eq!(results.len(), order.len(), "a target did not report\n{report}");
    let failures: usize = results.iter().map(|s| s.failures.len()).sum();
    assert_eq!(failures, 0, "property violations found (inputs saved)\n{report}");
    for s in &results {
        assert_eq!(s.iterations, iterations, "{}: campaign ended early\n{report}", s.target);
        assert!(s.ok > 0, "{}: no input was accepted (seeds broken?)\n{report}", s.target);
        assert!(s.errors.len() > 1, "{}: mutations produce no variety of errors\n{report}", s.target);
        if MUST_GO_DEEP.contains(&s.target.as_str()) && iterations >= 500 {
            assert!(s.deep_err > 0, "{}: no mutant got past the checksums to the decoders\n{report}", s.target);
        }
    }
}

/// The inputs are a pure function of the seed: two runs of the same campaign agree exactly.
#[test]
fn campaigns_are_deterministic() {
    let cfg = config(300);
    for name in ["log", "rr", "options"] {
        let a = ailuro_fuzz::run_target(targets::by_name(name).unwrap(), &cfg);
        let b = ailuro_fuzz::run_target(targets::by_name(name).unwrap(), &cfg);
        assert_eq!((a.ok, a.err, &a.errors), (b.ok, b.err, &b.errors), "{name}");
    }
}
