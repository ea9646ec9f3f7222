//! End-to-end tests of how `ailuro-system-i386` behaves when things go wrong around it
//! (docs/RELIABILITY.md): termination signals during a recording, output that cannot be written
//! (console, recording trailer), conflicting options, hostile monitor input, symbolic links and
//! directories where a recording should go, every built-in plugin with `-pandalog`, a run that
//! ends in a triple fault, and bytes appended to a complete log.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EMU: &str = env!("CARGO_BIN_EXE_ailuro-system-i386");

fn guest(name: &str) -> PathBuf {
    ailuro_guests::guest_path(name).unwrap_or_else(|| panic!("bundled guest {name} is not built"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-hard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn emu(args: &[&str]) -> Command {
    let mut c = Command::new(EMU);
    c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn finish(child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "emulator panicked: {err}");
            return out;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("emulator timed out after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(c: &mut Command) -> Output {
    finish(c.spawn().expect("start emulator"), Duration::from_secs(120))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Replay `name` and check it completes; returns (stdout, stderr).
fn replay_ok(name: &Path, extra: &[&str]) -> (String, String) {
    let out = run(emu(&["-replay", s(name)]).args(extra));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "replay failed: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

fn field(report: &str, key: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no '{key}' in {report}"))
        .trim()
        .parse()
        .unwrap()
}

/// "recording NAME complete: N instructions" from the recorder's stderr.
fn recorded_instructions(err: &str) -> u64 {
    let line = err.lines().find(|l| l.contains(" complete: ")).unwrap_or_else(|| panic!("no summary in {err}"));
    line.split(" complete: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn record_hello(dir: &Path, name: &str) -> PathBuf {
    let rec = dir.join(name);
    let out = run(&mut emu(&["-m", "8", "-kernel", s(&guest("hello")), "-display", "none", "-record", s(&rec)]));
    assert!(out.status.success() || out.status.code() == Some(1), "{}", stderr(&out));
    rec
}

#[test]
fn termination_signals_finish_the_recording_like_quit() {
    let dir = tmpdir("signals");
    for (sig, num) in [(libc::SIGINT, 2), (libc::SIGTERM, 15), (libc::SIGHUP, 1)] {
        let rec = dir.join(format!("sig{num}"));
        // Enough iterations that the guest is still running when the signal comes, even
        // compiled (~2,000 MIPS: 40e9 instructions).
        let long_run = ["-append", "iters=2000000000"];
        let mut child = emu(&["-m", "8", "-kernel", s(&guest("cpubound")), "-display", "none", "-record", s(&rec)])
            .args(long_run)
            .spawn()
            .unwrap();
        // The guest prints its banner first: then the recording is under way.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.contains("cpubound"), "{first}");
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let out = finish(child, Duration::from_secs(60));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "QEMU exits 0 on signal {num}: {err}");
        assert!(err.contains(&format!("terminating on signal {num} from pid")), "{err}");
        let n = recorded_instructions(&err);
        let (console, rerr) = replay_ok(&rec, &[]);
        assert_eq!(console, first + &rest, "signal {num}: replayed console");
        assert_eq!(field(&rerr, "instructions:"), n, "signal {num}");
        assert!(rerr.contains("recording ended by: quit"), "{rerr}");
    }
}

#[test]
fn console_that_cannot_be_written_is_an_error_and_the_recording_survives() {
    let dir = tmpdir("console");
    let rec = dir.join("full");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out =
        run(emu(&["-m", "8", "-kernel", s(&guest("hello")), "-display", "none", "-record", s(&rec)]).stdout(full()));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write the console"), "{err}");
    assert!(err.contains(" complete: "), "the recording is finished: {err}");
    let (_, rerr) = replay_ok(&rec, &[]);
    assert!(rerr.contains("recording ended by: an emulator error"), "{rerr}");

    // A replay whose console goes to a full disk, or into a closed pipe.
    let out = run(emu(&["-replay", s(&rec)]).stdout(full()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let mut child = emu(&["-replay", s(&rec)]).spawn().unwrap();
    drop(child.stdout.take());
    let out = finish(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// A shared library for LD_PRELOAD that makes every write to a nondet log fail with ENOSPC once
/// the file named by `AILURO_TEST_DISK_FULL` exists: a disk that fills up in the middle of a
/// recording, at the moment the test chooses.
const FULL_DISK_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static int is_full_log(int fd) {
    const char *flag = getenv("AILURO_TEST_DISK_FULL");
    if (!flag || access(flag, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, "-rr-nondet.log") != NULL;
}
ssize_t write(int fd, const void *buf, size_t len) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    if (is_full_log(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, len);
}
ssize_t writev(int fd, const void *iov, int cnt) {
    static ssize_t (*real)(int, const void *, int);
    if (!real) real = dlsym(RTLD_NEXT, "writev");
    if (is_full_log(fd)) { errno = ENOSPC; return -1; }
    return real(fd, iov, cnt);
}
"#;

#[test]
fn a_recording_that_cannot_be_finished_exits_non_zero() {
    let dir = tmpdir("trailer");
    let src = dir.join("shim.c");
    let lib = dir.join("shim.so");
    std::fs::write(&src, FULL_DISK_SHIM).unwrap();
    let cc = Command::new("cc").args(["-shared", "-fPIC", "-O1", "-o", s(&lib), s(&src), "-ldl"]).output();
    let cc = cc.expect("a C compiler (scripts/setup.sh installs gcc)");
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let flag = dir.join("disk-is-full");
    let sock = dir.join("mon.sock");
    let rec = dir.join("r");
    let mut child = emu(&["-m", "8", "-kernel", s(&guest("cpubound")), "-display", "none", "-S"])
        .args(["-append", "iters=2000000000"])
        .args(["-monitor", &format!("unix:{},server,nowait", s(&sock))])
        .env("LD_PRELOAD", &lib)
        .env("AILURO_TEST_DISK_FULL", &flag)
        .spawn()
        .unwrap();
    let mut mon = Monitor::connect(&sock);
    assert!(mon.ask(&format!("begin_record {}", s(&rec))).contains("recording to"));
    assert!(mon.ask("cont").ends_with("(ailuro) "));
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&flag, b"").unwrap();
    mon.ask("quit");
    let out = finish(child_take(&mut child), Duration::from_secs(60));
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "a lost trailer must not exit 0: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    // The log is what it is (cut short); it is never passed off as complete.
    let out = run(&mut emu(&["-replay", s(&rec)]));
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn conflicting_or_useless_options_are_refused() {
    let dir = tmpdir("options");
    let rec = record_hello(&dir, "h");
    for (args, want) in [
        (vec!["-replay", s(&rec), "-S"], "no monitor to continue it"),
        (vec!["-kernel", s(&guest("hello")), "-S", "-display", "none"], "no monitor to continue it"),
        (vec!["-replay", s(&rec), "-replay", s(&rec)], "-replay given twice"),
        (vec!["-kernel", s(&guest("hello")), "-record", "a", "-record", "b"], "-record given twice"),
    ] {
        let out = run(&mut emu(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // -S with a monitor stays allowed (nothing to assert beyond a clean quit).
    let sock = dir.join("m.sock");
    let mut child =
        emu(&["-replay", s(&rec), "-S", "-monitor", &format!("unix:{},server,nowait", s(&sock))]).spawn().unwrap();
    Monitor::connect(&sock).ask("quit");
    assert_eq!(finish(child_take(&mut child), Duration::from_secs(30)).status.code(), Some(0));
}

struct Monitor {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Monitor {
    fn connect(sock: &Path) -> Monitor {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("monitor socket: {e}"),
            }
        };
        let mut m = Monitor { w: stream.try_clone().unwrap(), r: BufReader::new(stream) };
        assert!(m.reply().contains("Ailuro monitor"), "greeting");
        m
    }

    /// Everything up to and including the next prompt.
    fn reply(&mut self) -> String {
        let mut text = String::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if self.r.read_until(b' ', &mut buf).unwrap() == 0 {
                return text;
            }
            text.push_str(&String::from_utf8_lossy(&buf));
            if text.ends_with("(ailuro) ") {
                return text;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.w.write_all(bytes).unwrap();
        self.reply()
    }

    fn ask(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\n").as_bytes())
    }
}

fn child_take(c: &mut Child) -> Child {
    std::mem::replace(c, Command::new("true").spawn().unwrap())
}

#[test]
fn monitor_answers_bad_bytes_and_ignores_an_unfinished_last_line() {
    let dir = tmpdir("monitor");
    let sock = dir.join("m.sock");
    let mut child = emu(&["-kernel", s(&guest("hello")), "-S", "-display", "none"])
        .args(["-monitor", &format!("unix:{},server,nowait", s(&sock))])
        .spawn()
        .unwrap();
    let mut m = Monitor::connect(&sock);
    let reply = m.send(b"info \xff\xfe status\n");
    assert!(reply.contains("not valid UTF-8"), "{reply}");
    assert!(m.ask("info status").contains("paused"), "the connection survives");
    // "quit" without its newline, then the connection closes: not a command.
    m.w.write_all(b"quit").unwrap();
    m.w.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(m.reply(), "");
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "an unfinished 'quit' line must not quit");
    Monitor::connect(&sock).ask("quit");
    assert_eq!(finish(child_take(&mut child), Duration::from_secs(30)).status.code(), Some(0));
}

#[test]
fn recording_targets_are_checked_before_anything_is_written() {
    let dir = tmpdir("targets");
    let hello = guest("hello");
    let (snp, log) = ailuro_rr::recording_paths(&dir.join("r"));
    let rec_args = |overwrite: bool| {
        let name = format!("{}{}", s(&dir.join("r")), if overwrite { ",overwrite=on" } else { "" });
        vec!["-m".to_string(), "8".into(), "-kernel".into(), s(&hello).into(), "-display".into(), "none".into()]
            .into_iter()
            .chain(["-record".to_string(), name])
            .collect::<Vec<_>>()
    };
    // A dangling symbolic link where the log goes: refused, and no orphan snapshot.
    std::os::unix::fs::symlink(dir.join("nowhere"), &log).unwrap();
    let out = run(emu(&[]).args(rec_args(false)));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symbolic link"), "{}", stderr(&out));
    assert!(!snp.exists(), "no orphan snapshot");
    // The retry with overwrite=on replaces the link itself; the link's target is never written.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let out = run(emu(&[]).args(rec_args(true)));
    assert_eq!(out.status.code(), Some(1), "hello exits with isa-debug-exit 0: {}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!std::fs::symlink_metadata(&log).unwrap().file_type().is_symlink());
    replay_ok(&dir.join("r"), &[]);
    // A directory where the log goes: refused even with overwrite=on, the old recording intact.
    std::fs::remove_file(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    let before = std::fs::read(&snp).unwrap();
    let out = run(emu(&[]).args(rec_args(true)));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(&snp).unwrap(), before, "the snapshot is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn every_built_in_plugin_combination_works_with_pandalog() {
    let dir = tmpdir("plugins");
    let rec = record_hello(&dir, "h");
    let trace = dir.join("t.txt");
    let trace_arg = format!("trace:file={}", s(&trace));
    std::fs::write(dir.join("keys_search_strings.txt"), "\"Hello\"\n").unwrap();
    let search = format!("stringsearch:name=keys,dir={}", s(&dir));
    let combos: Vec<Vec<&str>> = vec![
        vec!["console", &trace_arg],
        vec![&trace_arg, "console"],
        vec!["count", &search, "console", &trace_arg],
        vec!["console", "count:modes=true", &search],
    ];
    for (i, combo) in combos.iter().enumerate() {
        let plog = dir.join(format!("p{i}.plog"));
        let mut args = vec!["-pandalog".to_string(), s(&plog).to_string()];
        for p in combo {
            args.extend(["-panda".to_string(), p.to_string()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, err) = replay_ok(&rec, &argv);
        let r = ailuro_plog::PlogReader::open(&plog).unwrap_or_else(|e| panic!("{combo:?}: {e}"));
        assert!(r.is_complete(), "{combo:?}: {err}");
        assert!(r.record_count() > 0, "{combo:?}");
    }
}

#[test]
fn a_run_ending_in_a_triple_fault_replays_to_the_same_state() {
    let dir = tmpdir("triple");
    // lidt with an empty IDT, then ud2: #UD -> #GP -> double fault -> triple fault.
    let asm = "section .multiboot\n    dd 0x1BADB002, 0, -0x1BADB002\nsection .text\nglobal _start\n\
               _start: lidt [idt0]\n    ud2\nsection .data\nidt0: dw 0\n    dd 0\n";
    let ld = "ENTRY(_start)\nSECTIONS { . = 0x100000; .multiboot : { *(.multiboot) } .text : { *(.text) } \
              .data : { *(.data) } }\n";
    std::fs::write(dir.join("t.asm"), asm).unwrap();
    std::fs::write(dir.join("t.ld"), ld).unwrap();
    let ok = |c: &mut Command| assert!(c.status().expect("nasm and ld (scripts/setup.sh)").success());
    ok(Command::new("nasm").args(["-f", "elf32", "-o", s(&dir.join("t.o")), s(&dir.join("t.asm"))]));
    ok(Command::new("ld")
        .args(["-m", "elf_i386", "-T", s(&dir.join("t.ld")), "-o", s(&dir.join("t.elf"))])
        .arg(dir.join("t.o")));
    let rec = dir.join("t");
    let out = run(&mut emu(&["-kernel", s(&dir.join("t.elf")), "-display", "none", "-no-reboot", "-record", s(&rec)]));
    assert_eq!(out.status.code(), Some(2), "triple fault under -no-reboot: {}", stderr(&out));
    let (_, err) = replay_ok(&rec, &[]);
    assert!(err.contains("triple fault"), "{err}");
    assert_eq!(field(&err, "instructions:"), recorded_instructions(&stderr(&out)));
}

#[test]
fn bytes_appended_to_a_complete_log_are_reported_and_ignored() {
    let dir = tmpdir("trailing");
    let rec = record_hello(&dir, "h");
    let (want, _) = replay_ok(&rec, &[]);
    let (_, log) = ailuro_rr::recording_paths(&rec);
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(b"garbage after the trailer").unwrap();
    let (console, err) = replay_ok(&rec, &[]);
    assert_eq!(console, want);
    assert!(err.contains("trailing garbage"), "{err}");
    assert!(err.contains("recording ended by"), "the trailer was found and checked: {err}");
}
