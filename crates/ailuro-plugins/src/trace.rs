//! `trace`: an instruction trace with disassembly over an instruction-count range and/or a pc
//! range, optionally for one address space.
//!
//! The plugin wants [`hook::BEFORE_INSN`] only while the run is inside `[start, end)`: before that
//! it asks to be woken at `start` ([`Plugin::wake_at`]), inside it asks to be woken at `end`, and
//! after it wants nothing, so the parts of the replay outside the range cost nothing.
//!
//! Trace file format (text, one line per instruction, `#` lines are comments):
//!
//! ```text
//! # ailuro trace: icount pc asid bytes  disasm
//! 1234 00001000 00000000 b801000000        mov eax, 1
//!     eax=00000000 ecx=00000000 ... (with regs=true: the registers before the instruction)
//! ```
//!
//! `icount` is decimal (instructions retired before this one), `pc` and `asid` hexadecimal, `bytes`
//! the instruction's bytes in hex (padded to 16 characters, then two spaces), `disasm` Intel syntax.
//! An instruction whose bytes cannot be read shows `(unreadable)`; bytes that do not decode show
//! the first byte and `(bad)`.

use std::any::Any;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;

use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "trace",
    about: "instruction trace with disassembly over an icount and/or pc range",
    args: ARGS,
    deps: &[],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "start", help: "first instruction count traced (inclusive; default: the start of the run)" },
    ArgInfo { key: "end", help: "instruction count where tracing stops (exclusive; default: the end of the run)" },
    ArgInfo { key: "pc_lo", help: "trace only pc >= this (default 0)" },
    ArgInfo { key: "pc_hi", help: "trace only pc < this (default: no limit)" },
    ArgInfo { key: "asid", help: "trace only this address space (default: all)" },
    ArgInfo { key: "regs", help: "true: add a line with the registers before each instruction (default false)" },
    ArgInfo { key: "file", help: "output file (default trace.txt; replaced if it exists)" },
    ArgInfo { key: "max", help: "stop tracing after this many instructions (default: no limit)" },
    ArgInfo { key: "bits", help: "disassembly mode 16, 32 or 64 (default 64 for x86_64, else 32)" },
];

fn make(args: &Args, lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let start = args.u64("start")?.unwrap_or(0);
    let end = args.u64("end")?.unwrap_or(u64::MAX);
    let pc_lo = args.u64("pc_lo")?.unwrap_or(0);
    let pc_hi = args.u64("pc_hi")?.unwrap_or(u64::MAX);
    let asid = args.u64("asid")?;
    let regs = args.bool("regs", false)?;
    let file = args.path("file").unwrap_or_else(|| PathBuf::from("trace.txt"));
    let max = args.u64("max")?.unwrap_or(u64::MAX);
    let bits = match args.u64("bits")? {
        Some(b @ (16 | 32 | 64)) => b as u32,
        Some(b) => return Err(format!("plugin trace: bits={b} must be 16, 32 or 64")),
        None if lcx.arch == "x86_64" => 64,
        None => 32,
    };
    if end <= start {
        return Err(format!("plugin trace: end={end} must be greater than start={start}"));
    }
    if pc_hi <= pc_lo {
        return Err(format!("plugin trace: pc_hi={pc_hi:#x} must be greater than pc_lo={pc_lo:#x}"));
    }
    if max == 0 {
        return Err("plugin trace: max=0 would trace nothing".to_string());
    }
    let first = match lcx.replay_range {
        Some((rs, re)) => {
            if start >= re {
                return Err(format!(
                    "plugin trace: start={start} is at or beyond the end of the recording \
                     (it covers instructions {rs}..{re})"
                ));
            }
            if end <= rs {
                return Err(format!(
                    "plugin trace: end={end} is at or before the start of the recording \
                     (it covers instructions {rs}..{re})"
                ));
            }
            rs
        }
        None => 0,
    };
    let cfg = TraceConfig { start, end, pc_lo, pc_hi, asid, regs, file, max, bits };
    Ok(Box::new(Trace::new(cfg, first)))
}

