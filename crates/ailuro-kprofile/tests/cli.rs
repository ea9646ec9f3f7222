//! The `ailuro-kprofile` binary's handling of its standard output: a full device is a clear
//! error, a closed pipe ends it quietly, never a panic.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_ailuro-kprofile");

fn profile() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles/linux-6.1.0-50-amd64.toml")
}

/// `get` with enough items for well over a pipe buffer of output.
fn big_get() -> Command {
    let mut c = Command::new(BIN);
    c.arg("get").arg(profile());
    for _ in 0..20_000 {
        c.args(["task_struct.pid", "sym:init_task"]);
    }
    c
}

#[test]
fn get_and_validate_print_to_stdout() {
    let o = Command::new(BIN).arg("get").arg(profile()).args(["task_struct.pid", "sym:init_task"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("task_struct.pid: offset ") && text.contains("sym:init_task: 0x"), "{text}");
    let o = Command::new(BIN).arg("validate").arg(profile()).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("error(s)"));
}

#[test]
fn full_output_device_is_a_clear_error() {
    let mut validate = Command::new(BIN);
    validate.args(["validate", "-v"]).arg(profile());
    let mut help = Command::new(BIN);
    help.arg("--help");
    for mut c in [big_get(), validate, help] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = c.stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{c:?}: {err}");
        assert!(err.starts_with("ailuro-kprofile: error: cannot write to standard output: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn closed_output_pipe_ends_quietly_with_status_1() {
    for read in [0usize, 100] {
        let mut child = big_get().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; read];
        out.read_exact(&mut buf).unwrap();
        drop(out);
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.is_empty(), "{err}");
    }
}
