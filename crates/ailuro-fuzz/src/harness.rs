//! The fuzz loop: deterministic input generation, the Ok-or-clean-Err property, panic capture,
//! the hang watchdog, the allocation limits, failure files and statistics.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::alloc::{self, AllocWatch};
use crate::rng::{mix, name_hash, Rng};
use crate::targets::Target;

/// How long one input may take, and how much one allocation request may ask for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Per-input wall-clock bound (a hang is reported beyond it).
    pub timeout: Duration,
    /// A single allocation request above this is reported (after the input finishes).
    pub soft_alloc: usize,
    /// A single allocation request above this parks the worker and is reported at once (the host
    /// allocator would abort the process instead).
    pub hard_alloc: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), soft_alloc: 1 << 30, hard_alloc: 8 << 30 }
    }
}

/// One fuzzing campaign of one target.
#[derive(Clone, Debug)]
pub struct Config {
    /// User seed; each target and iteration derives its own stream from it.
    pub seed: u64,
    /// Number of inputs (the seeds themselves count).
    pub iterations: u64,
    /// Where failing inputs are written.
    pub out_dir: PathBuf,
    /// Time and allocation bounds.
    pub limits: Limits,
    /// Extra seed files (`--corpus DIR`), used by targets whose inputs are single files.
    pub corpus_dir: Option<PathBuf>,
    /// Stop a campaign after this many failures (the rest would mostly be duplicates).
    pub max_failures: usize,
}

/// What kind of property violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The parser panicked.
    Panic,
    /// The parser did not finish within the time bound.
    Hang,
    /// The parser asked for an absurd allocation.
    Alloc,
}

/// One property violation, with the input saved.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Kind.
    pub kind: FailureKind,
    /// Iteration number (reproduce with the same seed, or run the saved file with `--reproduce`).
    pub iteration: u64,
    /// Panic message and location, hang duration or allocation size.
    pub message: String,
    /// Where the input was written.
    pub input: PathBuf,
}

/// Results of a campaign.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Target name.
    pub target: String,
    /// Inputs run.
    pub iterations: u64,
    /// Inputs that parsed.
    pub ok: u64,
    /// Inputs rejected with an error.
    pub err: u64,
    /// Errors that came from deep decoders (past every checksum; per target's classification).
    pub deep_err: u64,
    /// Distinct error messages (digits and paths normalised) with their counts.
    pub errors: BTreeMap<String, u64>,
    /// Property violations.
    pub failures: Vec<Failure>,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Largest single allocation request seen for any input.
    pub max_alloc: usize,
}

impl Stats {
    /// One summary line.
    pub fn summary(&self) -> String {
        format!(
            "{:<12} iterations {:>6}  ok {:>6}  err {:>6}  deep-err {:>6}  distinct-errors {:>4}  failures {:>2}  max-alloc {:>6} KiB  {:>6.2} s",
            self.target,
            self.iterations,
            self.ok,
            self.err,
            self.deep_err,
            self.errors.len(),
            self.failures.len(),
            self.max_alloc >> 10,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Replace digit runs and the work directory by placeholders, so that messages differing only in
/// offsets or temp paths count as one.
pub fn normalize(msg: &str, workdir: &Path) -> String {
    let msg = msg.replace(&*workdir.to_string_lossy(), "<dir>");
    let mut out = String::with_capacity(msg.len());
    let mut in_digits = false;
    for c in msg.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out.chars().take(300).collect()
}

/// Panics caught in fuzz workers: message, location and backtrace, keyed by thread.
static PANICS: Mutex<Vec<(std::thread::ThreadId, String)>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let fuzz = std::thread::current().name().is_some_and(|n| n.starts_with("fuzz-"));
            if !fuzz {
                return default(info);
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".into());
            let loc = info.location().map_or("unknown location".into(), |l| format!("{}:{}", l.file(), l.line()));
            let bt = std::backtrace::Backtrace::force_capture();
            let text = format!("panicked at {loc}: {msg}\nbacktrace:\n{bt}");
            if let Ok(mut p) = PANICS.lock() {
                p.push((std::thread::current().id(), text));
            }
        }));
    });
}

