//! End-to-end test on a real operating system: Debian's stock i386 kernel and busybox initramfs
//! (fetched and built by `scripts/fetch-linux-guest.sh i386`, which `scripts/test.sh` runs first)
//! boot to the workload of `guests/linux/init`, power off, and the recording of the whole run
//! replays with the same console, instruction count and final CPU+RAM hash.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::{deterministic_section, field, tail, tmpdir, REPO};

const EMU: &str = env!("CARGO_BIN_EXE_ailuro-system-i386");

fn guest_files() -> (PathBuf, PathBuf) {
    support::guest_files("i386")
}

fn run(args: &[&str], limit: Duration) -> Output {
    support::run(EMU, args, limit)
}

fn replay(name: &Path, extra: &[&str]) -> (Output, String) {
    support::replay(EMU, name, extra)
}

/// The whole-run recording every test here uses, made once per test binary.
struct Shared {
    name: PathBuf,
    console: String,
    instructions: u64,
    /// Final state hash of a plain replay.
    hash: String,
}

fn shared() -> &'static Shared {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let (kernel, initrd) = guest_files();
        let dir = tmpdir("shared");
        let name = dir.join("linux");
        let args = [
            "-m",
            "256",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            // No nokaslr: the kernel randomizes its base (KASLR) and osi_linux finds the slide.
            "-append",
            "console=ttyS0 panic=-1",
            "-display",
            "none",
            "-no-reboot",
            "-icount",
            "sleep=off",
            "-rtc",
            "base=2026-01-01T00:00:00",
            "-record",
            name.to_str().unwrap(),
        ];
        let rec = run(&args, Duration::from_secs(1200));
        let rec_err = String::from_utf8_lossy(&rec.stderr);
        let console = String::from_utf8_lossy(&rec.stdout).into_owned();
        assert_eq!(rec.status.code(), Some(0), "poweroff exits 0; stderr: {rec_err}\nconsole tail: {}", tail(&console));
        assert!(console.contains("=== AILURO WORKLOAD END ==="), "workload finished: {}", tail(&console));
        let instructions = support::recorded_instructions(&rec_err);
        let (out, err) = replay(&name, &[]);
        assert_eq!(out.status.code(), Some(0), "replay failed: {err}");
        assert!(err.contains("Replay completed successfully"), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), console, "replay console differs from the recording's");
        assert_eq!(field(&err, "instructions:").parse::<u64>().unwrap(), instructions);
        let hash = field(&err, "final state hash:").to_string();
        Shared { name, console, instructions, hash }
    })
}

#[test]
fn linux_boot_and_workload_record_and_replay_identically() {
    let s = shared();
    let expected = std::fs::read_to_string(Path::new(REPO).join("guests/linux/expected-deterministic.txt")).unwrap();
    assert_eq!(deterministic_section(&s.console), expected, "deterministic results differ from QEMU's");
    assert!(s.console.contains("reboot: Power down"), "the guest powered off through ACPI S5");
    // The whole run's log stays small (docs/BENCHMARKS.md has the figures).
    let log = std::fs::metadata(ailuro_rr::recording_paths(&s.name).1).unwrap().len();
    let per_k = log as f64 * 1000.0 / s.instructions as f64;
    assert!(per_k < 0.5, "nondet log {log} bytes = {per_k:.3} bytes per 1000 instructions");
}

