//! `rrunpack NAME.rr`: verify and unpack a PANDA-compatible `.rr` archive.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli_error("rrunpack", e),
    };
    let opts = ailuro_rr::UnpackOptions { dest_dir: cli.dir, force: cli.force, validate: !cli.no_validate };
    match ailuro_rr::unpack(&cli.file, &opts) {
        Ok(info) => {
            let note = match info.complete {
                Some(false) => " (incomplete recording)",
                _ => "",
            };
            println!(
                "unpacked {} and {} ({} instructions){note}",
                info.snapshot.display(),
                info.log.display(),
                info.instructions
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("rrunpack", &e),
    }
}

/// Print `prog: error: message: cause: ...` and return exit status 1.
fn fail(prog: &str, e: &dyn std::error::Error) -> ExitCode {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    eprintln!("{prog}: error: {msg}");
    ExitCode::from(1)
}

/// Help and version go to stdout with status 0; usage errors get our prefix and status 1.
fn cli_error(prog: &str, e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("{prog}: error: {text}");
    ExitCode::from(1)
}
