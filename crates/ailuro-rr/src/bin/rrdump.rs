//! `rrdump NAME`: what a recording's nondet log holds — per-kind statistics, and with `--entries`
//! every entry (like PANDA's `rr_print`).

use ailuro_toolio as common;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::Out;

const PROG: &str = "rrdump";

/// Print statistics (and optionally the entries) of NAME-rr-nondet.log.
#[derive(Parser)]
#[command(name = "rrdump", version)]
struct Cli {
    /// Recording name (NAME-rr-snp + NAME-rr-nondet.log), or the log file itself.
    name: PathBuf,
    /// Print every entry (icount, kind, fields).
    #[arg(long)]
    entries: bool,
    /// With --entries: only entries at or after this instruction count.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// With --entries: at most this many entries.
    #[arg(long)]
    limit: Option<u64>,
}

/// Why dumping stopped early.
enum Failure {
    /// Standard output failed.
    Output(io::Error),
    /// The log is unreadable or corrupt.
    Log(ailuro_rr::RecordingError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self::Output(e)
    }
}

impl From<ailuro_rr::RecordingError> for Failure {
    fn from(e: ailuro_rr::RecordingError) -> Self {
        Self::Log(e)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return common::cli_error(PROG, e),
    };
    let mut out = Out::new();
    let r = dump(&cli, &mut out);
    // Whatever happened, what was printed so far goes out before any error message.
    let flushed = out.flush();
    match (r, flushed) {
        (Err(Failure::Output(e)), _) | (Ok(()), Err(e)) => common::output_failed(PROG, &e),
        (Err(Failure::Log(e)), _) => common::fail(PROG, &e),
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
    }
}

fn dump(cli: &Cli, out: &mut Out) -> Result<(), Failure> {
    let log = if cli.name.to_string_lossy().ends_with(ailuro_rr::LOG_SUFFIX) {
        cli.name.clone()
    } else {
        ailuro_rr::recording_paths(&cli.name).1
    };
    let mut r = ailuro_rr::LogReader::open(&log)?;
    for w in r.warnings() {
        common::warn(PROG, &w);
    }
    let h = r.header().clone();
    out.line(format_args!("log: {} ({} bytes)", log.display(), std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0)))?;
    out.line(format_args!("arch: {}, start icount: {}, creator: {}", h.arch.name(), h.start_icount, h.creator))?;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut ports: BTreeMap<(u16, u8), u64> = BTreeMap::new();
    let mut mmio: BTreeMap<u64, u64> = BTreeMap::new();
    let mut printed = 0u64;
    let mut last = h.start_icount;
    // Reading to the end also checks the entries against the trailer (totals per kind).
    while let Some(e) = r.next_entry()? {
        last = e.icount;
        *counts.entry(ailuro_rr::Event::kind_name(e.event.kind())).or_default() += 1;
        match &e.event {
            ailuro_rr::Event::IoRead { port, size, .. } => *ports.entry((*port, *size)).or_default() += 1,
            ailuro_rr::Event::MmioRead { addr, .. } => *mmio.entry(*addr).or_default() += 1,
            _ => {}
        }
        if cli.entries && e.icount >= cli.from && cli.limit.is_none_or(|l| printed < l) {
            out.line(format_args!("{:>14} {:?}", e.icount, e.event))?;
            printed += 1;
        }
    }
    match r.trailer() {
        Some(t) => {
            let code = t.reason.exit_code().map(|c| format!(", exit code {c}")).unwrap_or_default();
            out.line(format_args!(
                "end icount: {} ({} instructions), reason: {:?}{code}",
                t.end_icount,
                t.end_icount.saturating_sub(h.start_icount),
                t.reason
            ))?;
        }
        None => out.line(format_args!("incomplete log (no trailer); last entry at instruction {last}"))?,
    }
    out.line(format_args!("entries by kind:"))?;
    for (k, n) in &counts {
        out.line(format_args!("  {k:<14} {n:>12}"))?;
    }
    let mut top: Vec<_> = ports.into_iter().collect();
    top.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    if !top.is_empty() {
        out.line(format_args!("most read ports:"))?;
        for ((p, s), n) in top.iter().take(10) {
            out.line(format_args!("  port {p:#06x} size {s}: {n}"))?;
        }
    }
    let mut top: Vec<_> = mmio.into_iter().collect();
    top.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    if !top.is_empty() {
        out.line(format_args!("most read MMIO addresses:"))?;
        for (a, n) in top.iter().take(10) {
            out.line(format_args!("  {a:#x}: {n}"))?;
        }
    }
    Ok(())
}
