//! The fuzz targets: one per parser of untrusted input. Each turns one byte-string input into a
//! call of the crate's public API and reports Ok or the error message; panics, hangs and absurd
//! allocations are caught by the harness.

use std::path::{Path, PathBuf};

use crate::corpus;
use crate::mutators::{join_parts, mutate_bytes_n, mutate_text, splice, split_parts, WEIRD_STRINGS};
use crate::rng::Rng;
use crate::{container, framed, kernels, snapshot};

/// Per-worker scratch state: the work directory (every file a target writes lives under it).
pub struct Ctx {
    /// Work directory (a fresh temporary directory per campaign).
    pub dir: PathBuf,
}

impl Ctx {
    /// Context over `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Remove what the last input left in the work directory (keeps `seedrec`, the recording
    /// monitor sessions may replay).
    pub fn cleanup(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seedrec")) {
                    continue;
                }
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
    }

    /// Recover after a panic.
    pub fn reset(&mut self) {
        self.cleanup();
    }

    /// Write `bytes` to `name` in the work directory.
    pub fn file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("fuzz harness: cannot write {}: {e}", p.display()))?;
        Ok(p)
    }
}

/// A fuzz target.
pub trait Target: Send {
    /// Name used on the command line and in reports.
    fn name(&self) -> &'static str;
    /// Seed inputs.
    fn seeds(&self, ctx: &mut Ctx) -> Vec<Vec<u8>>;
    /// Inputs from a `--corpus` directory (default: each file is one input).
    fn corpus_files(&self, dir: &Path) -> Vec<Vec<u8>> {
        corpus::files_in(dir)
    }
    /// A mutant of `base` (`other` is another seed, for splicing).
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8>;
    /// Run the parser on `input`; `Err` carries its (clean) error message.
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String>;
    /// Whether an error message comes from a decoder that only mutants passing every checksum
    /// reach (used to prove the structure-aware mutators work).
    fn is_deep(&self, _msg: &str) -> bool {
        false
    }
}

