//! End-to-end test on Debian's stock amd64 kernel with the busybox initramfs (fetched and built
//! by `scripts/fetch-linux-guest.sh amd64`, which `.ci/run` runs first): the whole boot from
//! power-on and the workload of `guests/linux/init` are recorded on `ailuro-system-x86_64`, the
//! recording replays with the same console, instruction count and final CPU+RAM hash, the
//! workload's deterministic results equal QEMU's, introspection finds the workload's processes
//! and 64-bit system calls, and a window recorded from the monitor replays.
//!
//! Few and sharp, for CI time: one recording of the whole run, one replay of it (with the
//! introspection plugins loaded, which must not change it), one monitor window.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::{deterministic_section, field, tail, tmpdir, REPO};

const EMU: &str = env!("CARGO_BIN_EXE_ailuro-system-x86_64");

fn guest_files() -> (PathBuf, PathBuf) {
    support::guest_files("amd64")
}

fn run(args: &[&str], limit: Duration) -> Output {
    support::run(EMU, args, limit)
}

/// The whole-run recording and its introspected replay, made once per test binary.
struct Shared {
    name: PathBuf,
    console: String,
    instructions: u64,
    /// stderr of the replay (report, plugin summaries).
    replay_err: String,
    dir: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let (kernel, initrd) = guest_files();
        let dir = tmpdir("amd64");
        let name = dir.join("linux64");
        let args = [
            "-m",
            "256",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            // The default command line: KASLR on, page-table isolation on.
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
        let rec = run(&args, Duration::from_secs(1500));
        let rec_err = String::from_utf8_lossy(&rec.stderr);
        let console = String::from_utf8_lossy(&rec.stdout).into_owned();
        assert_eq!(rec.status.code(), Some(0), "poweroff exits 0; stderr: {rec_err}\nconsole tail: {}", tail(&console));
        assert!(console.contains("=== AILURO WORKLOAD END ==="), "workload finished: {}", tail(&console));
        let instructions = support::recorded_instructions(&rec_err);
        let sys = dir.join("syscalls.txt");
        let asid = dir.join("asidstory.txt");
        let plog = dir.join("intro.plog");
        let (out, err) = support::replay(
            EMU,
            &name,
            &[
                "-panda",
                "osi_linux",
                "-panda",
                &format!("syscalls:file={}", sys.display()),
                "-panda",
                "proc_events",
                "-panda",
                &format!("asidstory:file={},svg={}", asid.display(), dir.join("asidstory.svg").display()),
                "-pandalog",
                plog.to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "replay failed: {err}");
        assert!(err.contains("Replay completed successfully"), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), console, "replay console differs from the recording's");
        assert_eq!(field(&err, "instructions:").parse::<u64>().unwrap(), instructions);
        Shared { name, console, instructions, replay_err: err, dir }
    })
}

#[test]
fn amd64_boot_and_workload_record_and_replay_identically() {
    let s = shared();
    let expected = std::fs::read_to_string(Path::new(REPO).join("guests/linux/expected-deterministic.txt")).unwrap();
    assert_eq!(deterministic_section(&s.console), expected, "deterministic results differ from QEMU's");
    assert!(s.console.contains("Linux version 6.1.0-50-amd64 "), "{}", tail(&s.console));
    assert!(s.console.contains("reboot: Power down"), "the guest powered off through ACPI S5");
    // The replay (with plugins) ended in the recording's final state: the replayer compares the
    // state hash at the end with the one the recording stored and fails otherwise.
    assert!(field(&s.replay_err, "final state hash:").len() >= 64, "{}", s.replay_err);
    let log = std::fs::metadata(ailuro_rr::recording_paths(&s.name).1).unwrap().len();
    let per_k = log as f64 * 1000.0 / s.instructions as f64;
    assert!(per_k < 0.5, "nondet log {log} bytes = {per_k:.3} bytes per 1000 instructions");
    eprintln!("amd64 whole run: {} instructions, nondet log {log} bytes", s.instructions);
}

#[test]
fn amd64_introspection_finds_the_workload_processes_and_system_calls() {
    let s = shared();
    let sys = std::fs::read_to_string(s.dir.join("syscalls.txt")).unwrap();
    // Lines: "icount pid tid comm call = result".
    let calls: Vec<(&str, &str)> = sys
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, ' ');
            let (_ic, _pid, _tid, comm, call) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            Some((comm, call))
        })
        .collect();
    assert!(calls.len() > 20_000, "{} system calls", calls.len());
    // 64-bit calls through SYSCALL, named from the x86_64 table with decoded arguments.
    for call in ["execve(", "openat(", "read(", "write(", "exit_group(", "wait4(", "clone(", "newfstatat("] {
        assert!(calls.iter().any(|(_, c)| c.starts_with(call)), "no {call} in the system call log");
    }
    let has = |comm: &str, line: &str| calls.iter().any(|(c, l)| *c == comm && *l == line);
    assert!(has("init", "write(1, \"=== AILURO DETERMINISTIC BEGIN ===\\n\", 35) = 35"), "marker write by init");
    assert!(has("init", "openat(AT_FDCWD, \"/init\", O_RDONLY|O_CLOEXEC) = 3"), "openat of /init");
    for prog in ["awk", "md5sum", "gzip", "sort", "tr", "wc"] {
        assert!(calls.iter().any(|(c, _)| *c == prog), "{prog} made no system calls");
    }
    // The 32-bit (compatibility-mode) busybox of the nondeterministic section: its calls come
    // through SYSENTER/int 0x80 and are named from the i386 table; no 64-bit process uses it.
    assert!(s.console.lines().any(|l| l.starts_with("compat32=/bin/busybox32 ") && l.ends_with(" x86_64")));
    assert!(has("busybox32", "getuid32() = 0"), "compat getuid32");
    assert!(has("busybox32", "readlink(\"/proc/self/exe\", \"/bin/busybox32\", 4096) = 14"), "compat readlink");
    assert!(has("busybox32", "write(1, \"/bin/busybox32\\n\", 15) = 15"), "compat write");
    for only32 in ["getuid32(", "set_thread_area(", "ugetrlimit("] {
        assert!(calls.iter().any(|(c, l)| *c == "busybox32" && l.starts_with(only32)), "compat {only32}");
        assert!(
            !calls.iter().any(|(c, l)| *c != "busybox32" && l.starts_with(only32)),
            "{only32} outside the 32-bit process: the wrong table"
        );
    }
    let asid = std::fs::read_to_string(s.dir.join("asidstory.txt")).unwrap();
    for prog in ["init", "md5sum", "awk", "gzip", "busybox32"] {
        assert!(asid.contains(prog), "asidstory lacks {prog}");
    }
    assert!(
        s.replay_err
            .lines()
            .any(|l| l.starts_with("osi_linux: Linux 6.1.0-50-amd64 (profile linux-6.1.0-50-amd64.toml")),
        "osi_linux found the amd64 profile: {}",
        s.replay_err
    );
    assert!(s.replay_err.lines().any(|l| l.starts_with("proc_events: ")), "{}", s.replay_err);
    let svg = std::fs::read_to_string(s.dir.join("asidstory.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("md5sum"), "asidstory SVG timeline");
    let plog = s.dir.join("intro.plog");
    assert!(std::fs::metadata(&plog).unwrap().len() > 0);
}

#[test]
fn amd64_monitor_window_replays_with_the_same_console() {
    let (kernel, initrd) = guest_files();
    support::monitor_window_replays(EMU, &kernel, &initrd, "amd64-window", Duration::from_secs(1200));
}
