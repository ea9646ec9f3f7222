//! Helpers shared by the Linux end-to-end tests of every guest architecture (`linux.rs` for
//! i386, `linux_amd64.rs` for x86_64): the guest files, running the emulator with a time limit,
//! the replay report, the console's deterministic section, a monitor client.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The guest cache directory of `guest` (`i386`, `i386-pae`, `amd64`).
pub fn cache_dir(guest: &str) -> PathBuf {
    let base = std::env::var_os("AILURO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ailuro"));
    base.join("linux").join(guest)
}

/// The guest files; a missing image is a setup error (the test command fetches it), not a skip.
pub fn guest_files(guest: &str) -> (PathBuf, PathBuf) {
    let d = cache_dir(guest);
    let (k, i) = (d.join("vmlinuz"), d.join("initramfs.cpio.gz"));
    assert!(
        k.is_file() && i.is_file(),
        "Linux guest not found in {}: run scripts/fetch-linux-guest.sh {guest} (scripts/test.sh does)",
        d.display()
    );
    (k, i)
}

/// Run emulator binary `emu` with `args`, killing it after `limit` (a failure), checking that
/// nothing panicked.
pub fn run(emu: &str, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(emu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start emulator");
    let start = Instant::now();
    let pid = child.id();
    let out = std::thread::scope(|s| {
        let h = s.spawn(move || child.wait_with_output().unwrap());
        while !h.is_finished() {
            if start.elapsed() > limit {
                // SAFETY: plain kill(2) of our own child process.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        h.join().unwrap()
    });
    assert!(start.elapsed() <= limit, "emulator timed out after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "emulator panicked: {err}");
    out
}

/// The value after `key` on the line of the replay report that starts with it.
pub fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no '{key}' in replay report: {report}"))
        .trim()
}

/// The lines between the deterministic markers, without kernel messages.
pub fn deterministic_section(console: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for l in console.lines().map(|l| l.trim_end_matches('\r')) {
        if l == "=== AILURO DETERMINISTIC BEGIN ===" {
            inside = true;
        } else if l == "=== AILURO DETERMINISTIC END ===" {
            inside = false;
        } else if inside && !is_printk(l) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// A kernel message line (`[   12.345678] ...`).
pub fn is_printk(l: &str) -> bool {
    l.starts_with('[')
        && l.find(']').is_some_and(|e| l[1..e].trim().replace('.', "").chars().all(|c| c.is_ascii_digit()))
}

/// A fresh temporary directory for this test process.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-linux-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Replay recording `name` with `emu` (plus `extra` options): the output and stderr.
pub fn replay(emu: &str, name: &Path, extra: &[&str]) -> (Output, String) {
    let mut args = vec!["-replay", name.to_str().unwrap(), "-display", "none"];
    args.extend(extra);
    let out = run(emu, &args, Duration::from_secs(1200));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

/// The last 3000 bytes of `s`.
pub fn tail(s: &str) -> &str {
    let mut k = s.len().saturating_sub(3000);
    while !s.is_char_boundary(k) {
        k += 1;
    }
    &s[k..]
}

/// The instruction count of a finished recording, from the emulator's summary on stderr.
pub fn recorded_instructions(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.split("complete: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no recording summary in {stderr}"))
}

/// Collects a child's stdout in the background.
pub struct Collector {
    /// Everything read so far.
    pub buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Collector {
    /// Start reading `r` on a thread.
    pub fn start(mut r: impl std::io::Read + Send + 'static) -> Collector {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Collector { buf }
    }

    /// The output so far as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Bytes read so far.
    pub fn len(&self) -> usize {
        self.buf.lock().unwrap().len()
    }

    /// Wait until the output contains `what` (after byte `from`), then until it is quiet.
    pub fn wait_for(&self, what: &str, from: usize, limit: Duration) -> usize {
        let start = Instant::now();
        while !self.text().get(from..).is_some_and(|t| t.contains(what)) {
            assert!(start.elapsed() < limit, "timed out waiting for {what:?}; console: {}", tail(&self.text()));
            std::thread::sleep(Duration::from_millis(100));
        }
        self.quiet()
    }

    /// Wait until no output arrived for half a second; returns the length then.
    pub fn quiet(&self) -> usize {
        let mut last = self.len();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = self.len();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// Send one command to the monitor listening on unix socket `sock`; its reply.
pub fn monitor(sock: &Path, cmd: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).expect("connect to the monitor");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    // Greeting, then the prompt.
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    writeln!(w, "{cmd}").unwrap();
    let mut reply = String::new();
    // The reply ends with the next prompt.
    let mut byte = [0u8; 1];
    while !reply.ends_with("(ailuro) ") || !reply.contains('\n') {
        if std::io::Read::read(&mut r, &mut byte).unwrap_or(0) == 0 {
            break;
        }
        reply.push(byte[0] as char);
    }
    reply
}

/// Boot `kernel` + `initrd` on `emu` to the guest's interactive shell (`ailuro.shell=1`, no
/// workload), record a window from the monitor while typing commands, replay it (same console),
/// and list the processes (`info processes`, osi_linux) on a paused replay of the window.
pub fn monitor_window_replays(emu: &str, kernel: &Path, initrd: &Path, tag: &str, limit: Duration) {
    use std::io::Write;
    let dir = tmpdir(tag);
    let sock = dir.join("mon.sock");
    let name = dir.join("window");
    let mut child = Command::new(emu)
        .args([
            "-m",
            "256",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            "console=ttyS0 ailuro.shell=1 ailuro.workload=0",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            &format!("unix:{},server,nowait", sock.display()),
            "-no-reboot",
            "-icount",
            "sleep=off",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Collector::start(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();

    // Boot to the shell, then record a window in which we type commands.
    let shell = out.wait_for("interactive shell on the console", 0, limit);
    stdin.write_all(b"\n").unwrap();
    let begin = out.wait_for("#", shell, limit);
    let reply = monitor(&sock, &format!("begin_record {}", name.display()));
    assert!(!reply.contains("Error"), "begin_record: {reply}");
    stdin.write_all(b"echo window $((6 * 7)); seq 1 500 | md5sum\n").unwrap();
    // The md5sum line ends in "  -"; wait for it and for the prompt after it to be printed.
    let end = out.wait_for("  -", begin, limit);
    let reply = monitor(&sock, "end_record");
    assert!(reply.contains("complete"), "end_record: {reply}");
    let _ = monitor(&sock, "quit");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "quit exits 0");
    let console = out.buf.lock().unwrap()[begin..end].to_vec();
    let text = String::from_utf8_lossy(&console).into_owned();
    assert!(text.contains("window 42"), "{text}");
    assert!(text.lines().any(|l| l.trim_end().ends_with("  -") && l.len() >= 35), "md5sum output: {text}");

    let (rep, err) = replay(emu, &name, &[]);
    assert_eq!(rep.status.code(), Some(0), "window replay: {err}");
    assert!(err.contains("Replay completed successfully"), "{err}");
    assert_eq!(String::from_utf8_lossy(&rep.stdout), text, "window replay console differs from the recording's");
    // The window was recorded with the translator; the interpreter replays it to the same
    // instruction count and state hash (the engine is not part of a recording).
    let (rep_i, err_i) = replay(emu, &name, &["-accel", "interp"]);
    assert_eq!(rep_i.status.code(), Some(0), "window replay with the interpreter: {err_i}");
    assert_eq!(String::from_utf8_lossy(&rep_i.stdout), text, "interpreter replay console");
    for key in ["instructions:", "final state hash:"] {
        assert_eq!(field(&err_i, key), field(&err, key), "{key} of the interpreter and translator replays");
    }

    // `info processes` on the monitor of the replay, paused at its first instruction (the kernel
    // and the shell are up there).
    let sock2 = dir.join("mon2.sock");
    let mut rep = Command::new(emu)
        .args(["-replay", name.to_str().unwrap(), "-display", "none", "-S", "-panda", "osi_linux"])
        .args(["-monitor", &format!("unix:{},server,nowait", sock2.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock2.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no monitor socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listing = monitor(&sock2, "info processes");
    let _ = monitor(&sock2, "quit");
    assert_eq!(rep.wait().unwrap().code(), Some(0));
    assert!(listing.contains("init") && listing.contains(" sh"), "info processes: {listing}");
}