/// What to trace (see the module documentation and [`INFO`]'s arguments).
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// First instruction count traced.
    pub start: u64,
    /// Instruction count where tracing stops (exclusive; `u64::MAX`: none).
    pub end: u64,
    /// Lowest pc traced.
    pub pc_lo: u64,
    /// pc limit (exclusive).
    pub pc_hi: u64,
    /// Only this address space.
    pub asid: Option<u64>,
    /// Add a register line.
    pub regs: bool,
    /// Output file.
    pub file: PathBuf,
    /// Line cap (instructions).
    pub max: u64,
    /// Decoder bitness.
    pub bits: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before `start`: wants nothing, wakes at `start`.
    Before,
    /// Inside the range: wants instructions, wakes at `end`.
    Inside,
    /// After the range (or the line cap): wants nothing.
    Done,
}

/// The `trace` plugin.
pub struct Trace {
    cfg: TraceConfig,
    phase: Phase,
    out: Option<BufWriter<File>>,
    lines: u64,
    capped: bool,
    /// After the line cap: wake once more so the run loop re-reads `hooks()` (now 0).
    refresh_at: Option<u64>,
    formatter: IntelFormatter,
    disasm: String,
    line: String,
}

impl Trace {
    /// A tracer; `first` is the instruction count the run is expected to start at (it decides
    /// whether the plugin wants instructions from the very beginning).
    pub fn new(cfg: TraceConfig, first: u64) -> Trace {
        let mut formatter = IntelFormatter::new();
        let o = formatter.options_mut();
        o.set_space_after_operand_separator(true);
        o.set_hex_prefix("0x");
        o.set_hex_suffix("");
        o.set_uppercase_hex(false);
        o.set_branch_leading_zeros(false);
        o.set_show_branch_size(false);
        let mut t = Trace {
            cfg,
            phase: Phase::Before,
            out: None,
            lines: 0,
            capped: false,
            refresh_at: None,
            formatter,
            disasm: String::new(),
            line: String::new(),
        };
        t.enter(first);
        t
    }

    /// Instructions traced so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Set the phase for the run being at `icount`.
    fn enter(&mut self, icount: u64) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = if icount >= self.cfg.end {
            Phase::Done
        } else if icount >= self.cfg.start {
            Phase::Inside
        } else {
            Phase::Before
        };
    }

    fn write_out(&mut self, cx: &mut Cx) {
        let Some(out) = self.out.as_mut() else { return };
        if let Err(e) = out.write_all(self.line.as_bytes()) {
            cx.fail(format!("trace: cannot write {}: {e}", self.cfg.file.display()));
            self.out = None;
            self.phase = Phase::Done;
        }
    }

    /// Disassemble `bytes` at `pc` into `self.disasm`; returns the instruction's length.
    fn disassemble(&mut self, pc: u64, bytes: &[u8]) -> usize {
        self.disasm.clear();
        if bytes.is_empty() {
            self.disasm.push_str("(unreadable)");
            return 0;
        }
        let mut d = Decoder::with_ip(self.cfg.bits, bytes, pc, DecoderOptions::NONE);
        let insn = d.decode();
        if insn.is_invalid() {
            self.disasm.push_str("(bad)");
            return 1;
        }
        self.formatter.format(&insn, &mut self.disasm);
        insn.len()
    }
}

