//! `count`: instructions and blocks per address space and privilege mode (PANDA's
//! `asid_instr_count`, exact).
//!
//! At every block start the instructions retired since the previous block start are attributed to
//! the previous block's (asid, kernel) pair, and a block is counted for the new pair. An address
//! space change inside a block splits it at the change. The replay's start and end close the first
//! and last interval, so the rows add up exactly to the instructions of the run; `finish` checks
//! that and reports an error if not.
//!
//! Output: a summary (stderr), one plog record per address space (kind `asid`) and one `total`
//! record, and with `file=PATH` the same table as text.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "count",
    about: "instructions and blocks per address space (asid) and kernel/user mode, exact",
    args: ARGS,
    deps: &[],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "file", help: "also write the per-asid table to this text file (default: none)" },
    ArgInfo {
        key: "modes",
        help: "split every address space into kernel and user mode (a callback per block: slower; default false)",
    },
];

fn make(args: &Args, _: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let mut c = Count::new(args.path("file"));
    c.modes = args.bool("modes", false)?;
    Ok(Box::new(c))
}

/// Instructions and blocks of one (asid, mode) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Instructions retired.
    pub instructions: u64,
    /// Blocks started.
    pub blocks: u64,
}

/// Per-address-space totals, as in the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsidTotals {
    /// Address-space identifier.
    pub asid: u64,
    /// Kernel-mode row.
    pub kernel: Row,
    /// User-mode row.
    pub user: Row,
    /// Times the CPU switched into this address space.
    pub switches: u64,
}

impl AsidTotals {
    /// Kernel plus user instructions.
    pub fn instructions(&self) -> u64 {
        self.kernel.instructions + self.user.instructions
    }
    /// Kernel plus user blocks.
    pub fn blocks(&self) -> u64 {
        self.kernel.blocks + self.user.blocks
    }
}

/// The `count` plugin. Other plugins may read its tables ([`Count::per_asid`]); note that the
/// instructions of the block in progress are attributed only when the next block starts.
pub struct Count {
    file: Option<PathBuf>,
    /// (asid, kernel) → index into `rows`.
    index: HashMap<(u64, bool), usize>,
    rows: Vec<((u64, bool), Row)>,
    switches: BTreeMap<u64, u64>,
    start_icount: Option<u64>,
    /// Index of the current pair and the icount its current interval began at.
    cur: Option<(usize, u64)>,
    error: Option<String>,
    /// Kernel/user split (per-block callbacks). Without it the CPU counts blocks itself and the
    /// plugin only sees address-space changes, which costs next to nothing.
    pub modes: bool,
    /// `CpuView::blocks` when the current interval began (without `modes`).
    last_blocks: u64,
}

impl Count {
    /// A counter; `file`: where to write the table as text at the end.
    pub fn new(file: Option<PathBuf>) -> Count {
        Count {
            file,
            index: HashMap::new(),
            rows: Vec::new(),
            switches: BTreeMap::new(),
            start_icount: None,
            cur: None,
            error: None,
            modes: true,
            last_blocks: 0,
        }
    }

    /// Without `modes`: attribute the blocks the CPU counted since the last call.
    fn attribute_blocks(&mut self, cx: &Cx) {
        if self.modes {
            return;
        }
        let now = cx.cpu().map_or(self.last_blocks, |c| c.blocks());
        if let Some((i, _)) = self.cur {
            self.rows[i].1.blocks += now.saturating_sub(self.last_blocks);
        }
        self.last_blocks = now;
    }