/// Generic fallback shared by the file-format targets: structure-aware when it decodes, byte
/// mutations and splices otherwise or sometimes anyway.
fn mutate_file(rng: &mut Rng, base: &[u8], other: &[u8], aware: fn(&mut Rng, &[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    match rng.below(10) {
        0 => {
            let mut b = base.to_vec();
            mutate_bytes_n(rng, &mut b, 4);
            b
        }
        1 if rng.chance(1, 2) => splice(rng, base, other),
        _ => aware(rng, base).unwrap_or_else(|| {
            let mut b = base.to_vec();
            mutate_bytes_n(rng, &mut b, 4);
            b
        }),
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Every target, in report order.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(LogTarget),
        Box::new(SnapshotTarget),
        Box::new(RecordingTarget),
        Box::new(ContainerTarget),
        Box::new(PlogTarget),
        Box::new(MultibootTarget),
        Box::new(BzImageTarget),
        Box::new(ProfileTarget),
        Box::new(MonitorTarget),
        Box::new(OptionsTarget),
        Box::new(PluginListTarget),
        Box::new(ReplayTarget),
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Target>> {
    all().into_iter().find(|t| t.name() == name)
}

// ---------------------------------------------------------------------------------------------

/// Nondet log: `LogReader::open`, every entry, `verify_rest`.
pub struct LogTarget;

impl Target for LogTarget {
    fn name(&self) -> &'static str {
        "log"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        let c = corpus::get();
        c.recordings.iter().map(|r| r.1.clone()).chain(c.logs.iter().cloned()).collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        mutate_file(rng, base, other, framed::mutate)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let p = ctx.file("in-rr-nondet.log", input)?;
        read_log(&p)
    }
    fn is_deep(&self, msg: &str) -> bool {
        is_deep_log_error(msg)
    }
}

/// Whether a nondet-log error comes from the entry decoder (past header, chunk and payload
/// checksums and decompression).
pub fn is_deep_log_error(msg: &str) -> bool {
    [
        "entry:",
        "unsupported event kind",
        "left over after the last entry",
        "last entry at icount",
        "entry icount beyond",
    ]
    .iter()
    .any(|k| msg.contains(k))
}

fn read_log(p: &Path) -> Result<(), String> {
    let mut r = ailuro_rr::LogReader::open(p).map_err(err)?;
    let _ = (r.end_icount(), r.instruction_count(), r.is_complete(), r.truncated_at(), r.chunks().len());
    if r.peek().map_err(err)?.is_some() {
        r.next_entry().map_err(err)?;
    }
    while r.next_entry().map_err(err)?.is_some() {}
    r.verify_rest().map_err(err)?;
    Ok(())
}

/// Snapshot: `read_snapshot_header`, `read_snapshot`.
pub struct SnapshotTarget;

impl Target for SnapshotTarget {
    fn name(&self) -> &'static str {
        "snapshot"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        corpus::get().recordings.iter().map(|r| r.0.clone()).collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        mutate_file(rng, base, other, snapshot::mutate)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let p = ctx.file("in-rr-snp", input)?;
        ailuro_rr::read_snapshot_header(&p).map_err(err)?;
        ailuro_rr::read_snapshot(&p).map_err(err)?;
        Ok(())
    }
    fn is_deep(&self, msg: &str) -> bool {
        msg.contains("snapshot RAM") || msg.contains("whole-file hash") || msg.contains("unexpected bytes after")
    }
}

fn write_pair(input: &[u8], ctx: &Ctx) -> Result<PathBuf, String> {
    let mut parts = split_parts(input);
    parts.resize(2, Vec::new());
    let name = ctx.dir.join("pair");
    let (s, l) = ailuro_rr::recording_paths(&name);
    std::fs::write(&s, &parts[0]).map_err(err)?;
    std::fs::write(&l, &parts[1]).map_err(err)?;
    Ok(name)
}

fn pair_seeds() -> Vec<Vec<u8>> {
    corpus::get().recordings.iter().map(|(s, l)| join_parts(&[s.clone(), l.clone()])).collect()
}

/// Recording pair: `open_recording(name, None)` and every entry of its log.
pub struct RecordingTarget;

impl Target for RecordingTarget {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        pair_seeds()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        snapshot::mutate_pair(rng, base)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let name = write_pair(input, ctx)?;
        open_and_read(&name)
    }
    fn is_deep(&self, msg: &str) -> bool {
        is_deep_log_error(msg) || msg.contains("snapshot RAM")
    }
}

fn open_and_read(name: &Path) -> Result<(), String> {
    let mut rec = ailuro_rr::open_recording(name, None).map_err(err)?;
    let _ = rec.ram.size();
    while rec.log.next_entry().map_err(err)?.is_some() {}
    Ok(())
}

/// `.rr` container: `unpack` into a fresh directory, then `open_recording` on the result.
pub struct ContainerTarget;

impl Target for ContainerTarget {
    fn name(&self) -> &'static str {
        "rr"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        corpus::get().containers.clone()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        mutate_file(rng, base, other, container::mutate)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let rr = ctx.file("in.rr", input)?;
        let dest = ctx.dir.join("unpacked");
        std::fs::create_dir_all(&dest).map_err(err)?;
        // Validation on for most inputs; off for some (PANDA's own recordings are unpacked
        // that way, and then open_recording is the only check).
        let validate = !input.len().is_multiple_of(4);
        let allow_incomplete = input.len().is_multiple_of(3);
        let opts = ailuro_rr::UnpackOptions { dest_dir: dest.clone(), force: false, validate, allow_incomplete };
        let info = ailuro_rr::unpack(&rr, &opts).map_err(err)?;
        // Nothing may land outside the destination directory.
        for p in [&info.snapshot, &info.log] {
            if !p.starts_with(&dest) {
                panic!("unpack wrote {} outside its destination {}", p.display(), dest.display());
            }
        }
        open_and_read(&info.name)
    }
    fn is_deep(&self, msg: &str) -> bool {
        msg.contains("is not valid") || is_deep_log_error(msg) || msg.contains("does not belong")
    }
}

/// Plugin log: `PlogReader::open`, every record (and its JSON rendering).
pub struct PlogTarget;

impl Target for PlogTarget {
    fn name(&self) -> &'static str {
        "plog"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        corpus::get().plogs.clone()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        mutate_file(rng, base, other, framed::mutate)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let p = ctx.file("in.plog", input)?;
        let mut r = ailuro_plog::PlogReader::open(&p).map_err(err)?;
        let _ = (r.is_complete(), r.record_count(), r.payload_bytes(), r.icount_range(), r.truncated_at());
        if input.len().is_multiple_of(5) {
            r.seek_icount(1030);
        }
        while let Some(rec) = r.next_record().map_err(err)? {
            let _ = rec.to_json();
        }
        Ok(())
    }
    fn is_deep(&self, msg: &str) -> bool {
        msg.contains("record ") && !msg.contains("checksum")
    }
}

