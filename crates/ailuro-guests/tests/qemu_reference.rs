//! Runs every bundled guest under QEMU, the reference machine, and checks its serial output and exit
//! status. Skipped (with a note) when `qemu-system-i386` is not installed.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ailuro_guests::{check_output, guest_path, GuestSpec, SPECS};

const QEMU: &str = "qemu-system-i386";
const TIMEOUT: Duration = Duration::from_secs(60);

fn have_qemu() -> bool {
    Command::new(QEMU).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Run one guest; returns (exit status, serial output).
fn run(spec: &GuestSpec) -> (Option<i32>, String) {
    let kernel = guest_path(spec.name).expect("guest built");
    let mut cmd = Command::new(QEMU);
    cmd.arg("-kernel").arg(&kernel);
    cmd.args(["-m", "128", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]);
    cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if !spec.cmdline.is_empty() {
        cmd.args(["-append", spec.cmdline]);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn qemu");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(spec.serial_input).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let out = reader.join().unwrap();
    (status, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn every_guest_passes_under_qemu() {
    if !have_qemu() {
        eprintln!("note: {QEMU} not found; skipping the QEMU reference runs");
        return;
    }
    let mut failures = Vec::new();
    for spec in SPECS {
        let (status, out) = run(spec);
        if status != Some(1) {
            failures.push(format!("{}: exit status {status:?} (expected 1)\n{out}", spec.name));
        } else if let Err(e) = check_output(spec, &out) {
            failures.push(format!("{e}\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
}