fn take_panic(id: std::thread::ThreadId) -> String {
    let mut p = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    match p.iter().rposition(|(t, _)| *t == id) {
        Some(i) => p.remove(i).1,
        None => "panic (no message captured)".into(),
    }
}

/// Where work directories go: `AILURO_FUZZ_TMP`, else `/dev/shm` when it exists (the parsers
/// under test fsync their outputs; on tmpfs that costs nothing), else the system temp directory.
pub fn scratch_root() -> PathBuf {
    if let Some(d) = std::env::var_os("AILURO_FUZZ_TMP") {
        return d.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::Builder::new().prefix("ailuro-fuzz-probe-").tempdir_in(shm).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// The input being run, for the watchdog.
struct Current {
    iteration: u64,
    input: Arc<Vec<u8>>,
    started: Instant,
}

/// Write a failing input and its description; returns the input's path.
pub fn save_failure(
    out_dir: &Path,
    target: &str,
    seed: u64,
    iteration: u64,
    kind: FailureKind,
    msg: &str,
    input: &[u8],
) -> PathBuf {
    let dir = out_dir.join(target);
    let _ = std::fs::create_dir_all(&dir);
    let stem = format!("{kind:?}-seed{seed}-iter{iteration}").to_lowercase();
    let p = dir.join(format!("{stem}.bin"));
    let _ = std::fs::write(&p, input);
    let _ = std::fs::write(
        dir.join(format!("{stem}.txt")),
        format!(
            "target: {target}\nseed: {seed}\niteration: {iteration}\nkind: {kind:?}\n\
             reproduce: ailuro-fuzz {target} --reproduce {}\n\n{msg}\n",
            p.display()
        ),
    );
    p
}

/// Run one campaign. The target runs on its own thread (named `fuzz-TARGET`), supervised from
/// the calling thread, so that a hang or a parked huge allocation is reported instead of
/// blocking forever.
pub fn run_target(target: Box<dyn Target>, cfg: &Config) -> Stats {
    install_panic_hook();
    let name = target.name().to_string();
    let current: Arc<Mutex<Option<Current>>> = Arc::new(Mutex::new(None));
    let watch = Arc::new(AllocWatch::new(cfg.limits.hard_alloc));
    let stats = Arc::new(Mutex::new(Stats { target: name.clone(), ..Stats::default() }));
    let started = Instant::now();
    let worker = {
        let (current, watch, stats, cfg) = (current.clone(), watch.clone(), stats.clone(), cfg.clone());
        std::thread::Builder::new()
            .name(format!("fuzz-{name}"))
            .stack_size(64 << 20)
            .spawn(move || worker(target, &cfg, &current, &watch, &stats))
            .expect("spawn fuzz worker")
    };
    let mut hung = None;
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
        let huge = watch.huge.load(Ordering::SeqCst);
        let cur = current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cur.as_ref() {
            let (kind, msg) = if huge != 0 {
                (
                    FailureKind::Alloc,
                    format!(
                        "allocation request of {huge} bytes (hard limit {}) for an input of {} bytes",
                        cfg.limits.hard_alloc,
                        c.input.len()
                    ),
                )
            } else if c.started.elapsed() > cfg.limits.timeout {
                (FailureKind::Hang, format!("input did not finish within {:?}", cfg.limits.timeout))
            } else {
                continue;
            };
            let input = save_failure(&cfg.out_dir, &name, cfg.seed, c.iteration, kind, &msg, &c.input);
            hung = Some(Failure { kind, iteration: c.iteration, message: msg, input });
            break;
        }
    }
    // A stuck worker is abandoned (it is parked or spinning; the process exit ends it).
    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(f) = hung {
        eprintln!(
            "[{name}] {:?} at iteration {}: {} (input saved to {})",
            f.kind,
            f.iteration,
            f.message,
            f.input.display()
        );
        s.failures.push(f);
    }
    s.elapsed = started.elapsed();
    s
}

fn worker(
    target: Box<dyn Target>,
    cfg: &Config,
    current: &Mutex<Option<Current>>,
    watch: &Arc<AllocWatch>,
    stats: &Mutex<Stats>,
) {
    let name = target.name();
    let work = match tempfile::Builder::new().prefix(&format!("ailuro-fuzz-{name}-")).tempdir_in(scratch_root()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("[{name}] cannot create a work directory: {e}");
            return;
        }
    };
    let wd = work.path().to_path_buf();
    let mut ctx = crate::targets::Ctx::new(wd.clone());
    let mut seeds = target.seeds(&mut ctx);
    if let Some(dir) = &cfg.corpus_dir {
        seeds.extend(target.corpus_files(dir));
    }
    let stream = mix(cfg.seed, name_hash(name));
    // Inputs that produced something new (Ok, or an error message not seen before) are kept as
    // extra mutation bases: a cheap stand-in for coverage feedback that stays deterministic.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    alloc::register(Some(watch));
    for i in 0..cfg.iterations {
        let mut rng = Rng::new(mix(stream, i));
        let input: Vec<u8> = if (i as usize) < seeds.len() {
            seeds[i as usize].clone()
        } else if seeds.is_empty() {
            {
                let n = rng.small_len(256);
                rng.bytes(n)
            }
        } else {
            let base =
                if !pool.is_empty() && rng.chance(1, 3) { rng.pick(&pool).clone() } else { rng.pick(&seeds).clone() };
            let other = rng.pick(&seeds).clone();
            match catch_unwind(AssertUnwindSafe(|| target.mutate(&mut rng, &base, &other))) {
                Ok(m) => m,
                Err(_) => {
                    // A bug in the fuzzer itself, not in the code under test: say so loudly and
                    // fail the campaign (the base input is saved for debugging the mutator).
                    let msg = format!("MUTATOR BUG (ailuro-fuzz): {}", take_panic(std::thread::current().id()));
                    let p = save_failure(&cfg.out_dir, name, cfg.seed, i, FailureKind::Panic, &msg, &base);
                    eprintln!("[{name}] {}", msg.lines().next().unwrap_or(""));
                    let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                    s.failures.push(Failure { kind: FailureKind::Panic, iteration: i, message: msg, input: p });
                    break;
                }
            }
        };
        let input = Arc::new(input);
        *current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Current { iteration: i, input: input.clone(), started: Instant::now() });
        watch.take_peak();
        let r = catch_unwind(AssertUnwindSafe(|| target.run(&input, &mut ctx)));
        let peak = watch.take_peak();
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        ctx.cleanup();
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        s.iterations += 1;
        s.max_alloc = s.max_alloc.max(peak);
        let mut new = false;
        match r {
            Ok(Ok(())) => {
                s.ok += 1;
                new = rng.chance(1, 8);
            }
            Ok(Err(msg)) => {
                s.err += 1;
                if target.is_deep(&msg) {
                    s.deep_err += 1;
                }
                let n = s.errors.entry(normalize(&msg, &wd)).or_insert(0);
                new = *n == 0;
                *n += 1;
            }
            Err(_) => {
                let msg = take_panic(std::thread::current().id());
                let p = save_failure(&cfg.out_dir, name, cfg.seed, i, FailureKind::Panic, &msg, &input);
                eprintln!(
                    "[{name}] panic at iteration {i} (input saved to {}): {}",
                    p.display(),
                    msg.lines().next().unwrap_or("")
                );
                s.failures.push(Failure { kind: FailureKind::Panic, iteration: i, message: msg, input: p });
                // A panic may leave the target's state (e.g. a machine) inconsistent.
                ctx.reset();
            }
        }
        if peak > cfg.limits.soft_alloc {
            let msg = format!(
                "allocation request of {peak} bytes (soft limit {}) for an input of {} bytes",
                cfg.limits.soft_alloc,
                input.len()
            );
            let p = save_failure(&cfg.out_dir, name, cfg.seed, i, FailureKind::Alloc, &msg, &input);
            eprintln!("[{name}] {msg} at iteration {i} (input saved to {})", p.display());
            s.failures.push(Failure { kind: FailureKind::Alloc, iteration: i, message: msg, input: p });
        }
        let stop = s.failures.len() >= cfg.max_failures;
        drop(s);
        if new && input.len() < (8 << 20) {
            if pool.len() < 64 {
                pool.push((*input).clone());
            } else {
                let k = rng.below(pool.len());
                pool[k] = (*input).clone();
            }
        }
        if stop {
            break;
        }
    }
    alloc::register(None);
}