// ---------------------------------------------------------------------------------------------

const RAM_MIB: &[u64] = &[1, 2, 3, 4, 16, 64];

fn ram_choice(part: Option<&Vec<u8>>) -> u64 {
    let i = part.and_then(|p| p.first()).copied().unwrap_or(3) as usize;
    RAM_MIB[i % RAM_MIB.len()] << 20
}

/// Multiboot ELF loader: `load_multiboot(ram, kernel, cmdline, modules)`.
/// Input: `join_parts([kernel, cmdline, [ram selector], name1, data1, ...])`.
pub struct MultibootTarget;

impl Target for MultibootTarget {
    fn name(&self) -> &'static str {
        "multiboot"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (name, k) in &corpus::get().guests {
            out.push(join_parts(&[k.clone(), b"console=ttyS0 x".to_vec(), vec![3]]));
            out.push(join_parts(&[
                k.clone(),
                name.as_bytes().to_vec(),
                vec![4],
                b"mod1 arg".to_vec(),
                vec![0xaa; 5000],
            ]));
        }
        out
    }
    fn corpus_files(&self, dir: &Path) -> Vec<Vec<u8>> {
        corpus::files_in(dir).into_iter().map(|k| join_parts(&[k, Vec::new(), vec![3]])).collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        let mut parts = split_parts(base);
        parts.resize(3, Vec::new());
        match rng.below(10) {
            0..=5 => kernels::mutate_elf(rng, &mut parts[0]),
            6 => parts[1] = mutate_text(rng, &String::from_utf8_lossy(&parts[1])).into_bytes(),
            7 => parts[2] = vec![rng.byte()],
            8 => {
                let n = *rng.pick(&[0usize, 1, 4096, 3 << 20]);
                parts.push(mutate_text(rng, "mod").into_bytes());
                parts.push(vec![0x5a; n]);
            }
            _ => {
                if parts.len() > 3 {
                    parts.truncate(3);
                } else {
                    mutate_bytes_n(rng, &mut parts[0], 8);
                }
            }
        }
        join_parts(&parts)
    }
    fn run(&self, input: &[u8], _: &mut Ctx) -> Result<(), String> {
        let parts = split_parts(input);
        let kernel = parts.first().cloned().unwrap_or_default();
        let cmdline = String::from_utf8_lossy(parts.get(1).map_or(&[][..], |v| v)).into_owned();
        let modules: Vec<ailuro_boot::Module> = parts
            .get(3..)
            .unwrap_or(&[])
            .chunks(2)
            .map(|c| ailuro_boot::Module {
                name: String::from_utf8_lossy(&c[0]).into_owned(),
                data: c.get(1).cloned().unwrap_or_default(),
            })
            .collect();
        let _ = ailuro_boot::is_elf(&kernel);
        let _ = ailuro_boot::find_multiboot_header(&kernel);
        let mut ram = ailuro_bus::GuestRam::new(0, ram_choice(parts.get(2))).map_err(err)?;
        ailuro_boot::load_multiboot(&mut ram, &kernel, &cmdline, &modules).map_err(err)?;
        Ok(())
    }
}

/// Linux bzImage loader: `parse_setup_header`, `load_linux(ram, image, initrd, cmdline)`.
/// Input: `join_parts([image, initrd (empty: none), cmdline, [ram selector]])`.
pub struct BzImageTarget;

