//! Seed inputs made at run time from the real writers: a recording of a bundled guest made with
//! the machine API, its `.rr` pack, synthetic logs with every event kind, plugin logs with every
//! value type, kernel images, and the bundled kernel profiles. Built once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ailuro_machine::{BootImage, ChannelHost, GuestArch, Machine, MachineConfig, RunOptions};
use ailuro_plog::{PlogHeader, PlogWriter, Value};
use ailuro_rr::{Arch, EndReason, Event, LogEnd, LogEntry, LogHeader, LogWriter};

/// All seeds, as bytes.
pub struct Corpus {
    /// Bundled guest kernels (multiboot ELF), `(name, bytes)`.
    pub guests: Vec<(String, Vec<u8>)>,
    /// Recordings made with the machine: `(snapshot, log)` pairs.
    pub recordings: Vec<(Vec<u8>, Vec<u8>)>,
    /// Extra nondet logs (synthetic: every event kind, many chunks, incomplete).
    pub logs: Vec<Vec<u8>>,
    /// `.rr` containers packed with `ailuro_rr::pack`.
    pub containers: Vec<Vec<u8>>,
    /// Plugin logs.
    pub plogs: Vec<Vec<u8>>,
    /// Kernel profile texts.
    pub profiles: Vec<String>,
    /// Errors met while building (seeds that could not be made are skipped, not fatal).
    pub problems: Vec<String>,
    /// Directory holding a copy of the first recording (name `seedrec`), for replay commands.
    pub dir: PathBuf,
}

static CORPUS: OnceLock<Corpus> = OnceLock::new();

/// The process-wide corpus (built on first use).
pub fn get() -> &'static Corpus {
    CORPUS.get_or_init(build)
}

/// Machine config used for seed recordings and monitor sessions: small RAM, fixed RTC (so runs
/// are deterministic), no reboot.
pub fn machine_config(ram_mib: u64) -> MachineConfig {
    MachineConfig {
        arch: GuestArch::I386,
        ram_size: ram_mib << 20,
        rtc_base_unix: 1_700_000_000,
        cmdline: String::new(),
        no_reboot: true,
    }
}

/// Record guest `kernel` from power-on to its exit into `name`.
pub fn record_guest(kernel: &[u8], name: &Path) -> Result<(), String> {
    let boot = BootImage { kernel: kernel.to_vec(), modules: vec![] };
    let mut m = Machine::new_live(
        machine_config(4),
        Some(boot),
        RunOptions { sleep: false, start_paused: false, engine: Default::default(), jit_hot: None },
    )?;
    m.begin_record(name, true)?;
    let mut host = ChannelHost::new(None, |_: &[u8]| {}, |_: &str| {});
    let stop = m.run(&mut host);
    if m.is_recording() {
        m.end_record(EndReason::Quit)?;
    }
    let _ = stop;
    Ok(())
}

fn synthetic_log(path: &Path, chunk: usize, finish: bool) -> ailuro_rr::Result<()> {
    let lh = LogHeader { arch: Arch::I386, start_icount: 100, snapshot_hash: [0x5a; 32], creator: "fuzz seed".into() };
    let mut w = LogWriter::create(path, &lh, true)?;
    w.set_chunk_size(chunk);
    let events = [
        Event::IoRead { port: 0x3f8, size: 1, value: 0x41 },
        Event::MmioRead { addr: 0xfee0_0030, size: 4, value: 0x14 },
        Event::Timestamp { value: 123_456_789 },
        Event::InterruptAck { vector: 0x20 },
        Event::IrqLine { line: 0, level: true },
        Event::Dma { addr: 0x1000, data: (0..40u8).collect() },
        Event::Checkpoint { pc: 0x10_0000, cpu_hash: [9; 16] },
        Event::Reset,
        Event::HostEvent { code: 7, data: b"host".to_vec() },
        Event::Clock { now_ns: 1 << 33 },
    ];
    for (i, e) in events.iter().cycle().take(60).enumerate() {
        w.append(&LogEntry { icount: 100 + (i as u64 / 3) * 17, event: e.clone() })?;
    }
    if finish {
        w.finish(LogEnd { end_icount: 5000, reason: EndReason::GuestExit(3), final_state_hash: [1; 32] })?;
    }
    Ok(())
}

