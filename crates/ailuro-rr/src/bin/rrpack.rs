//! `rrpack NAME`: bundle `NAME-rr-snp` and `NAME-rr-nondet.log` into a PANDA-compatible `NAME.rr`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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
        Err(e) => return cli_error("rrpack", e),
    };
    let opts = ailuro_rr::PackOptions { out: cli.output, force: cli.force, allow_incomplete: cli.allow_incomplete };
    match ailuro_rr::pack(&cli.name, &opts) {
        Ok(info) => {
            let note = if info.complete { "" } else { " (incomplete recording)" };
            println!("packed {} with {} instructions{note}", info.out.display(), info.instructions);
            ExitCode::SUCCESS
        }
        Err(e) => fail("rrpack", &e),
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
