//! Assembles every guest in `guests/` with `nasm -f elf32` and links it with
//! `ld -m elf_i386 -T guests/link.ld` into `$OUT_DIR/<name>.elf`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const GUESTS: &[&str] = include!("src/list.rs");

const INSTALL_HINT: &str = "run scripts/setup.sh or `apt-get install nasm binutils`";

fn run(cmd: &mut Command, tool: &str) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("`{tool}` was not found ({e}); it is needed to build the test guests: {INSTALL_HINT}"))
        }
        Err(e) => Err(format!("could not run `{tool}`: {e} ({INSTALL_HINT})")),
        Ok(out) if !out.status.success() => Err(format!(
            "{shown} failed with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Ok(_) => Ok(()),
    }
}

/// Whether this `ld` understands `--no-warn-rwx-segments` (binutils 2.39 and later).
fn ld_knows_rwx_flag() -> bool {
    Command::new("ld").arg("--help").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("no-warn-rwx"))
}

fn build(src_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let link_script = src_dir.join("link.ld");
    let rwx_flag = ld_knows_rwx_flag();
    for name in GUESTS {
        let asm = src_dir.join(format!("{name}.asm"));
        let obj = out_dir.join(format!("{name}.o"));
        let elf = out_dir.join(format!("{name}.elf"));
        let mut include = src_dir.as_os_str().to_owned();
        include.push("/");
        run(Command::new("nasm").args(["-f", "elf32", "-I"]).arg(&include).arg("-o").arg(&obj).arg(&asm), "nasm")?;
        let mut ld = Command::new("ld");
        ld.args(["-m", "elf_i386", "-nostdlib", "-T"]).arg(&link_script);
        if rwx_flag {
            ld.arg("--no-warn-rwx-segments");
        }
        run(ld.arg("-o").arg(&elf).arg(&obj), "ld")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src_dir = manifest.join("../../guests");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src/list.rs");
    println!("cargo:rerun-if-changed={}", src_dir.join("link.ld").display());
    println!("cargo:rerun-if-changed={}", src_dir.join("common.inc").display());
    for name in GUESTS {
        println!("cargo:rerun-if-changed={}", src_dir.join(format!("{name}.asm")).display());
    }
    match build(&src_dir, &out_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            for line in msg.lines() {
                println!("cargo:warning={line}");
            }
            eprintln!("error: building the Ailuro test guests failed: {msg}");
            ExitCode::FAILURE
        }
    }
}