#[test]
fn plugins_on_a_linux_replay_see_the_workload_and_do_not_change_it() {
    let s = shared();
    let dir = tmpdir("plugins");
    std::fs::write(
        dir.join("keys_search_strings.txt"),
        "# strings the workload prints or computes\n\"AILURO DETERMINISTIC BEGIN\"\n\"sh.sumsq_1_1000=333833500\"\n",
    )
    .unwrap();
    let plog = dir.join("out.plog");
    let trace = dir.join("trace.txt");
    let start = s.instructions / 2;
    let ss = format!("stringsearch:name=keys,dir={}", dir.display());
    let tr = format!("trace:start={start},end={},file={}", start + 1000, trace.display());
    let (out, err) =
        replay(&s.name, &["-panda", "count", "-panda", &ss, "-panda", &tr, "-pandalog", plog.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "replay with plugins failed: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    // Plugins only watch.
    assert_eq!(String::from_utf8_lossy(&out.stdout), s.console, "console changed under plugins");
    assert_eq!(field(&err, "final state hash:"), s.hash, "state changed under plugins");

    // count: its total is the replay's own instruction count.
    // "count: N instructions, B blocks (icount S..E), A address spaces"
    let total: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("count: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count summary in {err}"));
    assert_eq!(total, s.instructions, "count total vs replay");

    // stringsearch: both strings are found in memory traffic.
    let matches = std::fs::read_to_string(dir.join("keys_string_matches.txt")).unwrap();
    let rows: Vec<Vec<u64>> = matches
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(2).map(|c| c.parse().unwrap()).collect())
        .collect();
    for k in 0..2 {
        assert!(rows.iter().any(|r| r[k] > 0), "string {k} not found: {matches}");
    }

    // trace: 1000 instructions with disassembly.
    let t = std::fs::read_to_string(&trace).unwrap();
    let lines = t.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(lines, 1000, "{}", &t[..t.len().min(2000)]);

    // The plugin log holds their records.
    let mut r = ailuro_plog::PlogReader::open(&plog).unwrap();
    assert!(r.is_complete());
    let mut plugins = std::collections::BTreeSet::new();
    while let Some(rec) = r.next_record().unwrap() {
        plugins.insert(rec.plugin.clone());
    }
    for p in ["count", "stringsearch", "trace"] {
        assert!(plugins.contains(p), "no {p} records in the plugin log: {plugins:?}");
    }
}

