//! `rrunpack NAME.rr`: verify and unpack a PANDA-compatible `.rr` archive.

use ailuro_toolio as common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

const PROG: &str = "rrunpack";

/// Verify and unpack a .rr archive into NAME-rr-snp and NAME-rr-nondet.log.
#[derive(Parser)]
#[command(name = "rrunpack", version)]
struct Cli {
    /// The .rr file.
    file: PathBuf,
    /// Directory to unpack into (default: the current directory, like PANDA's rrunpack.py).
    #[arg(short = 'C', long = "directory", default_value = ".")]
    dir: PathBuf,
    /// Replace existing files.
    #[arg(short, long)]
    force: bool,
    /// Do not check that the members are an Ailuro snapshot and log (e.g. for PANDA recordings).
    #[arg(long)]
    no_validate: bool,
    /// Accept a recording that was cut short (its log has no trailer).
    #[arg(long)]
    allow_incomplete: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return common::cli_error(PROG, e),
    };
    let opts = ailuro_rr::UnpackOptions {
        dest_dir: cli.dir,
        force: cli.force,
        validate: !cli.no_validate,
        allow_incomplete: cli.allow_incomplete,
    };
    match ailuro_rr::unpack(&cli.file, &opts) {
        Ok(info) => {
            for w in &info.warnings {
                common::warn(PROG, w);
            }
            let note = match info.complete {
                Some(false) => " (incomplete recording)",
                _ => "",
            };
            let mut out = common::Out::new();
            // The files are in place whatever happens to this message; a failure to print it
            // still gets status 1 so that scripts notice their output went missing.
            let r = out
                .line(format_args!(
                    "unpacked {} and {} ({} instructions){note}",
                    info.snapshot.display(),
                    info.log.display(),
                    info.instructions
                ))
                .and_then(|()| out.flush());
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => common::output_failed(PROG, &e),
            }
        }
        Err(e) => common::fail(PROG, &e),
    }
}
