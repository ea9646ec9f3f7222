//! `ailuro-kprofile`: derive, validate and query kernel profiles.
//!
//! Output errors never panic (no `println!`): a closed pipe ends the program quietly with status
//! 1, any other write error is reported (`ailuro-kprofile: error: cannot write to standard
//! output: ...`) with status 1.

use std::io::{self, Write};

use ailuro_toolio::say;
use std::path::PathBuf;
use std::process::ExitCode;

use ailuro_kprofile::derive::derive_from_image;
use ailuro_kprofile::{derive_from_btf, ElfImage, KernelProfile};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ailuro-kprofile", version, about = "Kernel profiles for Ailuro's Linux OS introspection")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Derive a profile from a kernel image with DWARF (the vmlinux of a -dbg package), or from
    /// the BTF inside a bzImage.
    Derive {
        /// The vmlinux with debug information.
        #[arg(long, required_unless_present = "btf_from_bzimage", conflicts_with = "btf_from_bzimage")]
        vmlinux: Option<PathBuf>,
        /// A bzImage (vmlinuz) of a kernel built with CONFIG_DEBUG_INFO_BTF: layouts from its BTF.
        #[arg(long)]
        btf_from_bzimage: Option<PathBuf>,
        /// Symbol addresses from a System.map-format file (`/proc/kallsyms` of the guest works).
        /// Needed with --btf-from-bzimage (a bzImage has no symbol table); overrides the ELF's.
        #[arg(long)]
        system_map: Option<PathBuf>,
        /// Where to write the profile (TOML).
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Write the profile even if required items are missing.
        #[arg(long)]
        allow_incomplete: bool,
    },
    /// Check a profile: parse it and list anything missing or inconsistent.
    Validate {
        profile: PathBuf,
        /// Also list the warnings (missing optional items).
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print values from a profile: `task_struct.pid`, `task_struct` (size),
    /// `sym:init_task`, `const:THREAD_SIZE`.
    Get {
        profile: PathBuf,
        #[arg(required = true)]
        items: Vec<String>,
    },
}

const PROG: &str = "ailuro-kprofile";

/// Writing to standard output failed.
#[derive(Debug)]
struct OutputError(io::Error);

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for OutputError {}

/// Standard output with errors returned (as [`OutputError`]), never a panic like `println!`'s.
struct Out(io::StdoutLock<'static>);

impl Out {
    fn line(&mut self, s: &str) -> Result<(), OutputError> {
        self.0.write_all(s.as_bytes()).and_then(|()| self.0.write_all(b"\n")).map_err(OutputError)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.0.flush().map_err(OutputError)
    }
}

/// Exit status for a failed write to stdout: a closed pipe (`| head`) quietly, anything else
/// with a message; status 1 either way.
fn output_failure(e: &OutputError) -> ExitCode {
    if e.0.kind() != io::ErrorKind::BrokenPipe {
        say(&format!("{PROG}: error: {e}"));
    }
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli_error(&e),
    };
    let mut out = Out(io::stdout().lock());
    let r = run(cli, &mut out).and_then(|code| out.flush().map(|()| code).map_err(anyhow::Error::from));
    match r {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<OutputError>() {
            Some(o) => output_failure(o),
            None => {
                say(&format!("{PROG}: error: {e:#}"));
                ExitCode::from(2)
            }
        },
    }
}

/// Help and version go to stdout (status 0; an output error as for any output); usage errors to
/// stderr with clap's status 2.
fn cli_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let mut out = io::stdout().lock();
        return match out.write_all(e.render().to_string().as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => output_failure(&OutputError(err)),
        };
    }
    say(e.render().to_string().trim_end());
    ExitCode::from(2)
}

fn run(cli: Cli, out: &mut Out) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Derive { vmlinux, btf_from_bzimage, system_map, output, allow_incomplete } => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let map = match &system_map {
                Some(p) => Some(String::from_utf8(read(p)?).with_context(|| format!("{}: not text", p.display()))?),
                None => None,
            };
            let d = match (vmlinux, btf_from_bzimage) {
                (Some(v), _) => {
                    let data = read(&v)?;
                    let mut image = ElfImage::parse(&data)?;
                    if let Some(map) = &map {
                        image.add_symbol_map(map)?;
                    }
                    derive_from_image(&image)?
                }
                (None, Some(b)) => derive_from_btf(&read(&b)?, map.as_deref())?,
                (None, None) => unreachable!("clap requires one of them"),
            };
            for n in &d.notes {
                say(&format!("note: {n}"));
            }
            for e in &d.errors {
                say(&format!("missing: {e}"));
            }
            if !d.errors.is_empty() && !allow_incomplete {
                say(&format!(
                    "{PROG}: {} required item(s) missing; nothing written (--allow-incomplete writes it anyway)",
                    d.errors.len()
                ));
                return Ok(ExitCode::from(1));
            }
            d.profile.save(&output)?;
            let p = &d.profile;
            say(&format!(
                "wrote {}: {} {} ({} symbols, {} structs, {} constants)",
                output.display(),
                p.kernel.arch,
                p.kernel.release,
                p.symbols.len(),
                p.structs.len(),
                p.constants.len()
            ));
            Ok(if d.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Validate { profile, verbose } => {
            let p = KernelProfile::load(&profile)?;
            let v = p.validate();
            for e in &v.errors {
                out.line(&format!("error: {e}"))?;
            }
            if verbose {
                for w in &v.warnings {
                    out.line(&format!("warning: {w}"))?;
                }
            }
            out.line(&format!(
                "{}: {} {} — {} error(s), {} warning(s)",
                profile.display(),
                p.kernel.arch,
                p.kernel.release,
                v.errors.len(),
                v.warnings.len()
            ))?;
            Ok(if v.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Get { profile, items } => {
            let p = KernelProfile::load(&profile)?;
            let mut failed = false;
            for item in items {
                let r: Result<String, ailuro_kprofile::LookupError> = if let Some(s) = item.strip_prefix("sym:") {
                    p.symbol(s).map(|a| format!("0x{a:x}"))
                } else if let Some(c) = item.strip_prefix("const:") {
                    p.constant(c).map(|v| v.to_string())
                } else if let Some((s, m)) = item.split_once('.') {
                    p.member(s, m).map(|m| {
                        let mut out = format!("offset {}", m.offset);
                        if let Some(sz) = m.size {
                            out.push_str(&format!(" size {sz}"));
                        }
                        if let Some(t) = &m.type_name {
                            out.push_str(&format!(" type {t}"));
                        }
                        out
                    })
                } else {
                    p.struct_size(&item).map(|s| format!("size {s}"))
                };
                match r {
                    Ok(v) => out.line(&format!("{item}: {v}"))?,
                    Err(e) => {
                        out.line(&format!("{item}: error: {e}"))?;
                        failed = true;
                    }
                }
            }
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}