fn plog_seed(path: &Path, chunk: usize, finish: bool) -> ailuro_plog::Result<()> {
    let header = PlogHeader::new("ailuro-fuzz seed").with("recording", "seedrec").with("plugins", "syscalls,count");
    let mut w = PlogWriter::create(path, &header, true)?;
    w.set_chunk_size(chunk);
    let nested = Value::Map(vec![
        ("a".into(), Value::List(vec![Value::U64(1), Value::I64(-2), Value::Null, Value::Bool(true)])),
        ("b".into(), Value::Map(vec![("c".into(), Value::F64(f64::NAN)), ("d".into(), Value::Bytes(vec![0, 255]))])),
    ]);
    for i in 0..40u64 {
        let mut r = w.record(1000 + i * 3, 0xc100_0000 + i, if i % 3 == 0 { "syscalls" } else { "count" }, "event");
        if i % 2 == 0 {
            r = r.asid(0x0123_4000 + i);
        }
        r.field("name", "openat")
            .field("fd", i)
            .field("ret", -(i as i64))
            .field("f", 1.5f64 * i as f64)
            .field("ok", i % 2 == 0)
            .field("raw", &b"GET /"[..])
            .field("nested", &nested)
            .list("args", [i, u64::MAX, 0])
            .emit()?;
    }
    if finish {
        w.finish()?;
    }
    Ok(())
}

fn build() -> Corpus {
    let root = crate::harness::scratch_root();
    remove_stale_corpora(&root);
    let dir = root.join(format!("ailuro-fuzz-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let mut c = Corpus {
        guests: Vec::new(),
        recordings: Vec::new(),
        logs: Vec::new(),
        containers: Vec::new(),
        plogs: Vec::new(),
        profiles: Vec::new(),
        problems: Vec::new(),
        dir: dir.clone(),
    };
    for g in ["hello", "timer", "paging"] {
        match ailuro_guests::guest_path(g).map(std::fs::read) {
            Some(Ok(b)) => c.guests.push((g.to_string(), b)),
            _ => c.problems.push(format!("bundled guest {g} not built")),
        }
    }
    // Real recordings. `seedrec` (the first) stays in `dir` for monitor/replay commands.
    for (i, g) in ["timer", "hello"].iter().enumerate() {
        let Some((_, k)) = c.guests.iter().find(|(n, _)| n == g) else { continue };
        let name = dir.join(if i == 0 { "seedrec".to_string() } else { format!("rec-{g}") });
        match record_guest(k, &name) {
            Ok(()) => {
                let (s, l) = ailuro_rr::recording_paths(&name);
                if let (Ok(s), Ok(l)) = (std::fs::read(&s), std::fs::read(&l)) {
                    c.recordings.push((s, l));
                }
                let opts = ailuro_rr::PackOptions {
                    out: Some(dir.join(format!("{g}.rr"))),
                    force: true,
                    allow_incomplete: true,
                };
                match ailuro_rr::pack(&name, &opts) {
                    Ok(info) => match std::fs::read(&info.out) {
                        // Normalise (tar mtimes) so the fuzz inputs are the same on every run.
                        Ok(b) => c.containers.push(normalize_container(&b)),
                        Err(e) => c.problems.push(format!("read pack: {e}")),
                    },
                    Err(e) => c.problems.push(format!("pack {g}: {e}")),
                }
            }
            Err(e) => c.problems.push(format!("record {g}: {e}")),
        }
    }
    for (k, (chunk, finish)) in [(64usize, true), (1 << 20, true), (32, false)].into_iter().enumerate() {
        let p = dir.join(format!("synthetic-{k}.log"));
        match synthetic_log(&p, chunk, finish).map(|()| std::fs::read(&p)) {
            Ok(Ok(b)) => c.logs.push(b),
            Ok(Err(e)) => c.problems.push(format!("read synthetic log: {e}")),
            Err(e) => c.problems.push(format!("synthetic log: {e}")),
        }
        let p = dir.join(format!("seed-{k}.plog"));
        match plog_seed(&p, chunk * 4, finish).map(|()| std::fs::read(&p)) {
            Ok(Ok(b)) => c.plogs.push(b),
            Ok(Err(e)) => c.problems.push(format!("read plog: {e}")),
            Err(e) => c.problems.push(format!("plog: {e}")),
        }
    }
    if let Ok(rd) = std::fs::read_dir(ailuro_kprofile::bundled_profiles_dir()) {
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            if let Ok(t) = std::fs::read_to_string(p) {
                c.profiles.push(t);
            }
        }
    }
    if c.profiles.is_empty() {
        c.problems.push("no bundled kernel profiles".into());
    }
    for p in &c.problems {
        eprintln!("ailuro-fuzz corpus: {p}");
    }
    c
}

/// The corpus directory lives as long as the process (it is a static); remove the ones left by
/// earlier processes that no longer run.
fn remove_stale_corpora(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("ailuro-fuzz-corpus-").and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Re-encode a container with mtime-0 tar headers (byte-identical across runs).
fn normalize_container(b: &[u8]) -> Vec<u8> {
    match crate::container::Container::decode(b) {
        Some(c) => crate::container::Container::encode_tar(c.icount, &c.tar(), true),
        None => b.to_vec(),
    }
}

/// Every regular file of `dir` (sorted, so `--corpus` runs are deterministic), at most 64 MiB each.
pub fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
        Err(e) => {
            eprintln!("ailuro-fuzz: cannot read corpus {}: {e}", dir.display());
            return Vec::new();
        }
    };
    paths.sort();
    paths
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() <= 64 << 20))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}