    fn row_index(&mut self, key: (u64, bool)) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.rows.push((key, Row::default()));
        self.index.insert(key, self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// Attribute the instructions up to `icount` to the current pair; begin a new interval.
    fn attribute(&mut self, icount: u64) {
        self.start_icount.get_or_insert(icount);
        if let Some((i, since)) = self.cur.as_mut() {
            match icount.checked_sub(*since) {
                Some(d) => self.rows[*i].1.instructions += d,
                None => {
                    self.error.get_or_insert(format!("instruction count went backwards ({since} to {icount})"));
                }
            }
            *since = icount;
        }
    }

    /// Continue counting for (asid, kernel) from `icount` on.
    fn switch_to(&mut self, icount: u64, asid: u64, kernel: bool) -> usize {
        let i = match self.cur {
            Some((i, _)) if self.rows[i].0 == (asid, kernel) => i,
            _ => self.row_index((asid, kernel)),
        };
        self.cur = Some((i, icount));
        i
    }

    /// The instruction count the run started at (`None` before it started).
    pub fn start_icount(&self) -> Option<u64> {
        self.start_icount
    }

    /// Rows per (asid, kernel), sorted by asid then mode (user first).
    pub fn rows(&self) -> Vec<(u64, bool, Row)> {
        let mut v: Vec<(u64, bool, Row)> = self.rows.iter().map(|&((a, k), r)| (a, k, r)).collect();
        v.sort_by_key(|&(a, k, _)| (a, k));
        v
    }

    /// Totals per address space, sorted by instructions (descending), then asid.
    pub fn per_asid(&self) -> Vec<AsidTotals> {
        let mut m: BTreeMap<u64, AsidTotals> = BTreeMap::new();
        for &((asid, kernel), row) in &self.rows {
            let t = m.entry(asid).or_insert(AsidTotals { asid, ..AsidTotals::default() });
            let r = if kernel { &mut t.kernel } else { &mut t.user };
            r.instructions += row.instructions;
            r.blocks += row.blocks;
        }
        for (&asid, &n) in &self.switches {
            m.entry(asid).or_insert(AsidTotals { asid, ..AsidTotals::default() }).switches = n;
        }
        let mut v: Vec<AsidTotals> = m.into_values().collect();
        v.sort_by(|a, b| b.instructions().cmp(&a.instructions()).then(a.asid.cmp(&b.asid)));
        v
    }

    /// Instructions attributed so far (kernel + user, every address space).
    pub fn total_instructions(&self) -> u64 {
        self.rows.iter().map(|(_, r)| r.instructions).sum()
    }

    /// Blocks counted so far.
    pub fn total_blocks(&self) -> u64 {
        self.rows.iter().map(|(_, r)| r.blocks).sum()
    }

    /// The summary table (as printed at the end of the run).
    pub fn table(&self, start: u64, end: u64) -> String {
        let asids = self.per_asid();
        let total = self.total_instructions();
        let blocks = self.total_blocks();
        let (mut k, mut u) = (Row::default(), Row::default());
        for a in &asids {
            k.instructions += a.kernel.instructions;
            k.blocks += a.kernel.blocks;
            u.instructions += a.user.instructions;
            u.blocks += a.user.blocks;
        }
        let pct = |n: u64| if total == 0 { 0.0 } else { n as f64 * 100.0 / total as f64 };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "count: {total} instructions, {blocks} blocks (icount {start}..{end}), {} address space{}",
            asids.len(),
            if asids.len() == 1 { "" } else { "s" }
        );
        if !self.modes {
            let _ = writeln!(s, "  (no kernel/user split: add modes=true for it)");
        }
        if self.modes {
            let _ = writeln!(
                s,
                "  kernel {:>14} instructions ({:6.2}%) {:>12} blocks",
                k.instructions,
                pct(k.instructions),
                k.blocks
            );
            let _ = writeln!(
                s,
                "  user   {:>14} instructions ({:6.2}%) {:>12} blocks",
                u.instructions,
                pct(u.instructions),
                u.blocks
            );
        }
        let _ = writeln!(
            s,
            "  {:<18} {:>14} {:>7} {:>14} {:>14} {:>12} {:>9}",
            "asid", "instructions", "%", "kernel", "user", "blocks", "switches"
        );
        for a in &asids {
            let _ = writeln!(
                s,
                "  {:<18} {:>14} {:>6.2}% {:>14} {:>14} {:>12} {:>9}",
                format!("{:#010x}", a.asid),
                a.instructions(),
                pct(a.instructions()),
                a.kernel.instructions,
                a.user.instructions,
                a.blocks(),
                a.switches
            );
        }
        s
    }
}

