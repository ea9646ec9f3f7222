//! `console`: the guest's serial console as reconstructed during replay (or seen live), line by
//! line with the instruction count at which each line's first byte was written — e.g. to find
//! where in a recording a program printed something, or to time phases of a workload.
//!
//! Output: `file=PATH` (default: none) gets the console text, each line prefixed with its
//! icount when `icounts=true` (the default); every line is also a plugin-log record (kind
//! `line`, fields `text`, and the record's icount/pc are those of the first byte's `out`).

use std::any::Any;
use std::io::Write;
use std::path::PathBuf;

use ailuro_plugin::{machine_hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

use crate::tap::ConsoleTap;

/// The `console` plugin.
pub struct ConsolePlugin {
    tap: ConsoleTap,
    line: Vec<u8>,
    line_start: Option<(u64, u64)>,
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    icounts: bool,
    lines: u64,
    bytes: u64,
    /// Lines seen so far: (icount of the first byte, text), for other plugins and tests.
    pub history: Vec<(u64, String)>,
}

impl ConsolePlugin {
    /// Start from the UART state the machine had when the run began.
    pub(crate) fn set_tap(&mut self, tap: ConsoleTap) {
        self.tap = tap;
    }

    fn end_line(&mut self, cx: &mut Cx) {
        let Some((icount, pc)) = self.line_start.take() else { return };
        let text = String::from_utf8_lossy(&self.line).trim_end_matches('\r').to_string();
        self.line.clear();
        self.lines += 1;
        if let Some((path, f)) = self.file.as_mut() {
            let r = if self.icounts { writeln!(f, "{icount:>14} {text}") } else { writeln!(f, "{text}") };
            if let Err(e) = r {
                cx.fail(format!("console: cannot write {}: {e}", path.display()));
            }
        }
        let (save_i, save_pc) = (cx.icount, cx.pc);
        cx.icount = icount;
        cx.pc = pc;
        cx.log("console", "line", |r| r.field("text", text.as_str()));
        cx.icount = save_i;
        cx.pc = save_pc;
        self.history.push((icount, text));
    }
}

impl Plugin for ConsolePlugin {
    fn name(&self) -> &'static str {
        "console"
    }
    fn hooks(&self) -> u32 {
        machine_hook::PORT_IO
    }
    fn port_io(&mut self, cx: &mut Cx, port: u16, size: u8, value: u32, write: bool) {
        if !write {
            return;
        }
        let Some(b) = self.tap.observe_io_write(port, size, value) else { return };
        self.bytes += 1;
        if self.line_start.is_none() {
            self.line_start = Some((cx.icount, cx.pc));
        }
        if b == b'\n' {
            self.end_line(cx);
        } else {
            self.line.push(b);
        }
    }
    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        if !self.line.is_empty() {
            self.end_line(cx);
        }
        if let Some((path, mut f)) = self.file.take() {
            f.flush().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(Some(format!("console: {} lines, {} bytes", self.lines, self.bytes)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "file", help: "write the console text here (default: none; replaced if it exists)" },
    ArgInfo { key: "icounts", help: "prefix each line in the file with its icount (default true)" },
];

fn make(a: &Args, _: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let icounts = a.bool("icounts", true)?;
    let file = match a.path("file") {
        Some(p) => {
            let f =
                std::fs::File::create(&p).map_err(|e| format!("plugin console: cannot create {}: {e}", p.display()))?;
            Some((p, std::io::BufWriter::new(f)))
        }
        None => None,
    };
    Ok(Box::new(ConsolePlugin {
        tap: ConsoleTap::default(),
        line: Vec::new(),
        line_start: None,
        file,
        icounts,
        lines: 0,
        bytes: 0,
        history: Vec::new(),
    }))
}

/// Registry entry.
pub fn info() -> PluginInfo {
    PluginInfo {
        name: "console",
        about: "the serial console reconstructed from the guest's UART writes, with the icount of each line",
        args: ARGS,
        deps: &[],
        make,
    }
}
