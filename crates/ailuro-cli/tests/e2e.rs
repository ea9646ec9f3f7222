//! End-to-end tests: record each bundled guest with `ailuro-system-i386`, replay it, and compare
//! console output, instruction count and final CPU+RAM hash; then break recordings on purpose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EMU: &str = env!("CARGO_BIN_EXE_ailuro-system-i386");

fn guest(name: &str) -> PathBuf {
    ailuro_guests::guest_path(name).unwrap_or_else(|| panic!("bundled guest {name} is not built"))
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(EMU)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emulator");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
        // Keep stdin open briefly so input arrives while the guest runs, then close it.
    }
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "emulator panicked: {err}");
    out
}

fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("emulator timed out after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// "recording NAME complete: N instructions" from the recorder's stderr.
fn recorded_instructions(stderr: &str) -> u64 {
    let line = stderr.lines().find(|l| l.contains("complete:")).unwrap_or_else(|| panic!("no summary in {stderr}"));
    let after = line.split("complete: ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no '{key}' in replay report: {report}"))
        .trim()
}

struct Recorded {
    name: PathBuf,
    console: Vec<u8>,
    status: i32,
    instructions: u64,
}

fn record(dir: &Path, g: &str, extra: &[&str], stdin: Option<&[u8]>) -> Recorded {
    let name = dir.join(g);
    let kernel = guest(g);
    let mut args = vec!["-m", "32", "-kernel", kernel.to_str().unwrap(), "-display", "none", "-no-reboot"];
    args.extend(["-icount", "sleep=off", "-record", name.to_str().unwrap()]);
    args.extend(extra);
    let out = run(&args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Recorded {
        name,
        console: out.stdout,
        status: out.status.code().unwrap_or(-1),
        instructions: recorded_instructions(&stderr),
    }
}

/// Replay `name`, asserting success and the same console; returns (instructions, final hash).
fn replay_ok(rec: &Recorded) -> (u64, String) {
    replay_ok_with(rec, &[])
}

/// [`replay_ok`] with extra options (e.g. the engine).
fn replay_ok_with(rec: &Recorded, extra: &[&str]) -> (u64, String) {
    let (n, h, _) = replay_ok_full(rec, extra);
    (n, h)
}

/// [`replay_ok_with`], also returning the replay summary (stderr).
fn replay_ok_full(rec: &Recorded, extra: &[&str]) -> (u64, String, String) {
    let mut args = vec!["-replay", rec.name.to_str().unwrap(), "-display", "none"];
    args.extend(extra);
    let out = run(&args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "replay failed: {stderr}");
    assert!(stderr.contains("Replay completed successfully"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&rec.console),
        "replay console differs from the recording's"
    );
    let n: u64 = field(&stderr, "instructions:").parse().unwrap();
    assert_eq!(n, rec.instructions, "instruction count");
    (n, field(&stderr, "final state hash:").to_string(), stderr.into_owned())
}

fn assert_passes(g: &str, rec: &Recorded) {
    let console = String::from_utf8_lossy(&rec.console);
    assert!(console.contains("PASS"), "{g}: console: {console}");
    assert!(!console.contains("FAIL"), "{g}: console: {console}");
    assert_eq!(rec.status, 1, "{g}: exit status (isa-debug-exit 0 -> 1); console: {console}");
}

#[test]
fn every_bundled_guest_records_and_replays_identically() {
    // Recorded with the translator (the default) and with the interpreter; each recording
    // replayed with both: the engine is not part of a recording, so all four runs end in the
    // same instruction count and state hash (and the replay checks the recorded periodic
    // checkpoints on the way). These guests are short: the translator compiles after 4
    // dispatches here (`-accel jit,hot=4`) so that it does run their loops.
    let dir = tmpdir("guests");
    const JIT: &[&str] = &["-accel", "jit,hot=4"];
    let mut compiled = Vec::new();
    let guests: [(&str, &[&str]); 7] = [
        ("hello", &[]),
        ("timer", &[]),
        ("apic", &[]),
        ("paging", &[]),
        // A fixed RTC base: otherwise the two recordings read the host's wall clock, and the
        // console comparison below fails whenever they straddle a second.
        ("clock", &["-rtc", "base=2026-01-01T00:00:00"]),
        ("smc", &[]),
        ("cpubound", &["-append", "iters=200000"]),
    ];
    for (g, extra) in guests {
        let rec = record(&dir, g, &[JIT, extra].concat(), None);
        assert_passes(g, &rec);
        let (n1, h1, summary) = replay_ok_full(&rec, JIT);
        let blocks: u64 = field(&summary, "engine: jit,").split_whitespace().next().unwrap().parse().unwrap();
        compiled.push((g, blocks));
        let (n2, h2) = replay_ok_with(&rec, &["-accel", "interp"]);
        assert_eq!((n1, &h1), (n2, &h2), "{g}: translator and interpreter replays");
        let interp_dir = dir.join("interp");
        std::fs::create_dir_all(&interp_dir).unwrap();
        let mut with = vec!["-accel", "interp"];
        with.extend(extra);
        let rec_i = record(&interp_dir, g, &with, None);
        assert_passes(g, &rec_i);
        assert_eq!(rec_i.console, rec.console, "{g}: console with either engine");
        let (n3, h3) = replay_ok_with(&rec_i, JIT);
        assert_eq!((n3, &h3), (n1, &h1), "{g}: interpreter recording replayed by the translator");
        // The count plugin runs on compiled code (its block counting is the dispatcher's):
        // the same instructions and blocks as under the interpreter.
        let count = |extra: &[&str]| {
            let mut args = vec!["-replay", rec.name.to_str().unwrap(), "-display", "none", "-panda", "count"];
            args.extend(extra);
            let out = run(&args, None);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{g}: count replay: {err}");
            err.lines().find(|l| l.starts_with("count: ")).unwrap_or_else(|| panic!("{g}: {err}")).to_string()
        };
        let (cj, ci) = (count(JIT), count(&["-accel", "interp"]));
        assert_eq!(cj, ci, "{g}: count with either engine");
        assert!(cj.starts_with(&format!("count: {n1} instructions")), "{g}: {cj}");
    }
    // Every guest with a loop had compiled code to compare (hello only prints and exits).
    for (g, blocks) in compiled {
        assert!(g == "hello" || blocks > 0, "{g}: the translator compiled nothing");
    }
}

#[test]
fn serial_input_is_recorded_and_replayed() {
    let dir = tmpdir("serial");
    let rec = record(&dir, "serial", &["-serial", "stdio"], Some(b"hello\nabc\nquit\n"));
    let console = String::from_utf8_lossy(&rec.console);
    assert!(console.contains("HELLO") || console.contains("hello"), "{console}");
    replay_ok(&rec);
}

#[test]
fn recording_refuses_to_overwrite_unless_asked() {
    let dir = tmpdir("overwrite");
    let rec = record(&dir, "hello", &[], None);
    let snp_before = std::fs::read(dir.join("hello-rr-snp")).unwrap();
    let kernel = guest("hello");
    let out = run(&["-kernel", kernel.to_str().unwrap(), "-record", rec.name.to_str().unwrap()], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.join("hello-rr-snp")).unwrap(), snp_before, "existing recording untouched");
    let name = format!("{},overwrite=on", rec.name.display());
    let out = run(&["-m", "32", "-kernel", kernel.to_str().unwrap(), "-record", &name, "-icount", "sleep=off"], None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Rewrite a recording's log through `edit`, keeping its header (and so its snapshot binding).
fn rewrite_log(name: &Path, edit: impl Fn(usize, &mut ailuro_rr::LogEntry)) {
    let (_, log) = ailuro_rr::recording_paths(name);
    let mut reader = ailuro_rr::LogReader::open(&log).unwrap();
    let header = reader.header().clone();
    let trailer = reader.trailer().cloned().unwrap();
    let mut entries = Vec::new();
    while let Some(e) = reader.next_entry().unwrap() {
        entries.push(e);
    }
    let mut w = ailuro_rr::LogWriter::create(&log, &header, true).unwrap();
    for (i, e) in entries.iter_mut().enumerate() {
        edit(i, e);
        w.append(e).unwrap();
    }
    w.finish(ailuro_rr::LogEnd {
        end_icount: trailer.end_icount,
        reason: trailer.reason,
        final_state_hash: trailer.final_state_hash,
    })
    .unwrap();
}

#[test]
fn tampered_log_is_reported_as_divergence_at_the_right_instruction() {
    let dir = tmpdir("tamper");
    let rec = record(&dir, "timer", &[], None);
    // Find the 10th port read and move it to another port.
    let (_, log) = ailuro_rr::recording_paths(&rec.name);
    let mut reader = ailuro_rr::LogReader::open(&log).unwrap();
    let mut reads = Vec::new();
    while let Some(e) = reader.next_entry().unwrap() {
        if matches!(e.event, ailuro_rr::Event::IoRead { .. }) {
            reads.push(e.icount);
        }
    }
    drop(reader);
    assert!(reads.len() > 10, "timer guest reads ports");
    let target = reads[10];
    let seen = std::cell::Cell::new(0usize);
    rewrite_log(&rec.name, |_, e| {
        if let ailuro_rr::Event::IoRead { port, .. } = &mut e.event {
            if seen.get() == 10 {
                *port ^= 0x100;
            }
            seen.set(seen.get() + 1);
        }
    });
    let out = run(&["-replay", rec.name.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains(&format!("diverged at instruction {target} ")),
        "expected divergence at {target}: {stderr}"
    );

    // A changed value (not a changed port) is caught too, at the latest by the final state hash.
    let rec = record(&dir, "clock", &[], None);
    rewrite_log(&rec.name, |_, e| {
        // The clock guest reads the CMOS clock through port 0x71.
        if let ailuro_rr::Event::IoRead { port: 0x71, value, .. } = &mut e.event {
            *value ^= 0x5a;
        }
    });
    let out = run(&["-replay", rec.name.to_str().unwrap()], None);
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("diverged"));
}

#[test]
fn truncated_or_missing_recordings_give_clear_errors() {
    let dir = tmpdir("trunc");
    let rec = record(&dir, "timer", &[], None);
    let (snp, log) = ailuro_rr::recording_paths(&rec.name);
    let bytes = std::fs::read(&log).unwrap();
    for cut in [10, bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(&log, &bytes[..cut]).unwrap();
        let out = run(&["-replay", rec.name.to_str().unwrap()], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "cut at {cut}");
        assert!(stderr.contains("ailuro-system-i386:"), "cut at {cut}: {stderr}");
    }
    let sbytes = std::fs::read(&snp).unwrap();
    std::fs::write(&snp, &sbytes[..sbytes.len() / 2]).unwrap();
    let out = run(&["-replay", rec.name.to_str().unwrap()], None);
    assert_ne!(out.status.code(), Some(0));
    let out = run(&["-replay", dir.join("nonexistent").to_str().unwrap()], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn bad_options_and_images_are_refused() {
    let dir = tmpdir("badopts");
    let out = run(&["-bogus"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid option"));
    let junk = dir.join("junk.elf");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let out = run(&["-kernel", junk.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["-kernel", dir.join("missing").to_str().unwrap()], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read kernel"));
    let rec = record(&dir, "hello", &[], None);
    let out = run(&["-replay", rec.name.to_str().unwrap(), "-kernel", "x"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflicts with -replay"));
    let out = run(&["-replay", rec.name.to_str().unwrap(), "-m", "64"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflicts with the recording"));
}

#[test]
fn monitor_controls_recording_of_a_window() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let dir = tmpdir("monitor");
    let sock = dir.join("mon.sock");
    let name = dir.join("win");
    let console = dir.join("console.txt");
    let kernel = guest("timer");
    let mut child = Command::new(EMU)
        .args(["-m", "32", "-kernel", kernel.to_str().unwrap(), "-S", "-display", "none"])
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-monitor", &format!("unix:{},server,nowait", sock.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("monitor socket: {e}"),
        }
    };
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut read_reply = move || -> String {
        // Replies end with the next prompt.
        let mut text = String::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b' ', &mut buf).unwrap() == 0 {
                return text;
            }
            text.push_str(&String::from_utf8_lossy(&buf));
            if text.ends_with("(ailuro) ") {
                return text;
            }
        }
    };
    assert!(read_reply().contains("Ailuro monitor"), "greeting");
    let mut ask = |cmd: &str| -> String {
        writeln!(w, "{cmd}").unwrap();
        read_reply()
    };
    assert!(ask("info status").contains("paused"));
    assert!(ask("bogus command").contains("unknown command"));
    assert!(ask("begin_record").contains("usage"));
    assert!(ask(&format!("begin_record {}", name.display())).contains("recording to"));
    assert!(ask("cont").ends_with("(ailuro) "));
    std::thread::sleep(Duration::from_millis(30));
    let reply = ask("end_record");
    assert!(reply.contains("complete"), "{reply}");
    assert!(ask("info status").contains("paused"));
    ask("quit");
    let out = wait_with_timeout(child_take(&mut child), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["-replay", name.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

fn child_take(c: &mut std::process::Child) -> std::process::Child {
    std::mem::replace(c, Command::new("true").spawn().unwrap())
}

fn sibling_tool(name: &str) -> PathBuf {
    let p = Path::new(EMU).with_file_name(name);
    assert!(p.is_file(), "{name} is built next to the emulator ({})", p.display());
    p
}

#[test]
fn rrpack_and_rrunpack_round_trip_and_refuse_corruption() {
    let dir = tmpdir("pack");
    let rec = record(&dir, "timer", &[], None);
    let out = Command::new(sibling_tool("rrpack")).arg(&rec.name).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rr = dir.join("timer.rr");
    let bytes = std::fs::read(&rr).unwrap();
    assert_eq!(&bytes[..8], b"PANDA_RR");
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), rec.instructions, "real instruction count");

    // Unpack into a fresh directory and replay from there.
    let dest = dir.join("unpacked");
    std::fs::create_dir_all(&dest).unwrap();
    let out = Command::new(sibling_tool("rrunpack")).arg("-C").arg(&dest).arg(&rr).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unpacked = Recorded {
        name: dest.join("timer"),
        console: rec.console.clone(),
        status: rec.status,
        instructions: rec.instructions,
    };
    replay_ok(&unpacked);
    // Unpacking again must not overwrite.
    let out = Command::new(sibling_tool("rrunpack")).arg("-C").arg(&dest).arg(&rr).output().unwrap();
    assert!(!out.status.success());

    // Corrupted and truncated archives are refused with a clear message.
    for (tag, data) in [
        ("corrupt", {
            let mut b = bytes.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
            b
        }),
        ("truncated", bytes[..bytes.len() - 100].to_vec()),
    ] {
        let bad = dir.join(format!("{tag}.rr"));
        std::fs::write(&bad, data).unwrap();
        let d = dir.join(format!("out-{tag}"));
        std::fs::create_dir_all(&d).unwrap();
        let out = Command::new(sibling_tool("rrunpack")).arg("-C").arg(&d).arg(&bad).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
        assert!(err.contains("rrunpack: error:") && !err.contains("panicked"), "{tag}: {err}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{tag}: nothing unpacked");
    }
}

#[test]
fn stdio_monitor_records_a_window_in_the_middle_of_a_run() {
    let dir = tmpdir("midwindow");
    let name = dir.join("mid");
    let console = dir.join("console.txt");
    let kernel = guest("timer");
    let mut child = Command::new(EMU)
        .args(["-m", "32", "-kernel", kernel.to_str().unwrap(), "-display", "none", "-no-reboot"])
        .args(["-serial", &format!("file:{}", console.display()), "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The timer guest takes 100 ms of (paced) guest time: record a window in its middle.
    std::thread::sleep(Duration::from_millis(30));
    writeln!(stdin, "begin_record {}", name.display()).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    writeln!(stdin, "end_record").unwrap();
    writeln!(stdin, "info status").unwrap();
    writeln!(stdin, "quit").unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("recording to"), "{stdout}");
    assert!(stdout.contains("complete:"), "{stdout}");
    assert!(stdout.contains("VM status: paused"), "{stdout}");
    let out = run(&["-replay", name.to_str().unwrap(), "-serial", "null"], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("InterruptAck"), "the window contains timer interrupts: {stderr}");
}
