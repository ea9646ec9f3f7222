//! `ailuro-plog`: look into plugin logs. `dump` prints records as JSON lines, `info` describes a
//! file. Errors are one line on stderr (`ailuro-plog: error: ...`) with exit status 1.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
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
    /// Print the records as JSON lines, one object per record, in file (icount) order.
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
    /// Writing to stdout failed; a closed pipe (`| head`) is not reported.
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
        Cmd::Dump { file, plugin, kind, from, to } => dump(&file, &plugin, &kind, from, to),
        Cmd::Info { file, verify } => info(&file, verify),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => fail(&format!("cannot write to standard output: {e}")),
        Err(Failure::Plog(e)) => fail(&error_chain(&e)),
        Err(Failure::Other(m)) => fail(&m),
    }
}

fn dump(
    file: &std::path::Path,
    plugins: &[String],
    kinds: &[String],
    from: Option<u64>,
    to: Option<u64>,
) -> Result<(), Failure> {
    let mut r = PlogReader::open(file)?;
    if let Some(f) = from {
        r.seek_icount(f);
    }
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 << 10, stdout.lock());
    let wanted = |rec: &OwnedRecord| {
        (plugins.is_empty() || plugins.contains(&rec.plugin)) && (kinds.is_empty() || kinds.contains(&rec.kind))
    };
    let mut result = Ok(());
    while let Some(rec) = r.next_record().transpose() {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                result = Err(Failure::Plog(e));
                break;
            }
        };
        if to.is_some_and(|t| rec.icount > t) {
            break;
        }
        if wanted(&rec) {
            serde_json::to_writer(&mut out, &rec).map_err(|e| Failure::Output(e.into()))?;
            out.write_all(b"\n").map_err(Failure::Output)?;
        }
    }
    out.flush().map_err(Failure::Output)?;
    result?;
    if !r.is_complete() {
        let last = r.icount_range().map_or("no records".to_owned(), |(_, l)| format!("up to instruction {l}"));
        eprintln!(
            "{PROG}: warning: {} is incomplete (its writer did not finish); it holds {} records, {last}",
            file.display(),
            r.record_count()
        );
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    records: u64,
    bytes: Option<u64>,
}

fn info(file: &std::path::Path, verify: bool) -> Result<(), Failure> {
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
    out.write_all(o.as_bytes()).and_then(|()| out.flush()).map_err(Failure::Output)
}

/// The error message with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
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

fn fail(msg: &str) -> ExitCode {
    eprintln!("{PROG}: error: {msg}");
    ExitCode::from(1)
}

/// Help and version go to stdout with status 0; usage errors get our prefix and status 1; no
/// command at all prints the help on stderr with status 1.
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprint!("{}", e.render());
        return ExitCode::from(1);
    }
    let text = e.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("{PROG}: error: {text}");
    ExitCode::from(1)
}
