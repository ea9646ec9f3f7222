//! `ailuro-plog`: look into plugin logs. `dump` prints records as JSON lines, `info` describes a
//! file. Errors are one line on stderr (`ailuro-plog: error: ...`) with exit status 1.
//!
//! Output errors never panic (no `println!`): a closed pipe ends the program quietly with status
//! 1, any other write error is reported with status 1.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};

use ailuro_toolio::{error_chain, say};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ailuro_plog::{OwnedRecord, PlogError, PlogReader};
use clap::{Parser, Subcommand};

const PROG: &str = "ailuro-plog";

/// Inspect Ailuro plugin logs (plog files, written by analysis plugins during replay).
#[derive(Parser)]
#[command(name = "ailuro-plog", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the records as JSON lines, one object per record, in file order: the order the
    /// plugins wrote them, which is not necessarily icount order (--sorted sorts).
    ///
    /// Columns: icount (number), pc and asid (hex strings; asid only if present), plugin, kind,
    /// then the record's fields. Integers stay exact JSON numbers even above 2^53; bytes are
    /// lowercase hex strings; non-finite floats are the strings "NaN", "Infinity", "-Infinity".
    Dump {
        /// The plog file.
        file: PathBuf,
        /// Only records of this plugin (repeat for several).
        #[arg(long, value_name = "NAME")]
        plugin: Vec<String>,
        /// Only records of this kind (repeat for several).
        #[arg(long, value_name = "KIND")]
        kind: Vec<String>,
        /// Only records at or after this instruction count (decimal or 0x hex).
        #[arg(long, value_name = "ICOUNT", value_parser = parse_u64)]
        from: Option<u64>,
        /// Only records at or before this instruction count (decimal or 0x hex).
        #[arg(long, value_name = "ICOUNT", value_parser = parse_u64)]
        to: Option<u64>,
        /// Print the records in icount order (equal icounts in file order). Memory use is bounded;
        /// a file whose records are extremely far out of order is an error.
        #[arg(long)]
        sorted: bool,
    },
    /// Describe a plog: header, metadata, record counts per plugin and kind, icount range, and
    /// whether it is complete.
    Info {
        /// The plog file.
        file: PathBuf,
        /// Read and check every record, also of a complete file (whose counts otherwise come from
        /// its trailer).
        #[arg(long)]
        verify: bool,
    },
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("{s:?} is not an instruction count (decimal or 0x hex)"))
}

/// Why a command failed.
enum Failure {
    Plog(PlogError),
    /// Writing to stdout failed; a closed pipe (`| head`) is not reported (but still status 1).
    Output(io::Error),
    Other(String),
}

impl From<PlogError> for Failure {
    fn from(e: PlogError) -> Self {
        Self::Plog(e)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return cli_error(e),
    };
    let r = match cli.cmd {
        Cmd::Dump { file, plugin, kind, from, to, sorted } => dump(&file, &plugin, &kind, from, to, sorted),
        Cmd::Info { file, verify } => info(&file, verify),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever closed the pipe has what they wanted; the output is still incomplete.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(1),
        Err(Failure::Output(e)) => fail(&format!("cannot write to standard output: {e}")),
        Err(Failure::Plog(e)) => fail(&error_chain(&e)),
        Err(Failure::Other(m)) => fail(&m),
    }
}

/// Warnings about the file as a whole (known when it is opened; printed after its records, so
/// they are not lost in the output).
fn file_warnings(file: &Path, r: &PlogReader) -> Vec<String> {
    let mut w = Vec::new();
    if let Some((off, len)) = r.trailing_bytes() {
        w.push(format!(
            "{PROG}: warning: {} has {len} bytes of trailing data after its end (from offset {off}); they are ignored",
            file.display()
        ));
    }
    if !r.is_complete() {
        let span = r.icount_range().map_or("no records".to_owned(), |(a, b)| format!("instructions {a} to {b}"));
        w.push(format!(
            "{PROG}: warning: {} is incomplete (its writer did not finish); it holds {} records, {span}",
            file.display(),
            r.record_count()
        ));
    }
    w
}

fn dump(
    file: &Path,
    plugins: &[String],
    kinds: &[String],
    from: Option<u64>,
    to: Option<u64>,
    sorted: bool,
) -> Result<(), Failure> {
    let mut r = PlogReader::open(file)?;
    let warnings = file_warnings(file, &r);
    // Records are in emission order, so --to filters rather than stops; chunks entirely outside
    // the range are still skipped unread.
    r.select_icounts(from.unwrap_or(0), to.unwrap_or(u64::MAX));
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 << 10, stdout.lock());
    let wanted = |rec: &OwnedRecord| {
        (plugins.is_empty() || plugins.contains(&rec.plugin)) && (kinds.is_empty() || kinds.contains(&rec.kind))
    };
    let mut print = |rec: Result<OwnedRecord, PlogError>| -> Result<(), Failure> {
        let rec = rec?;
        if wanted(&rec) {
            serde_json::to_writer(&mut out, &rec).map_err(|e| Failure::Output(e.into()))?;
            out.write_all(b"\n").map_err(Failure::Output)?;
        }
        Ok(())
    };
    // Records before an error are printed (flushed below), then the error is reported.
    let result = if sorted { r.sorted().try_for_each(&mut print) } else { r.try_for_each(&mut print) };
    out.flush().map_err(Failure::Output)?;
    result?;
    warnings.iter().for_each(|w| say(w));
    Ok(())
}