impl Plugin for Count {
    fn name(&self) -> &'static str {
        "count"
    }

    fn hooks(&self) -> u32 {
        if self.modes {
            hook::BEFORE_BLOCK | hook::ASID_CHANGE
        } else {
            hook::COUNT_BLOCKS | hook::ASID_CHANGE
        }
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        // The first interval begins at the start of the run, before any block is reported.
        self.start_icount = Some(cx.icount);
        let kernel = self.modes && cx.cpu().is_some_and(|c| c.in_kernel());
        self.switch_to(cx.icount, cx.asid(), kernel);
        self.last_blocks = cx.cpu().map_or(0, |c| c.blocks());
        Ok(())
    }

    #[inline]
    fn before_block(&mut self, cx: &mut Cx) {
        let icount = cx.icount;
        let kernel = cx.cpu().is_some_and(|c| c.in_kernel());
        let asid = cx.asid();
        self.attribute(icount);
        let i = self.switch_to(icount, asid, kernel);
        self.rows[i].1.blocks += 1;
    }

    fn asid_change(&mut self, cx: &mut Cx, _old: u64, new: u64) {
        let icount = cx.icount;
        let kernel = self.modes && cx.cpu().is_some_and(|c| c.in_kernel());
        self.attribute(icount);
        self.attribute_blocks(cx);
        self.switch_to(icount, new, kernel);
        *self.switches.entry(new).or_default() += 1;
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        let end = cx.icount;
        self.attribute(end);
        self.attribute_blocks(cx);
        let start = self.start_icount.unwrap_or(end);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let total = self.total_instructions();
        if Some(total) != end.checked_sub(start) {
            return Err(format!(
                "internal error: the rows add up to {total} instructions but the run retired {} \
                 (icount {start}..{end})",
                end.wrapping_sub(start)
            ));
        }
        let table = self.table(start, end);
        let asids = self.per_asid();
        for a in &asids {
            cx.log("count", "asid", |r| {
                r.asid(Some(a.asid))
                    .field("instructions", a.instructions())
                    .field("kernel_instructions", a.kernel.instructions)
                    .field("user_instructions", a.user.instructions)
                    .field("blocks", a.blocks())
                    .field("kernel_blocks", a.kernel.blocks)
                    .field("user_blocks", a.user.blocks)
                    .field("switches", a.switches)
            });
        }
        let kernel: u64 = asids.iter().map(|a| a.kernel.instructions).sum();
        cx.log("count", "total", |r| {
            r.field("instructions", total)
                .field("blocks", self.total_blocks())
                .field("kernel_instructions", kernel)
                .field("user_instructions", total - kernel)
                .field("asids", asids.len() as u64)
                .field("start_icount", start)
                .field("end_icount", end)
        });
        if let Some(path) = &self.file {
            std::fs::write(path, &table).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(Some(table.trim_end().to_string()))
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

    /// Drive `set` through a scripted run: (instructions in the block, asid, kernel,
    /// cr3-write-after-n-instructions).
    fn run(set: &mut PluginSet, ram: &GuestRam, start: u64, blocks: &[(u64, u64, bool)]) -> FakeCpu {
        let mut cpu = FakeCpu { icount: start, ..FakeCpu::default() };
        cpu.asid = blocks[0].1;
        cpu.kernel = blocks[0].2;
        set.start(ProgramPoint { icount: start, pc: 0 }, &cpu, ram).unwrap();
        for &(n, asid, kernel) in blocks {
            if asid != cpu.asid {
                // The address space changes in the middle of the previous block.
                let old = cpu.asid;
                cpu.icount -= 1;
                cpu.asid = asid;
                set.asid_change(&cpu, ram, old, asid);
                cpu.icount += 1;
            }
            cpu.kernel = kernel;
            set.before_block(&cpu, ram);
            cpu.icount += n;
        }
        cpu
    }

    #[test]
    fn totals_are_exact_across_asid_switches_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("count.txt");
        let spec = format!("count:file={},modes=true", file.display());
        let mut set =
            PluginSet::load(&crate::registry(), &parse_plugin_list(&spec).unwrap(), &LoadCx::default()).unwrap();
        assert_eq!(CpuObserver::hooks(&set), hook::BEFORE_BLOCK | hook::ASID_CHANGE);
        set.set_plog(plog(dir.path()));
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        let blocks = [
            (5, 0x1000, true),
            (3, 0x1000, false),
            (7, 0x2000, true),
            (2, 0x2000, false),
            (10, 0x2000, false),
            (4, 0x1000, true),
            (1, 0x3000, false),
        ];
        let cpu = run(&mut set, &ram, 100, &blocks);
        assert_eq!(cpu.icount, 132);
        let c = set.get::<Count>().unwrap();
        assert_eq!(c.total_instructions(), 31, "the last block is attributed at finish");
        let out = set.finish(ProgramPoint { icount: cpu.icount, pc: 0 }, &cpu, &ram).unwrap();
        let c = set.get::<Count>().unwrap();
        assert_eq!(c.total_instructions(), 32);
        assert_eq!(c.total_blocks(), 7);
        // Each asid change happened one instruction before the block start that follows it.
        let per = c.per_asid();
        let got: Vec<(u64, u64, u64, u64, u64)> =
            per.iter().map(|a| (a.asid, a.kernel.instructions, a.user.instructions, a.blocks(), a.switches)).collect();
        assert_eq!(got, vec![(0x2000, 7, 12, 3, 1), (0x1000, 5 + 3, 2 + 1, 3, 1), (0x3000, 1, 1, 1, 1)], "{per:?}");
        assert!(
            out[0].starts_with("count: 32 instructions, 7 blocks (icount 100..132), 3 address spaces"),
            "{}",
            out[0]
        );
        assert!(out[0].contains(&format!("kernel {:>14} instructions ( 50.00%)", 16)), "{}", out[0]);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim_end(), out[0]);
        let recs = read_plog(dir.path());
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].kind, "asid");
        assert_eq!(recs[0].asid, Some(0x2000));
        assert_eq!(recs[0].get("instructions").unwrap().as_u64(), Some(19));
        assert_eq!(recs[3].kind, "total");
        assert_eq!(recs[3].get("instructions").unwrap().as_u64(), Some(32));
        assert_eq!(recs[3].get("user_instructions").unwrap().as_u64(), Some(16));
    }

    #[test]
    fn backwards_icount_is_reported() {
        let mut set = PluginSet::from_plugins(vec![Box::new(Count::new(None))]);
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        let mut cpu = FakeCpu { icount: 10, ..FakeCpu::default() };
        set.start(ProgramPoint { icount: 10, pc: 0 }, &cpu, &ram).unwrap();
        set.before_block(&cpu, &ram);
        cpu.icount = 5;
        set.before_block(&cpu, &ram);
        let e = set.finish(ProgramPoint { icount: 5, pc: 0 }, &cpu, &ram).unwrap_err();
        assert!(e.contains("went backwards"), "{e}");
    }

    #[test]
    fn empty_run() {
        let mut set = PluginSet::from_plugins(vec![Box::new(Count::new(None))]);
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        let cpu = FakeCpu { icount: 7, ..FakeCpu::default() };
        set.start(ProgramPoint { icount: 7, pc: 0 }, &cpu, &ram).unwrap();
        let out = set.finish(ProgramPoint { icount: 7, pc: 0 }, &cpu, &ram).unwrap();
        assert!(out[0].starts_with("count: 0 instructions, 0 blocks"), "{}", out[0]);
    }
}