impl Target for BzImageTarget {
    fn name(&self) -> &'static str {
        "bzimage"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        vec![
            join_parts(&[kernels::synthetic_bzimage(4, 8192), vec![], b"console=ttyS0".to_vec(), vec![4]]),
            join_parts(&[
                kernels::synthetic_bzimage(0, 100),
                vec![7; 4096],
                b"root=/dev/ram0 init=/init".to_vec(),
                vec![5],
            ]),
            join_parts(&[kernels::synthetic_bzimage(30, 20000), vec![1; 100], vec![b'x'; 3000], vec![3]]),
        ]
    }
    fn corpus_files(&self, dir: &Path) -> Vec<Vec<u8>> {
        corpus::files_in(dir).into_iter().map(|k| join_parts(&[k, vec![], vec![], vec![4]])).collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        let mut parts = split_parts(base);
        parts.resize(4, Vec::new());
        match rng.below(10) {
            0..=6 => kernels::mutate_bzimage(rng, &mut parts[0]),
            7 => parts[1] = vec![0x11; *rng.pick(&[0usize, 1, 4096, 5 << 20])],
            8 => parts[2] = mutate_text(rng, &String::from_utf8_lossy(&parts[2])).into_bytes(),
            _ => parts[3] = vec![rng.byte()],
        }
        join_parts(&parts)
    }
    fn run(&self, input: &[u8], _: &mut Ctx) -> Result<(), String> {
        let mut parts = split_parts(input);
        parts.resize(4, Vec::new());
        let _ = ailuro_boot::parse_setup_header(&parts[0]).map(|h| (h.kernel_offset(), h.run_address()));
        let mut ram = ailuro_bus::GuestRam::new(0, ram_choice(parts.get(3))).map_err(err)?;
        let initrd = (!parts[1].is_empty()).then_some(&parts[1][..]);
        let cmdline = String::from_utf8_lossy(&parts[2]).into_owned();
        let e = ailuro_boot::load_linux(&mut ram, &parts[0], initrd, &cmdline).map_err(err)?;
        ailuro_boot::set_boot_params_rsdp(&mut ram, e.zero_page, 0xe_0000).map_err(err)?;
        Ok(())
    }
}

/// Kernel profiles: `KernelProfile::from_toml`, `validate`, and a `to_toml` round trip.
pub struct ProfileTarget;