#[derive(Default)]
struct Counts {
    records: u64,
    bytes: Option<u64>,
}

fn info(file: &Path, verify: bool) -> Result<(), Failure> {
    let mut r = PlogReader::open(file)?;
    let mut kinds: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let mut scanned = false;
    match r.trailer() {
        Some(t) if !verify => {
            for k in &t.kinds {
                kinds.insert(
                    (k.plugin.clone(), k.kind.clone()),
                    Counts { records: k.records, bytes: Some(k.raw_bytes) },
                );
            }
        }
        _ => {
            scanned = true;
            while let Some(rec) = r.next_record()? {
                kinds.entry((rec.plugin, rec.kind)).or_default().records += 1;
            }
            if let Some(t) = r.trailer() {
                let from_trailer: Vec<(&str, &str, u64)> =
                    t.kinds.iter().map(|k| (k.plugin.as_str(), k.kind.as_str(), k.records)).collect();
                let found: Vec<(&str, &str, u64)> =
                    kinds.iter().map(|((p, k), c)| (p.as_str(), k.as_str(), c.records)).collect();
                if from_trailer != found {
                    return Err(Failure::Other(format!(
                        "{}: the trailer's per-plugin record counts disagree with the records in the file",
                        file.display()
                    )));
                }
                for k in &t.kinds {
                    if let Some(c) = kinds.get_mut(&(k.plugin.clone(), k.kind.clone())) {
                        c.bytes = Some(k.raw_bytes);
                    }
                }
            }
        }
    }
    let mut o = String::new();
    let h = r.header();
    o += &format!("file:      {}\n", file.display());
    o += &format!("format:    Ailuro plugin log, version {}\n", r.version());
    o += &format!("creator:   {}\n", h.creator.escape_debug());
    if h.metadata.is_empty() {
        o += "metadata:  (none)\n";
    }
    for (i, (k, v)) in h.metadata.iter().enumerate() {
        let label = if i == 0 { "metadata:" } else { "" };
        o += &format!("{label:<10} {} = {}\n", k.escape_debug(), v.escape_debug());
    }
    match (r.is_complete(), r.truncated_at()) {
        (true, _) => o += "status:    complete\n",
        (false, Some(off)) => {
            o += &format!(
                "status:    INCOMPLETE (the writer did not finish; partial data from offset {off} on is ignored)\n"
            )
        }
        (false, None) => o += "status:    INCOMPLETE (the writer did not finish)\n",
    }
    if let Some((off, len)) = r.trailing_bytes() {
        o += &format!("trailing:  {len} bytes after the end of the plog (from offset {off}) are ignored\n");
    }
    o += if r.is_sorted_by_format() {
        "order:     by icount (format version 1)\n"
    } else {
        "order:     as emitted, not necessarily by icount (dump --sorted sorts)\n"
    };
    let (raw, comp) = r.payload_bytes();
    o += &format!("records:   {} in {} chunks\n", r.record_count(), r.chunks().len());
    match r.icount_range() {
        Some((a, b)) => o += &format!("icount:    {a} .. {b}\n"),
        None => o += "icount:    (no records)\n",
    }
    let ratio = if raw > 0 { format!(" ({:.1}%)", comp as f64 * 100.0 / raw as f64) } else { String::new() };
    o += &format!("payload:   {raw} bytes, {comp} compressed{ratio}\n");
    if verify || scanned {
        o += "verified:  every chunk checksum and record decoded\n";
    }
    if !kinds.is_empty() {
        let pw = kinds.keys().map(|(p, _)| p.len()).max().unwrap_or(0).max(6);
        let kw = kinds.keys().map(|(_, k)| k.len()).max().unwrap_or(0).max(4);
        o += &format!("\n{:<pw$}  {:<kw$}  {:>12}  {:>14}\n", "plugin", "kind", "records", "raw bytes");
        for ((p, k), c) in &kinds {
            let b = c.bytes.map_or("-".to_owned(), |b| b.to_string());
            o += &format!("{p:<pw$}  {k:<kw$}  {:>12}  {b:>14}\n", c.records);
        }
    }
    let mut out = io::stdout().lock();
    out.write_all(o.as_bytes()).and_then(|()| out.flush()).map_err(Failure::Output)?;
    // Incompleteness is in the report itself; trailing bytes are worth a warning.
    if r.trailing_bytes().is_some() {
        file_warnings(file, &r).iter().take(1).for_each(|w| say(w));
    }
    Ok(())
}

fn fail(msg: &str) -> ExitCode {
    say(&format!("{PROG}: error: {msg}"));
    ExitCode::from(1)
}

/// Help and version go to stdout with status 0; usage errors get our prefix and status 1; no
/// command at all prints the help on stderr with status 1.
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let mut out = io::stdout().lock();
        return match out.write_all(e.render().to_string().as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(1),
            Err(e) => fail(&format!("cannot write to standard output: {e}")),
        };
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        say(e.render().to_string().trim_end());
        return ExitCode::from(1);
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    say(&format!("{PROG}: error: {}", text.trim_end()));
    ExitCode::from(1)
}
