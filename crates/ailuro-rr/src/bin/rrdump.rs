//! `rrdump NAME`: what a recording's nondet log holds — per-kind statistics, and with `--entries`
//! every entry (like PANDA's `rr_print`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = if cli.name.to_string_lossy().ends_with("-rr-nondet.log") {
        cli.name.clone()
    } else {
        ailuro_rr::recording_paths(&cli.name).1
    };
    let mut r = match ailuro_rr::LogReader::open(&log) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rrdump: {e}");
            return ExitCode::FAILURE;
        }
    };
    let h = r.header().clone();
    println!("log: {} ({} bytes)", log.display(), std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0));
    println!("arch: {}, start icount: {}, creator: {}", h.arch.name(), h.start_icount, h.creator);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut ports: BTreeMap<(u16, u8), u64> = BTreeMap::new();
    let mut mmio: BTreeMap<u64, u64> = BTreeMap::new();
    let mut printed = 0u64;
    let mut last = h.start_icount;
    loop {
        match r.next_entry() {
            Ok(Some(e)) => {
                last = e.icount;
                *counts.entry(ailuro_rr::Event::kind_name(e.event.kind())).or_default() += 1;
                match &e.event {
                    ailuro_rr::Event::IoRead { port, size, .. } => *ports.entry((*port, *size)).or_default() += 1,
                    ailuro_rr::Event::MmioRead { addr, .. } => *mmio.entry(*addr).or_default() += 1,
                    _ => {}
                }
                if cli.entries && e.icount >= cli.from && cli.limit.is_none_or(|l| printed < l) {
                    println!("{:>14} {:?}", e.icount, e.event);
                    printed += 1;
                }
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("rrdump: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match r.trailer() {
        Some(t) => println!(
            "end icount: {} ({} instructions), reason: {:?}",
            t.end_icount,
            t.end_icount - h.start_icount,
            t.reason
        ),
        None => println!("incomplete log (no trailer); last entry at instruction {last}"),
    }
    println!("entries by kind:");
    for (k, n) in &counts {
        println!("  {k:<14} {n:>12}");
    }
    let mut top: Vec<_> = ports.into_iter().collect();
    top.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    if !top.is_empty() {
        println!("most read ports:");
        for ((p, s), n) in top.iter().take(10) {
            println!("  port {p:#06x} size {s}: {n}");
        }
    }
    let mut top: Vec<_> = mmio.into_iter().collect();
    top.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    if !top.is_empty() {
        println!("most read MMIO addresses:");
        for (a, n) in top.iter().take(10) {
            println!("  {a:#x}: {n}");
        }
    }
    ExitCode::SUCCESS
}