impl Plugin for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn hooks(&self) -> u32 {
        if self.phase == Phase::Inside {
            hook::BEFORE_INSN
        } else {
            0
        }
    }

    fn wake_at(&self) -> Option<u64> {
        match self.phase {
            Phase::Before => Some(self.cfg.start),
            Phase::Inside => (self.cfg.end != u64::MAX).then_some(self.cfg.end),
            Phase::Done => self.refresh_at,
        }
    }

    fn at_icount(&mut self, cx: &mut Cx) {
        self.refresh_at = None;
        self.enter(cx.icount);
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        let f = File::create(&self.cfg.file).map_err(|e| format!("cannot create {}: {e}", self.cfg.file.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let c = &self.cfg;
        let mut h = String::from("# ailuro trace: icount pc asid bytes  disasm\n# range: icount ");
        let _ = write!(h, "{}..", c.start);
        if c.end != u64::MAX {
            let _ = write!(h, "{}", c.end);
        }
        let _ = write!(h, ", pc {:#x}..", c.pc_lo);
        if c.pc_hi != u64::MAX {
            let _ = write!(h, "{:#x}", c.pc_hi);
        }
        if let Some(a) = c.asid {
            let _ = write!(h, ", asid {a:#x}");
        }
        let _ = writeln!(h, ", {}-bit", c.bits);
        w.write_all(h.as_bytes()).map_err(|e| format!("cannot write {}: {e}", c.file.display()))?;
        self.out = Some(w);
        self.enter(cx.icount);
        Ok(())
    }

    fn before_insn(&mut self, cx: &mut Cx) {
        let (icount, pc) = (cx.icount, cx.pc);
        if icount < self.cfg.start {
            return;
        }
        if icount >= self.cfg.end {
            self.phase = Phase::Done;
            return;
        }
        if pc < self.cfg.pc_lo || pc >= self.cfg.pc_hi {
            return;
        }
        let asid = cx.asid();
        if self.cfg.asid.is_some_and(|a| a != asid) {
            return;
        }
        if self.lines >= self.cfg.max || self.phase == Phase::Done {
            return;
        }
        // Up to 15 bytes; fewer when the instruction may end at an unmapped page.
        let mut buf = [0u8; 15];
        let mut n = 15;
        if !cx.read_virt(pc, &mut buf) {
            let in_page = (4096 - (pc & 0xfff)) as usize;
            n = if in_page < 15 && cx.read_virt(pc, &mut buf[..in_page]) { in_page } else { 0 };
        }
        let len = self.disassemble(pc, &buf[..n]);
        let bytes = &buf[..len];
        self.line.clear();
        let _ = write!(self.line, "{icount} {pc:08x} {asid:08x} ");
        let start = self.line.len();
        for b in bytes {
            let _ = write!(self.line, "{b:02x}");
        }
        while self.line.len() < start + 16 {
            self.line.push(' ');
        }
        self.line.push_str("  ");
        self.line.push_str(&self.disasm);
        self.line.push('\n');
        let cpu = cx.cpu();
        if self.cfg.regs {
            if let Some(cpu) = cpu {
                self.line.push_str("   ");
                for (i, name) in cpu.reg_names().iter().enumerate() {
                    let _ = write!(self.line, " {name}={:08x}", cpu.reg(i));
                }
                self.line.push('\n');
            }
        }
        self.write_out(cx);
        let (disasm, regs) = (&self.disasm, self.cfg.regs);
        cx.log("trace", "insn", |r| {
            let r = r.field("bytes", bytes).field("disasm", disasm.as_str());
            match cpu.filter(|_| regs) {
                Some(c) => r.list("regs", (0..c.reg_names().len()).map(|i| c.reg(i))),
                None => r,
            }
        });
        self.lines += 1;
        if self.lines >= self.cfg.max {
            self.capped = true;
            self.phase = Phase::Done;
            self.refresh_at = Some(icount + 1);
            self.line.clear();
            let _ = writeln!(self.line, "# stopped after max={} instructions", self.cfg.max);
            self.write_out(cx);
        }
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        let path = self.cfg.file.display().to_string();
        if let Some(mut w) = self.out.take() {
            w.flush().map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        let mut s = format!("trace: {} instructions written to {path}", self.lines);
        if self.capped {
            let _ = write!(s, " (stopped at max={})", self.cfg.max);
        } else if cx.icount <= self.cfg.start && self.lines == 0 {
            let _ = write!(s, " (the run ended at instruction {}, before start={})", cx.icount, self.cfg.start);
        }
        Ok(Some(s))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{plog, read_plog, FakeCpu};
    use ailuro_bus::{CpuObserver, GuestRam, ProgramPoint};
    use ailuro_plugin::{parse_plugin_list, PluginSet};

    fn load(spec: &str, range: Option<(u64, u64)>) -> Result<PluginSet, String> {
        let lcx = LoadCx { replay_range: range, arch: "i386".into(), ..LoadCx::default() };
        PluginSet::load(&crate::registry(), &parse_plugin_list(spec)?, &lcx)
    }

    /// A program of three instructions at 0x1000, run in a loop: mov eax, 1; add eax, ecx; jmp 0x1000.
    fn program(ram: &mut GuestRam) {
        ram.write(0x1000, &[0xb8, 0x01, 0x00, 0x00, 0x00, 0x01, 0xc8, 0xeb, 0xf7]).unwrap();
    }

    /// Run `n` instructions from icount 0 the way the machine does: wake-ups between CPU runs,
    /// hooks re-read after each; returns how many `before_insn` calls reached the set.
    fn run(set: &mut PluginSet, ram: &GuestRam, n: u64) -> (FakeCpu, u64) {
        let prog = [(0x1000u64, 5u64), (0x1005, 2), (0x1007, 2)];
        let mut cpu = FakeCpu { asid: 0x3000, ..FakeCpu::default() };
        set.start(ProgramPoint { icount: 0, pc: 0x1000 }, &cpu, ram).unwrap();
        let mut delivered = 0;
        while cpu.icount < n {
            if set.wake_at().is_some_and(|w| w <= cpu.icount) {
                set.wake(&cpu, ram);
            }
            // Slices also end every 8 instructions (as at the replay's log events).
            let slice_end = n.min((cpu.icount / 8 + 1) * 8);
            let stop = set.wake_at().map_or(slice_end, |w| slice_end.min(w.max(cpu.icount + 1)));
            let hooks = CpuObserver::hooks(set);
            while cpu.icount < stop {
                cpu.pc = prog[(cpu.icount % 3) as usize].0;
                cpu.regs[0] = cpu.icount;
                if hooks & hook::BEFORE_INSN != 0 {
                    set.before_insn(&cpu, ram);
                    delivered += 1;
                }
                cpu.icount += 1;
            }
        }
        (cpu, delivered)
    }

    #[test]
    fn icount_range_costs_nothing_outside_and_lines_are_exact() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.txt");
        let mut ram = GuestRam::new(0, 1 << 20).unwrap();
        program(&mut ram);
        let mut set = load(&format!("trace:start=10,end=16,file={}", file.display()), Some((0, 100))).unwrap();
        assert_eq!(CpuObserver::hooks(&set), 0, "nothing wanted before start");
        assert_eq!(set.wake_at(), Some(10));
        set.set_plog(plog(dir.path()));
        let (cpu, delivered) = run(&mut set, &ram, 40);
        assert_eq!(delivered, 6, "before_insn is wanted only inside [10, 16)");
        assert_eq!(CpuObserver::hooks(&set), 0);
        assert_eq!(set.wake_at(), None);
        let out = set.finish(ProgramPoint { icount: 40, pc: cpu.pc }, &cpu, &ram).unwrap();
        assert_eq!(out[0], format!("trace: 6 instructions written to {}", file.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "10 00001005 00003000 01c8              add eax, ecx",
                "11 00001007 00003000 ebf7              jmp 0x1000",
                "12 00001000 00003000 b801000000        mov eax, 1",
                "13 00001005 00003000 01c8              add eax, ecx",
                "14 00001007 00003000 ebf7              jmp 0x1000",
                "15 00001000 00003000 b801000000        mov eax, 1",
            ]
        );
        assert!(text
            .starts_with("# ailuro trace: icount pc asid bytes  disasm\n# range: icount 10..16, pc 0x0.., 32-bit\n"));
        let recs = read_plog(dir.path());
        assert_eq!(recs.len(), 6);
        assert_eq!((recs[2].icount, recs[2].pc, recs[2].asid), (12, 0x1000, Some(0x3000)));
        assert_eq!(recs[2].kind, "insn");
        assert_eq!(recs[2].get("bytes").unwrap().as_bytes(), Some(&[0xb8, 1, 0, 0, 0][..]));
        assert_eq!(recs[2].get("disasm").unwrap().as_str(), Some("mov eax, 1"));
        assert!(recs[2].get("regs").is_none());
    }

    #[test]
    fn pc_range_asid_regs_and_max() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.txt");
        let mut ram = GuestRam::new(0, 1 << 20).unwrap();
        program(&mut ram);
        let spec = format!("trace:pc_lo=0x1000,pc_hi=0x1005,regs=true,max=2,file={}", file.display());
        let mut set = load(&spec, Some((0, 100))).unwrap();
        assert_eq!(CpuObserver::hooks(&set), hook::BEFORE_INSN, "range starts at the replay start");
        set.set_plog(plog(dir.path()));
        let (cpu, delivered) = run(&mut set, &ram, 30);
        assert_eq!(delivered, 8, "after max, the next slice turns the hook off");
        assert_eq!(CpuObserver::hooks(&set), 0);
        let out = set.finish(ProgramPoint { icount: 30, pc: cpu.pc }, &cpu, &ram).unwrap();
        assert!(out[0].ends_with("(stopped at max=2)"), "{}", out[0]);
        let text = std::fs::read_to_string(&file).unwrap();
        let body: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(body.len(), 5, "{text}");
        assert_eq!(body[0], "0 00001000 00003000 b801000000        mov eax, 1");
        assert_eq!(
            body[1],
            "    eax=00000000 ecx=00000000 edx=00000000 ebx=00000000 esp=00000000 ebp=00000000 \
             esi=00000000 edi=00000000 eip=00000000 eflags=00000000"
        );
        assert!(body[2].starts_with("3 00001000"), "{}", body[2]);
        assert!(body[3].starts_with("    eax=00000003 "), "{}", body[3]);
        assert_eq!(body[4], "# stopped after max=2 instructions");
        let recs = read_plog(dir.path());
        assert_eq!(recs.len(), 2);
        let regs = recs[1].get("regs").unwrap().as_list().unwrap();
        assert_eq!(regs.len(), 10);
        assert_eq!(regs[0].as_u64(), Some(3));

        // Another asid: nothing traced.
        let file2 = dir.path().join("t2.txt");
        let mut set = load(&format!("trace:asid=0x4000,file={}", file2.display()), None).unwrap();
        let (cpu, delivered) = run(&mut set, &ram, 10);
        assert_eq!(delivered, 10);
        let out = set.finish(ProgramPoint { icount: 10, pc: cpu.pc }, &cpu, &ram).unwrap();
        assert!(out[0].starts_with("trace: 0 instructions"), "{}", out[0]);
    }

    #[test]
    fn unreadable_and_page_end_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.txt");
        let mut ram = GuestRam::new(0, 2 << 20).unwrap();
        // `mov eax, 1` ending exactly at the end of the mapped area (1 MiB), then unmapped.
        ram.write(0xffffb, &[0xb8, 0x01, 0x00, 0x00, 0x00]).unwrap();
        // A truncated instruction: `b8 01` then an unmapped page.
        ram.write(0xfeffe, &[0xb8, 0x01]).unwrap();
        let mut set = load(&format!("trace:file={}", file.display()), None).unwrap();
        let mut cpu = FakeCpu::default();
        set.start(ProgramPoint::default(), &cpu, &ram).unwrap();
        for pc in [0xffffb, 0x20_0000, 0xfeffe] {
            cpu.pc = pc;
            cpu.mapped = if pc == 0xfeffe { 0xff000 } else { 1 << 20 };
            set.before_insn(&cpu, &ram);
            cpu.icount += 1;
        }
        set.finish(ProgramPoint { icount: 3, pc: 0 }, &cpu, &ram).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let body: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            body,
            [
                "0 000ffffb 00000000 b801000000        mov eax, 1",
                "1 00200000 00000000                   (unreadable)",
                "2 000feffe 00000000 b8                (bad)",
            ]
        );
    }

    #[test]
    fn argument_errors() {
        let e = load("trace:start=100", Some((0, 100))).err().unwrap();
        assert!(e.contains("start=100 is at or beyond the end of the recording") && e.contains("0..100"), "{e}");
        let e = load("trace:start=5,end=5", None).err().unwrap();
        assert!(e.contains("end=5 must be greater than start=5"), "{e}");
        let e = load("trace:end=50", Some((60, 100))).err().unwrap();
        assert!(e.contains("before the start of the recording"), "{e}");
        let e = load("trace:bits=8", None).err().unwrap();
        assert!(e.contains("bits=8"), "{e}");
        let e = load("trace:pc_lo=0x2000,pc_hi=0x1000", None).err().unwrap();
        assert!(e.contains("pc_hi"), "{e}");
        let e = load("trace:start=x", None).err().unwrap();
        assert!(e.contains("not an unsigned integer"), "{e}");
    }

    #[test]
    fn disassembly_of_known_bytes() {
        let cfg = TraceConfig {
            start: 0,
            end: u64::MAX,
            pc_lo: 0,
            pc_hi: u64::MAX,
            asid: None,
            regs: false,
            file: PathBuf::from("unused"),
            max: u64::MAX,
            bits: 32,
        };
        let mut t = Trace::new(cfg, 0);
        let cases: &[(&[u8], &str)] = &[
            (&[0xb8, 0x01, 0x00, 0x00, 0x00], "mov eax, 1"),
            (&[0x8b, 0x45, 0xfc], "mov eax, [ebp-4]"),
            (&[0xcd, 0x80], "int 0x80"),
            (&[0xe8, 0xfb, 0xff, 0xff, 0xff], "call 0x1000"),
            (&[0x0f, 0x22, 0xd8], "mov cr3, eax"),
        ];
        for (bytes, want) in cases {
            let mut b = bytes.to_vec();
            b.extend_from_slice(&[0x90; 10]);
            assert_eq!(t.disassemble(0x1000, &b), bytes.len());
            assert_eq!(t.disasm, *want);
        }
    }
}
