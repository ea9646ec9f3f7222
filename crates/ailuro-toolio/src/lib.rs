//! What the project's command-line tools (`rrdump`, `rrpack`, `rrunpack`, `ailuro-plog`,
//! `ailuro-kprofile`, `ailuro-fuzz`, `ailuro-guest-path`, the emulators) share: output that never
//! panics, error messages in one format, and exit statuses.
//!
//! `println!`/`eprintln!` panic when the write fails (a closed pipe: `rrdump NAME | head`; a full
//! disk: `rrunpack X.rr > /dev/full`), which ends the program with status 101 and a panic message.
//! Everything here writes explicitly and handles the error: a closed pipe on standard output ends
//! the program quietly with status 1 (the reader went away, nobody is left to tell); any other
//! output error is reported on standard error, status 1. Errors writing to standard error itself
//! are ignored (there is nowhere left to report them).

use std::fmt;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::process::ExitCode;

/// Buffered, locked standard output whose errors are returned, never panicked on.
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Lock standard output for the rest of the program.
    pub fn new() -> Self {
        Self { w: BufWriter::with_capacity(64 << 10, io::stdout().lock()) }
    }

    /// Write one line.
    pub fn line(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.w.write_fmt(args)?;
        self.w.write_all(b"\n")
    }

    /// Write text as is.
    pub fn text(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())
    }

    /// Flush everything written so far (errors of buffered writes surface here).
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

/// Exit status after standard output failed with `e`: quiet for a closed pipe, a message
/// otherwise; status 1 either way.
pub fn output_failed(prog: &str, e: &io::Error) -> ExitCode {
    if e.kind() != io::ErrorKind::BrokenPipe {
        let _ = writeln!(io::stderr(), "{prog}: cannot write to standard output: {e}");
    }
    ExitCode::from(1)
}

/// A line on standard error. Never panics (`eprintln!` does when standard error is unwritable):
/// a message that cannot be shown is dropped.
pub fn say(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "{msg}");
}

/// `println!` without its panic: an output error (closed pipe, full disk) ends the program with
/// status 1 instead (quietly for a closed pipe).
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                $crate::say(&format!("cannot write to standard output: {e}"));
            }
            std::process::exit(1);
        }
    }};
}

/// `eprintln!` without its panic: a message that cannot be shown is dropped.
#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::say(&format!($($t)*))
    };
}

/// The error message with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
    msg.replace('\n', " ")
}

/// Print `prog: warning: message` on standard error.
pub fn warn(prog: &str, msg: &str) {
    let _ = writeln!(io::stderr(), "{prog}: warning: {msg}");
}

/// Print `prog: error: message: cause: ...` and return exit status 1.
pub fn fail(prog: &str, e: &dyn std::error::Error) -> ExitCode {
    let _ = writeln!(io::stderr(), "{prog}: error: {}", error_chain(e));
    ExitCode::from(1)
}

/// Help and version go to stdout with status 0 (1 if stdout fails); usage errors get our prefix
/// and status 1.
pub fn cli_error(prog: &str, e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let mut out = Out::new();
        return match out.text(&text).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => output_failed(prog, &e),
        };
    }
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let _ = write!(io::stderr(), "{prog}: error: {text}");
    ExitCode::from(1)
}