#[test]
fn memsavep_dumps_the_kernel_and_scissors_cuts_a_replayable_recording() {
    let s = shared();
    let dir = tmpdir("cut");
    // memsavep at 30%: the decompressed kernel is in place, its banner at linux_banner's
    // physical address (0xc1a16740 - PAGE_OFFSET, from the kernel profile) moved by the KASLR
    // slide, a multiple of the kernel's 16 MiB CONFIG_PHYSICAL_ALIGN (the guest boots without
    // nokaslr).
    let img = dir.join("mem.raw");
    let (out, err) = replay(&s.name, &["-panda", &format!("memsavep:percent=30,file={}", img.display())]);
    assert_eq!(out.status.code(), Some(0), "memsavep replay: {err}");
    let mem = std::fs::read(&img).unwrap();
    assert_eq!(mem.len() as u64, 256 << 20, "a raw image of all of RAM");
    let banner = b"Linux version 6.1.0-50-686";
    let at = (0x1a1_6740..mem.len() - banner.len())
        .step_by(0x100_0000)
        .find(|&a| &mem[a..a + banner.len()] == banner)
        .expect("kernel banner at its physical address plus a KASLR slide");
    eprintln!("memsavep: kernel banner at physical {at:#x} (slide {:#x})", at - 0x1a1_6740);

    // scissors: cut 2% out of the middle; the cut replays on its own.
    let (a, b) = (s.instructions / 100 * 40, s.instructions / 100 * 42);
    let cut = dir.join("cut");
    let (out, err) = replay(&s.name, &["-panda", &format!("scissors:start={a},end={b},name={}", cut.display())]);
    assert_eq!(out.status.code(), Some(0), "scissors replay: {err}");
    let (out, err) = replay(&cut, &[]);
    assert_eq!(out.status.code(), Some(0), "the cut does not replay: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    assert_eq!(field(&err, "instructions:").parse::<u64>().unwrap(), b - a);
}

#[test]
fn a_window_recorded_from_the_monitor_replays_with_the_same_console() {
    let (kernel, initrd) = guest_files();
    support::monitor_window_replays(EMU, &kernel, &initrd, "window", Duration::from_secs(900));
}

#[test]
fn bad_kernels_and_initrds_give_clear_errors() {
    let (kernel, initrd) = guest_files();
    let dir = tmpdir("bad");
    let boot = |k: &Path, i: &Path, m: &str| -> (Option<i32>, String) {
        let out = run(
            &["-m", m, "-kernel", k.to_str().unwrap(), "-initrd", i.to_str().unwrap(), "-display", "none"],
            Duration::from_secs(60),
        );
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // An x86_64 kernel on the i386 machine: the i386 image with XLF_KERNEL_64 set in xloadflags
    // (0x236), which is what marks a 64-bit bzImage.
    let k = std::fs::read(&kernel).unwrap();
    let mut k64 = k.clone();
    k64[0x236] |= 1;
    let k64p = dir.join("x86_64-vmlinuz");
    std::fs::write(&k64p, &k64).unwrap();
    let (code, err) = boot(&k64p, &initrd, "256");
    assert_ne!(code, Some(0));
    assert!(err.contains("x86_64 kernel"), "{err}");
    // A truncated bzImage.
    let cut = dir.join("cut-vmlinuz");
    std::fs::write(&cut, &k[..4096]).unwrap();
    let (code, err) = boot(&cut, &initrd, "256");
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot load kernel"), "{err}");
    // A boot protocol older than 2.06.
    let mut old = k.clone();
    old[0x206..0x208].copy_from_slice(&0x0204u16.to_le_bytes());
    let oldp = dir.join("old-vmlinuz");
    std::fs::write(&oldp, &old).unwrap();
    let (code, err) = boot(&oldp, &initrd, "256");
    assert_ne!(code, Some(0));
    assert!(err.contains("protocol") && err.contains("2.04"), "{err}");
    // An initrd that does not fit in RAM.
    let big = dir.join("big-initrd");
    std::fs::write(&big, vec![0u8; 40 << 20]).unwrap();
    let (code, err) = boot(&kernel, &big, "48");
    assert_ne!(code, Some(0));
    assert!(err.contains("initrd") && err.contains("does not fit"), "{err}");
    // Nothing panicked (checked by run()).
}

#[test]
fn linux_introspection_finds_the_workload_processes_and_system_calls() {
    let s = shared();
    let dir = tmpdir("osi");
    let sys = dir.join("syscalls.txt");
    let story = dir.join("asidstory.txt");
    let svg = dir.join("asidstory.svg");
    let plog = dir.join("osi.plog");
    let (out, err) = replay(
        &s.name,
        &[
            "-panda",
            &format!("syscalls:file={}", sys.display()),
            "-panda",
            "proc_events",
            "-panda",
            &format!("asidstory:file={},svg={}", story.display(), svg.display()),
            "-pandalog",
            plog.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "replay with OSI plugins: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    assert_eq!(field(&err, "final state hash:"), s.hash, "state changed under plugins");

    // System calls: "icount pid tid comm call = result".
    let text = std::fs::read_to_string(&sys).unwrap();
    let calls: Vec<(u64, String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.splitn(5, ' ');
            let _icount = f.next()?;
            let pid: u64 = f.next()?.parse().ok()?;
            let _tid = f.next()?;
            let comm = f.next()?.to_string();
            Some((pid, comm, f.next()?.to_string()))
        })
        .collect();
    assert!(calls.len() > 1000, "too few system calls: {}", calls.len());
    // The workload's shell is /init itself (busybox sh running the script: comm "init").
    for comm in ["init", "awk", "md5sum", "gzip", "sort"] {
        assert!(calls.iter().any(|(_, c, _)| c == comm), "no system call by {comm}");
    }
    for call in ["execve(", "write(", "read(", "exit_group(", "wait4("] {
        assert!(calls.iter().any(|(_, _, c)| c.starts_with(call)), "no {call} call");
    }
    assert!(
        calls.iter().any(|(_, _, c)| (c.starts_with("open(") || c.starts_with("openat(")) && c.contains("\"/")),
        "no open with a path string"
    );
    // The workload prints its markers with write(1, ...): the buffer and the byte count.
    assert!(
        calls.iter().any(|(_, _, c)| c.starts_with("write(1,") && c.contains("AILURO DETERMINISTIC BEGIN")),
        "no write of the workload's marker"
    );
    // Parent/child: the shell forks a child whose pid then makes calls of its own.
    let child = calls.iter().find_map(|(_, comm, c)| {
        let ret: u64 = c.rsplit("= ").next()?.trim().parse().ok()?;
        ((c.starts_with("clone(") || c.starts_with("fork(") || c.starts_with("vfork(")) && comm == "init" && ret > 1)
            .then_some(ret)
    });
    let child = child.expect("a fork/clone by the shell returning a child pid");
    assert!(calls.iter().any(|(pid, _, _)| *pid == child), "child {child} made no call");

    // The process timeline covers the whole replay and names the workload's programs.
    let st = std::fs::read_to_string(&story).unwrap();
    assert!(st.contains(&format!("instructions 0..{}", s.instructions)), "{}", &st[..st.len().min(400)]);
    for comm in ["init", "awk", "md5sum", "gzip"] {
        assert!(st.contains(comm), "asidstory lacks {comm}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "not an SVG");
    assert!(svg.contains("md5sum"));

    // Process starts in the plugin log.
    let mut r = ailuro_plog::PlogReader::open(&plog).unwrap();
    let mut starts = Vec::new();
    let mut slide = None;
    while let Some(rec) = r.next_record().unwrap() {
        if rec.kind == "profile" {
            // The guest boots without nokaslr: the profile was found with the kernel's KASLR
            // slide (random per boot configuration, but fixed by the recording).
            slide = Some(rec.get("kaslr_slide").and_then(|v| v.as_i64()).expect("kaslr_slide in the profile record"));
        }
        if rec.kind == "proc_start" {
            // busybox runs applets as execve("/proc/self/exe", ["md5sum", ...]): argv[0] names it.
            let argv0 = rec.get("argv").and_then(|v| v.as_list()).and_then(|l| l.first()).and_then(|v| v.as_str());
            starts.push(argv0.unwrap_or_default().to_string());
        }
    }
    // (busybox sh runs many applets, e.g. md5sum, in a forked child without exec: those show up
    // in the system calls above under their names, but start no program.)
    for prog in ["tr", "wc", "cat", "./child.sh"] {
        assert!(starts.iter().any(|c| c == prog), "no proc_start of {prog}: {starts:?}");
    }
    let slide = slide.expect("an osi_linux profile record");
    // Printed, not asserted non-zero: the kernel may draw its lowest slot (slide 0) if the
    // emulator's timing, from which the boot's entropy comes, changes.
    eprintln!("KASLR slide: {slide:#x}; {}", err.lines().find(|l| l.starts_with("osi_linux:")).unwrap_or(""));
}

#[test]
fn a_kernel_panic_is_reported_and_exits_non_zero_under_no_reboot() {
    let (kernel, initrd) = guest_files();
    // No init in the initramfs and no root device: the kernel panics at the end of its boot.
    let out = run(
        &[
            "-m",
            "256",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            "console=ttyS0 rdinit=/no-such-init root=/dev/no-such-disk panic=-1",
            "-display",
            "none",
            "-no-reboot",
            "-icount",
            "sleep=off",
        ],
        Duration::from_secs(1200),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit status; stderr: {err}");
    assert!(err.contains("guest kernel panic at instruction") && err.contains("Kernel panic - not syncing"), "{err}");
}

/// The 686-pae kernel (`scripts/fetch-linux-guest.sh i386-pae`) and its initramfs (identical to
/// the i386 one).
fn pae_guest_files() -> (PathBuf, PathBuf) {
    let d = support::cache_dir("i386-pae");
    let (k, i) = (d.join("vmlinuz"), d.join("initramfs.cpio.gz"));
    assert!(
        k.is_file() && i.is_file(),
        "Linux PAE guest not found in {}: run scripts/fetch-linux-guest.sh i386-pae",
        d.display()
    );
    (k, i)
}

#[test]
fn linux_runs_the_workload_on_the_pic_only_interrupt_path() {
    // Also the PAE test: Debian's 686-pae kernel (PAE paging, 64-bit page-table entries) boots
    // here instead of a further full Linux run.
    let (kernel, initrd) = pae_guest_files();
    // No local APIC, no IOAPIC: timer and devices through the 8259 pair and the PIT.
    let out = run(
        &[
            "-m",
            "256",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            "console=ttyS0 noapic nolapic",
            "-display",
            "none",
            "-no-reboot",
            "-icount",
            "sleep=off",
        ],
        Duration::from_secs(1200),
    );
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", tail(&console));
    assert!(console.contains("APIC disabled via kernel command line"), "{}", tail(&console));
    assert!(console.contains("Linux version 6.1.0-50-686-pae "), "the PAE kernel ran: {}", tail(&console));
    // Only a PAE kernel can use NX (a non-PAE one says it "cannot be enabled"): execute-disable
    // pages through 64-bit entries and EFER.NXE.
    assert!(console.contains("NX (Execute Disable) protection: active"), "{}", tail(&console));
    let expected = std::fs::read_to_string(Path::new(REPO).join("guests/linux/expected-deterministic.txt")).unwrap();
    assert_eq!(deterministic_section(&console), expected);
}
