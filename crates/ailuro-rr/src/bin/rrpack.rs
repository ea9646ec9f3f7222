//! `rrpack NAME`: bundle `NAME-rr-snp` and `NAME-rr-nondet.log` into a PANDA-compatible `NAME.rr`.

use ailuro_toolio as common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

const PROG: &str = "rrpack";

/// Pack an Ailuro recording into a PANDA-compatible .rr archive.
#[derive(Parser)]
#[command(name = "rrpack", version)]
struct Cli {
    /// Recording name (the files are NAME-rr-snp and NAME-rr-nondet.log; may include directories).
    name: PathBuf,
    /// Output file (default: NAME.rr).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(short, long)]
    force: bool,
    /// Pack a recording that was cut short (its log has no trailer).
    #[arg(long)]
    allow_incomplete: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return common::cli_error(PROG, e),
    };
    let opts = ailuro_rr::PackOptions { out: cli.output, force: cli.force, allow_incomplete: cli.allow_incomplete };
    match ailuro_rr::pack(&cli.name, &opts) {
        Ok(info) => {
            for w in &info.warnings {
                common::warn(PROG, &format!("{w} (not packed)"));
            }
            let note = if info.complete { "" } else { " (incomplete recording)" };
            let mut out = common::Out::new();
            // The archive is in place whatever happens to this message; a failure to print it
            // still gets status 1 so that scripts notice their output went missing.
            let r = out
                .line(format_args!("packed {} with {} instructions{note}", info.out.display(), info.instructions))
                .and_then(|()| out.flush());
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => common::output_failed(PROG, &e),
            }
        }
        Err(e) => common::fail(PROG, &e),
    }
}