impl Target for ProfileTarget {
    fn name(&self) -> &'static str {
        "kprofile"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        corpus::get().profiles.iter().map(|p| p.clone().into_bytes()).collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(base).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for _ in 0..rng.range(1, 3) {
            let n = lines.len();
            match rng.below(8) {
                0..=2 if n > 0 => {
                    // A value: keep the key, change what follows '='.
                    let i = rng.below(n);
                    if let Some(eq) = lines[i].find('=') {
                        let vals = [
                            "0".to_string(),
                            "-1".to_string(),
                            "18446744073709551615".into(),
                            "99999999999999999999".into(),
                            "\"0xffffffffffffffff\"".into(),
                            "\"0x\"".into(),
                            "\"\"".into(),
                            "\"-0x1\"".into(),
                            "\"zz\"".into(),
                            "4294967296".into(),
                            "[]".into(),
                            "{}".into(),
                            "true".into(),
                            "1.5".into(),
                            "\"x86-4level\"".into(),
                            "\"arm\"".into(),
                        ];
                        lines[i] = format!("{}= {}", &lines[i][..eq], rng.pick(&vals));
                    }
                }
                3 if n > 0 => {
                    let i = rng.below(n);
                    lines[i] = mutate_text(rng, &lines[i]);
                }
                4 if n > 0 => {
                    lines.remove(rng.below(n));
                }
                5 if n > 0 => {
                    let l = lines[rng.below(n)].clone();
                    lines.insert(rng.below(n + 1), l);
                }
                6 if n > 1 => {
                    let (a, b) = (rng.below(n), rng.below(n));
                    lines.swap(a, b);
                }
                _ => {
                    let mut b = text.clone().into_bytes();
                    if rng.chance(1, 2) {
                        mutate_bytes_n(rng, &mut b, 3);
                    } else {
                        b = splice(rng, &b, other);
                    }
                    return b;
                }
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out.into_bytes()
    }
    fn run(&self, input: &[u8], _: &mut Ctx) -> Result<(), String> {
        let text = std::str::from_utf8(input).map_err(err)?;
        let p = ailuro_kprofile::KernelProfile::from_toml(text).map_err(err)?;
        let _ = p.validate();
        let again = p.to_toml();
        // The writer's output must parse again: a failure here is a bug, but a clean one, so it
        // is reported as an error message (visible in the summary) rather than a panic.
        ailuro_kprofile::KernelProfile::from_toml(&again).map_err(|e| format!("round trip: {e}"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// Monitor commands (with arguments) and a harness pseudo-command that runs the machine.
const MONITOR_LINES: &[&str] = &[
    "help",
    "?",
    "begin_record rec",
    "begin_record -f rec",
    "end_record",
    "begin_replay seedrec",
    "end_replay",
    "cont",
    "c",
    "stop",
    "info status",
    "info registers",
    "info plugins",
    "info processes",
    "info",
    "info bogus extra",
    "quit",
    "q",
    "!run",
];

/// Make every file-system name in a command line a name inside the work directory (random names
/// must never create files in the current directory).
fn confine_names(line: &str, dir: &Path) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.first() {
        Some(&cmd) if cmd == "begin_record" || cmd == "begin_replay" => {
            let mut out = cmd.to_string();
            for w in &words[1..] {
                if *w == "-f" {
                    out.push_str(" -f");
                    continue;
                }
                let clean: String =
                    w.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').take(32).collect();
                let clean = if clean.is_empty() || clean.starts_with('-') { format!("r{clean}") } else { clean };
                out.push(' ');
                out.push_str(&dir.join(clean).to_string_lossy());
            }
            out
        }
        _ => line.to_string(),
    }
}

/// Monitor: `monitor::execute` on a live machine (bundled `hello` guest) with a `ChannelHost`.
/// Input: the command lines, one per line; `!run` runs the machine until it stops.
pub struct MonitorTarget;

impl Target for MonitorTarget {
    fn name(&self) -> &'static str {
        "monitor"
    }
    fn seeds(&self, ctx: &mut Ctx) -> Vec<Vec<u8>> {
        // A copy of the seed recording in the work directory, for begin_replay.
        let c = corpus::get();
        if let Some((s, l)) = c.recordings.first() {
            let (sp, lp) = ailuro_rr::recording_paths(&ctx.dir.join("seedrec"));
            let _ = std::fs::write(sp, s);
            let _ = std::fs::write(lp, l);
        }
        [
            "help\ninfo status\ninfo registers\nstop\ncont\ninfo plugins\nquit",
            "begin_record rec\ninfo status\n!run\nend_record\ninfo status",
            "begin_record -f rec\nstop\nend_record\nbegin_replay rec\ninfo status\n!run\nend_replay",
            "begin_replay seedrec\ninfo status\ninfo registers\n!run\ncont\nend_replay\nquit",
            "info processes\nc\nq\nhelp extra args",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(base).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for _ in 0..rng.range(1, 3) {
            let n = lines.len();
            match rng.below(7) {
                0 | 1 => lines.insert(rng.below(n + 1), rng.pick(MONITOR_LINES).to_string()),
                2 if n > 0 => {
                    let i = rng.below(n);
                    lines[i] = mutate_text(rng, &lines[i]);
                }
                3 if n > 0 => {
                    lines.remove(rng.below(n));
                }
                4 if n > 0 => {
                    // Extra or weird arguments for an existing command.
                    let i = rng.below(n);
                    lines[i].push(' ');
                    let w = *rng.pick::<&str>(WEIRD_STRINGS);
                    lines[i].push_str(w);
                }
                5 => {
                    let len = *rng.pick(&[1000usize, 100_000]);
                    lines.push(format!("{} {}", rng.pick(MONITOR_LINES), "x".repeat(len)));
                }
                _ if n > 1 => {
                    let (a, b) = (rng.below(n), rng.below(n));
                    lines.swap(a, b);
                }
                _ => {}
            }
        }
        // Bound the session: running the guest costs real time.
        let mut runs = 0;
        lines.retain(|l| {
            let r = l.trim() == "!run";
            runs += usize::from(r);
            !r || runs <= 2
        });
        lines.truncate(24);
        lines.join("\n").into_bytes()
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let c = corpus::get();
        let Some((_, kernel)) = c.guests.iter().find(|(n, _)| n == "hello") else {
            return Err("fuzz harness: bundled guest hello not built".into());
        };
        let boot = ailuro_machine::BootImage { kernel: kernel.clone(), modules: vec![] };
        let opts =
            ailuro_machine::RunOptions { sleep: false, start_paused: true, engine: Default::default(), jit_hot: None };
        let mut m = ailuro_machine::Machine::new_live(corpus::machine_config(4), Some(boot), opts)?;
        let mut host = ailuro_machine::ChannelHost::new(None, |_: &[u8]| {}, |_: &str| {});
        let text = String::from_utf8_lossy(input);
        let mut errors = Vec::new();
        let mut ran = false;
        for line in text.split('\n') {
            if line.trim() == "!run" {
                // Only one run per session: `run` returns when the machine stops for good
                // (guest exit, quit, replay end), and the CLI never calls it again; a second call
                // would let an exited guest idle forever, which is not a monitor bug.
                if !ran {
                    let _ = m.run(&mut host);
                }
                ran = true;
                continue;
            }
            let line = confine_names(line, &ctx.dir);
            let reply = ailuro_machine::monitor::execute(&mut m, &line, &mut host);
            if let Some(e) = reply.strip_prefix("Error: ") {
                errors.push(e.to_string());
            }
        }
        match errors.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Options and plausible (and implausible) values for the argument-vector generator.
const OPTIONS: &[(&str, &[&str])] = &[
    ("-m", &["128", "2", "1", "3G", "3073M", "4096K", "0", "18446744073709551615G", "12X", "size=64M", "-5", "", "é"]),
    ("-kernel", &["vmlinuz", "", "/dev/null"]),
    ("-initrd", &["a,b c,d", "", ",,,"]),
    ("-append", &["console=ttyS0", "", "\0"]),
    ("-serial", &["stdio", "mon:stdio", "file:out.txt", "file:", "null", "tcp::4444", "pty"]),
    ("-monitor", &["stdio", "unix:/tmp/m,server,nowait", "unix:", "unix:x,server", "none", "telnet::1"]),
    ("-record", &["rec", "rec,overwrite=on", "rec,overwrite", "rec,overwrite=off", ",overwrite=on", "rec,x", ""]),
    ("-replay", &["rec", ""]),
    ("-icount", &["sleep=on", "sleep=off", "shift=7,sleep=off", "auto", "sleep=maybe", ",", ""]),
    (
        "-rtc",
        &[
            "base=utc",
            "base=localtime",
            "base=2024-02-29T23:59:59",
            "base=1970-01-01",
            "base=-1",
            "base=9223372036854775807",
            "base=-9223372036854775808",
            "base=99999999999-12-31T00:00:00",
            "base=-9223372036854775808-01-01",
            "base=2024-13-01",
            "base=2024-01-01T25:61:61",
            "base=2024-1",
            "base=",
            "clock=vm",
        ],
    ),
    (
        "-panda",
        &["count", "trace:file=t.txt,limit=10;count", "a:b=c,d", ":x", "x:=y", "x:a=1,a=2", "help", ";;", "bad name"],
    ),
    ("-pandalog", &["out.plog", ""]),
    (
        "-device",
        &["isa-debug-exit", "isa-debug-exit,iobase=0xf4,iosize=0x04", "isa-debug-exit,iobase=0x501", "virtio", ""],
    ),
    ("-smp", &["1", "cpus=1", "2"]),
    ("-machine", &["pc", "q35,accel=tcg", "virt", ""]),
    ("-accel", &["tcg", "kvm"]),
    ("-display", &["none", "gtk"]),
    ("-nographic", &[]),
    ("-S", &[]),
    ("-no-reboot", &[]),
    ("-h", &[]),
    ("-version", &[]),
    ("--m", &["64"]),
    ("-", &[]),
    ("--", &[]),
    ("notanoption", &[]),
];

fn gen_option(rng: &mut Rng, out: &mut Vec<Vec<u8>>) {
    let (opt, vals) = rng.pick(OPTIONS);
    out.push(opt.as_bytes().to_vec());
    if !vals.is_empty() && rng.chance(15, 16) {
        let v0 = *rng.pick(vals);
        let v = if rng.chance(1, 6) { mutate_text(rng, v0) } else { v0.to_string() };
        out.push(v.into_bytes());
    }
}

/// CLI options: `ailuro_cli::options::parse`, then `parse_plugin_list` on every `-panda` value.
/// Input: `join_parts(argv)`.
pub struct OptionsTarget;

impl Target for OptionsTarget {
    fn name(&self) -> &'static str {
        "options"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        [
            "-m 128 -kernel k.elf -nographic -serial stdio -monitor none -no-reboot",
            "-kernel k -record rec,overwrite=on -icount sleep=off -rtc base=2024-01-01T00:00:00",
            "-replay rec -panda trace:file=t.txt;count -pandalog out.plog",
            "-m 3G -S -monitor unix:/tmp/m,server,nowait -device isa-debug-exit,iobase=0xf4,iosize=0x04",
            "--version",
        ]
        .iter()
        .map(|s| join_parts(&s.split(' ').map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>()))
        .collect()
    }
    fn corpus_files(&self, dir: &Path) -> Vec<Vec<u8>> {
        // One command line per file, split on whitespace.
        corpus::files_in(dir)
            .into_iter()
            .map(|b| {
                join_parts(
                    &String::from_utf8_lossy(&b).split_whitespace().map(|w| w.as_bytes().to_vec()).collect::<Vec<_>>(),
                )
            })
            .collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        let mut args = split_parts(base);
        for _ in 0..rng.range(1, 3) {
            let n = args.len();
            match rng.below(8) {
                0..=2 => {
                    let mut new = Vec::new();
                    gen_option(rng, &mut new);
                    let at = rng.below(n + 1);
                    args.splice(at..at, new);
                }
                3 if n > 0 => {
                    args.remove(rng.below(n));
                }
                4 if n > 0 => {
                    let i = rng.below(n);
                    args[i] = mutate_text(rng, &String::from_utf8_lossy(&args[i])).into_bytes();
                }
                5 if n > 1 => {
                    let (a, b) = (rng.below(n), rng.below(n));
                    args.swap(a, b);
                }
                6 if n > 0 => {
                    let a = args[rng.below(n)].clone();
                    args.push(a);
                }
                _ => {
                    let mut b = join_parts(&args);
                    mutate_bytes_n(rng, &mut b, 2);
                    return b;
                }
            }
        }
        join_parts(&args)
    }
    fn run(&self, input: &[u8], _: &mut Ctx) -> Result<(), String> {
        let args: Vec<String> = split_parts(input).iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let o = ailuro_cli::options::parse(&args)?;
        for p in &o.plugins {
            ailuro_plugin::parse_plugin_list(p)?;
        }
        Ok(())
    }
}

/// `-panda` plugin lists: `ailuro_plugin::parse_plugin_list`.
pub struct PluginListTarget;

impl Target for PluginListTarget {
    fn name(&self) -> &'static str {
        "plugin-list"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        [
            "count",
            "trace:file=trace.txt,limit=1000;count",
            "stringsearch:str=GET /,callers=on",
            "osi_linux:kconf_file=p.toml;syscalls;proc_events:verbose",
            "scissors:start=10,end=0x20,name=cut",
            " a : b = c , d ; ; e ",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(base).into_owned();
        let out = match rng.below(4) {
            0 => {
                let mut t = s;
                let mut at = rng.below(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                t.insert(at, *rng.pick(&[';', ':', ',', '=', ' ', '\t', '\n', '\0', 'é']));
                t
            }
            1 => String::from_utf8_lossy(&splice(rng, base, other)).into_owned(),
            _ => mutate_text(rng, &s),
        };
        out.into_bytes()
    }
    fn run(&self, input: &[u8], _: &mut Ctx) -> Result<(), String> {
        let s = String::from_utf8_lossy(input);
        let specs = ailuro_plugin::parse_plugin_list(&s)?;
        for sp in specs {
            for (_, v) in &sp.args {
                let _ = ailuro_plugin::parse_u64(v);
            }
        }
        Ok(())
    }
}

/// Replay set-up from a recording pair: `Machine::new_replay`, which also decodes the machine
/// config, CPU, device and console state blobs of the snapshot (opaque to ailuro-rr). Every
/// fourth accepted input is also replayed to its end (bounded by the watchdog).
pub struct ReplayTarget;

impl Target for ReplayTarget {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn seeds(&self, _: &mut Ctx) -> Vec<Vec<u8>> {
        pair_seeds()
    }
    fn mutate(&self, rng: &mut Rng, base: &[u8], _other: &[u8]) -> Vec<u8> {
        snapshot::mutate_pair(rng, base)
    }
    fn run(&self, input: &[u8], ctx: &mut Ctx) -> Result<(), String> {
        let name = write_pair(input, ctx)?;
        let opts =
            ailuro_machine::RunOptions { sleep: false, start_paused: false, engine: Default::default(), jit_hot: None };
        let mut m = ailuro_machine::Machine::new_replay(&name, opts, ailuro_machine::GuestArch::I386)?;
        if input.len().is_multiple_of(4) {
            let mut host = ailuro_machine::ChannelHost::new(None, |_: &[u8]| {}, |_: &str| {});
            match m.run(&mut host) {
                ailuro_machine::Stop::ReplayFinished(_) => {}
                other => return Err(format!("replay stopped: {other:?}")),
            }
        }
        Ok(())
    }
    fn is_deep(&self, msg: &str) -> bool {
        msg.contains("replay stopped") || msg.contains("state")
    }
}
