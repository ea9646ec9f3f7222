//! `asidstory`: which process ran when, over the whole replay (PANDA's `asidstory`).
//!
//! Instructions are attributed by address space: from each address-space change (CR3 write) to
//! the next, every instruction counts for the process `osi_linux` says the CPU switched to (the
//! task whose `mm` is the new address space and that the scheduler marked `on_cpu`; see
//! [`crate::OsiLinux::last_switch`]). Kernel work done on a process's behalf, interrupts, and
//! kernel threads that borrow its address space (they do not load CR3) count for it, as in PANDA.
//! A row is a process by (pid, comm): a process that execs another program starts a new row.
//! Without introspection, rows are address spaces.
//!
//! At the end it writes `asidstory.txt` (`file=`): a table (instructions, pid, name, first and
//! last icount, address spaces) and a text chart, one row per process, `width=` columns (default
//! 100) spanning the replay, `#` where the process ran for at least half of the column, `:`
//! where it ran less; and `asidstory.svg` (`svg=`, `none` to skip): a Gantt-style timeline with
//! one labelled row per process, colored bars where it ran, an instruction-count axis and a
//! legend. The time axis is the replay's instruction range ([`LoadCx::replay_range`]), else the
//! first and last instruction seen.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

use crate::linux::{OsiLinux, Process};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "asidstory",
    about: "which process ran when: a text chart and an SVG timeline over the replay",
    args: ARGS,
    deps: &["osi_linux"],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "width", help: "columns of the text chart (default 100)" },
    ArgInfo { key: "file", help: "text chart (default asidstory.txt; none: no file)" },
    ArgInfo { key: "svg", help: "SVG timeline (default asidstory.svg; none: no file)" },
];

fn out_path(args: &Args, key: &str, default: &str) -> Option<PathBuf> {
    match args.str(key).as_deref() {
        None => Some(PathBuf::from(default)),
        Some("none") | Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
    }
}

fn make(args: &Args, lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let width = args.u64("width")?.unwrap_or(100);
    if !(10..=2000).contains(&width) {
        return Err(format!("plugin asidstory: width={width} is not in 10..=2000"));
    }
    Ok(Box::new(AsidStory {
        width: width as usize,
        file: out_path(args, "file", "asidstory.txt"),
        svg: out_path(args, "svg", "asidstory.svg"),
        range: lcx.replay_range,
        rows: Vec::new(),
        index: BTreeMap::new(),
        cur: None,
        start: None,
        end: None,
        switches: 0,
        user_first: None,
    }))
}

/// What a row stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    /// A process: (process id, comm).
    Process(u32, String),
    /// An address space nobody could be named for.
    Asid(u64),
}

/// One row of the story.
#[derive(Clone, Debug)]
pub struct Row {
    /// Process or address space.
    pub key: RowKey,
    /// Kernel thread.
    pub kernel_thread: bool,
    /// Address spaces it ran in.
    pub asids: BTreeSet<u64>,
    /// Instruction ranges `[from, to)` during which it was current, in order, merged.
    pub intervals: Vec<(u64, u64)>,
    /// Instructions attributed.
    pub instructions: u64,
}

impl Row {
    /// `comm (pid)` or `asid 0x...`.
    pub fn label(&self) -> String {
        match &self.key {
            RowKey::Process(pid, comm) if self.kernel_thread => format!("[{comm}] ({pid})"),
            RowKey::Process(pid, comm) => format!("{comm} ({pid})"),
            RowKey::Asid(0) => "paging off (asid 0)".to_string(),
            RowKey::Asid(a) => format!("asid {a:#x}"),
        }
    }

    /// First instruction attributed.
    pub fn first(&self) -> u64 {
        self.intervals.first().map_or(0, |i| i.0)
    }

    /// End of the last interval.
    pub fn last(&self) -> u64 {
        self.intervals.last().map_or(0, |i| i.1)
    }
}

/// The `asidstory` plugin.
pub struct AsidStory {
    width: usize,
    file: Option<PathBuf>,
    svg: Option<PathBuf>,
    range: Option<(u64, u64)>,
    rows: Vec<Row>,
    index: BTreeMap<RowKey, usize>,
    /// Current row, since when, in which address space.
    cur: Option<(usize, u64)>,
    start: Option<u64>,
    end: Option<u64>,
    switches: u64,
    /// First instruction run in a process's own address space (user space begins).
    user_first: Option<u64>,
}

impl AsidStory {
    /// The rows so far (the current interval is not closed until the next switch or the end),
    /// sorted by first instruction.
    pub fn rows(&self) -> Vec<&Row> {
        let mut v: Vec<&Row> = self.rows.iter().filter(|r| r.instructions > 0).collect();
        v.sort_by(|a, b| (a.first(), &a.key).cmp(&(b.first(), &b.key)));
        v
    }

    /// The instruction range the story covers (after the end of the run).
    pub fn span(&self) -> Option<(u64, u64)> {
        let (s, e) = (self.start?, self.end?);
        Some(match self.range {
            Some((a, b)) => (a.min(s), b.max(e)),
            None => (s, e),
        })
    }

    fn row(&mut self, key: RowKey, kernel_thread: bool) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.rows.push(Row {
            key: key.clone(),
            kernel_thread,
            asids: BTreeSet::new(),
            intervals: Vec::new(),
            instructions: 0,
        });
        self.index.insert(key, self.rows.len() - 1);
        self.rows.len() - 1
    }

    /// Close the current interval at `icount`. `running`: the task that was running (from the
    /// switch); if it is the row's process under a new name (it exec'd during the interval:
    /// the kernel loads the new address space before it renames the task), the interval goes
    /// to the row of the new name.
    fn close(&mut self, icount: u64, running: Option<&Process>) {
        if let Some((mut i, since)) = self.cur.take() {
            if let (RowKey::Process(pid, comm), Some(p)) = (&self.rows[i].key, running) {
                if *pid == p.tgid && *comm != p.comm {
                    let asids = self.rows[i].asids.clone();
                    i = self.row(RowKey::Process(p.tgid, p.comm.clone()), p.kernel_thread);
                    self.rows[i].asids.extend(asids);
                }
            }
            if icount > since {
                let r = &mut self.rows[i];
                r.instructions += icount - since;
                match r.intervals.last_mut() {
                    Some(last) if last.1 == since => last.1 = icount,
                    _ => r.intervals.push((since, icount)),
                }
            }
        }
    }

    /// Who runs now in `asid`: the switch osi_linux resolved at this point, else the current
    /// process, else the address space itself.
    fn open(&mut self, cx: &Cx, asid: u64, at_switch: bool) {
        let osi = cx.plugin::<OsiLinux>();
        let p = match osi {
            Some(o) if at_switch => match o.last_switch() {
                Some(s) if s.icount == cx.icount && s.new_asid == asid => s.process.clone(),
                _ => None,
            },
            Some(o) => o.current_process(cx),
            None => None,
        };
        let same = |p: &crate::Process| osi.map_or(p.asid == asid, |o| o.asid_matches(p.asid, asid));
        if p.as_ref().is_some_and(|p| p.mm != 0 && !p.kernel_thread && same(p)) {
            self.user_first.get_or_insert(cx.icount);
        }
        let i = match p {
            Some(p) => self.row(RowKey::Process(p.tgid, p.comm.clone()), p.kernel_thread),
            None => self.row(RowKey::Asid(asid), false),
        };
        self.rows[i].asids.insert(asid);
        self.cur = Some((i, cx.icount));
    }

    /// The text table and chart.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let Some((a, b)) = self.span() else { return s };
        let total = b.saturating_sub(a);
        let rows = self.rows();
        let _ = writeln!(
            s,
            "asidstory: instructions {a}..{b} ({total}), {} processes, {} address-space switches",
            rows.len(),
            self.switches
        );
        let _ = writeln!(s);
        let _ =
            writeln!(s, "{:>14} {:>7}  {:<20} {:>14} {:>14}  Asids", "Instructions", "Pid", "Name", "First", "Last");
        for r in &rows {
            let (pid, name) = match &r.key {
                RowKey::Process(p, c) => (p.to_string(), if r.kernel_thread { format!("[{c}]") } else { c.clone() }),
                RowKey::Asid(_) => ("-".into(), r.label()),
            };
            let asids: Vec<String> = r.asids.iter().map(|a| format!("{a:#x}")).collect();
            let _ = writeln!(
                s,
                "{:>14} {:>7}  {:<20} {:>14} {:>14}  {}",
                r.instructions,
                pid,
                name,
                r.first(),
                r.last(),
                asids.join(",")
            );
        }
        let w = self.width;
        let per = (total as f64 / w as f64).max(1.0);
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Timeline: {w} columns of {per:.0} instructions; '#' ran at least half of the column, ':' less"
        );
        let lw = rows.iter().map(|r| r.label().chars().count()).max().unwrap_or(0).min(32);
        for r in &rows {
            let mut cover = vec![0f64; w];
            for &(x, y) in &r.intervals {
                add_cover(&mut cover, (x.max(a) - a) as f64 / per, (y.min(b).max(a) - a) as f64 / per);
            }
            let bar: String = cover
                .iter()
                .map(|&c| {
                    if c >= 0.5 {
                        '#'
                    } else if c > 0.0 {
                        ':'
                    } else {
                        ' '
                    }
                })
                .collect();
            let label: String = r.label().chars().take(32).collect();
            let _ = writeln!(s, "{label:>lw$} :[{bar}]");
        }
        let _ = writeln!(s, "{:>lw$}   {a:<half$}{b:>rest$}", "", half = w / 2, rest = w - w / 2);
        s
    }

    /// The SVG timeline: one row per process over the whole replay. When user space (a process
    /// in its own address space) ran only in the last third or less of the replay (a boot,
    /// then a short workload), the time axis is split: the part before is compressed to a fifth
    /// of the width, the part where processes ran gets the rest.
    pub fn svg(&self) -> String {
        let (a, b) = self.span().unwrap_or((0, 0));
        let b = b.max(a + 1);
        let rows = self.rows();
        // compact rows when there are many
        let (row_h, bar_h) = if rows.len() > 80 { (16.0, 11.0) } else { (22.0, 14.0) };
        let g = Geometry { width: 1200.0, left: 230.0, right: 80.0, row_h, bar_h };
        let plot_w = g.width - g.left - g.right;
        let split = self.user_first.filter(|&d| d > a && (b - d) * 3 <= b - a).map(|d| d - ((b - d) / 50).min(d - a));
        let scale = match split {
            Some(d) => {
                let w0 = (plot_w * 0.2).round();
                Scale { segs: vec![(a, d, g.left, g.left + w0), (d, b, g.left + w0 + 10.0, g.left + plot_w)] }
            }
            None => Scale { segs: vec![(a, b, g.left, g.left + plot_w)] },
        };
        let top = 78.0;
        let n = rows.len().max(1) as f64;
        let axis_y = top + n * g.row_h + 6.0;
        let height = axis_y + 86.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{height:.0}" viewBox="0 0 {w:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">
<rect x="0" y="0" width="{w:.0}" height="{height:.0}" fill="white"/>
<text x="{l:.0}" y="26" font-size="17" font-weight="bold" fill="#222">Processes over the replay (asidstory)</text>
<text x="{l:.0}" y="46" fill="#555">instructions {a} to {b} ({}); {} processes; {} address-space switches</text>"##,
            fmt_count(b - a),
            rows.len(),
            self.switches,
            w = g.width,
            l = g.left,
        );
        if let Some(d) = split {
            let _ = writeln!(
                s,
                r##"<text x="{:.0}" y="64" fill="#555">split axis: {} to {d} compressed; {d} to {b}, where the processes ran, expanded</text>"##,
                g.left, a
            );
        }
        // grid
        let ticks = scale.ticks();
        let _ = writeln!(s, r##"<g stroke="#ddd" stroke-width="1">"##);
        for &(_, x, _) in &ticks {
            let _ = writeln!(s, r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{axis_y:.1}"/>"#, top - 4.0);
        }
        let _ = writeln!(s, "</g>");
        for (i, r) in rows.iter().enumerate() {
            let y = top + i as f64 * g.row_h;
            if i % 2 == 0 {
                let _ = writeln!(
                    s,
                    r##"<rect x="0" y="{y:.1}" width="{:.0}" height="{:.0}" fill="#f3f5f8" fill-opacity="0.7"/>"##,
                    g.width, g.row_h
                );
            }
            let color = if matches!(r.key, RowKey::Asid(_)) { "#9a9a9a".to_string() } else { color(i) };
            let pct = 100.0 * r.instructions as f64 / (b - a) as f64;
            let _ = writeln!(
                s,
                r#"<g><title>{}: {} instructions ({pct:.2}%), icount {} to {}</title>"#,
                xml(&r.label()),
                r.instructions,
                r.first(),
                r.last()
            );
            let ty = y + g.row_h / 2.0 + 4.0;
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{ty:.1}" text-anchor="end" fill="#222">{}</text><text x="{:.1}" y="{ty:.1}" fill="#666">{}</text>"##,
                g.left - 8.0,
                xml(&r.label()),
                g.left + plot_w + 8.0,
                fmt_count(r.instructions)
            );
            let _ = writeln!(s, r#"<g fill="{color}">"#);
            let by = y + (g.row_h - g.bar_h) / 2.0;
            // at least 1.5 pixels, so that short runs stay visible (the count is at the right)
            let flush = |s: &mut String, seg: (f64, f64)| {
                let w = (seg.1 - seg.0).max(1.5);
                let _ = writeln!(s, r#"<rect x="{:.2}" y="{by:.1}" width="{w:.2}" height="{:.0}"/>"#, seg.0, g.bar_h);
            };
            let mut open: Option<(f64, f64)> = None;
            for &(x0, x1) in &r.intervals {
                for (p0, p1) in scale.spans(x0, x1) {
                    open = match open {
                        Some((o0, o1)) if p0 <= o1 + 0.3 => Some((o0, o1.max(p1))),
                        Some(seg) => {
                            flush(&mut s, seg);
                            Some((p0, p1))
                        }
                        None => Some((p0, p1)),
                    };
                }
            }
            if let Some(seg) = open {
                flush(&mut s, seg);
            }
            let _ = writeln!(s, "</g></g>");
        }
        // axis, break mark, tick labels
        for &(_, _, x0, x1) in &scale.segs {
            let _ = writeln!(
                s,
                r##"<line x1="{x0:.1}" y1="{axis_y:.1}" x2="{x1:.1}" y2="{axis_y:.1}" stroke="#333" stroke-width="1"/>"##
            );
        }
        if scale.segs.len() > 1 {
            let bx = scale.segs[0].3 + 5.0;
            let _ = writeln!(
                s,
                r##"<line x1="{bx:.1}" y1="{:.1}" x2="{bx:.1}" y2="{axis_y:.1}" stroke="#888" stroke-dasharray="3,3"/><text x="{bx:.1}" y="{:.1}" text-anchor="middle" fill="#333">//</text>"##,
                top - 4.0,
                axis_y + 4.0
            );
        }
        let mut last_label = f64::NEG_INFINITY;
        for &(t, x, step) in &ticks {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
                axis_y + 5.0
            );
            if x - last_label >= 44.0 {
                let _ = writeln!(
                    s,
                    r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
                    axis_y + 19.0,
                    fmt_tick(t, step)
                );
                last_label = x;
            }
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">instruction count</text>"##,
            g.left + plot_w / 2.0,
            axis_y + 36.0
        );
        let ly = axis_y + 48.0;
        let _ = writeln!(
            s,
            r##"<rect x="{l:.0}" y="{ly:.1}" width="9" height="10" fill="{}"/><rect x="{:.0}" y="{ly:.1}" width="9" height="10" fill="{}"/><text x="{:.0}" y="{:.1}" fill="#555">a process ran: its address space (CR3) was current (kernel work on its behalf included)</text>"##,
            color(1),
            g.left + 9.0,
            color(2),
            g.left + 24.0,
            ly + 9.0,
            l = g.left,
        );
        let _ = writeln!(
            s,
            r##"<rect x="{l:.0}" y="{:.1}" width="18" height="10" fill="#9a9a9a"/><text x="{:.0}" y="{:.1}" fill="#555">an address space without a known process; right: instructions in the row</text>"##,
            ly + 16.0,
            g.left + 24.0,
            ly + 25.0,
            l = g.left,
        );
        s.push_str("</svg>\n");
        s
    }
}

/// A piecewise-linear time axis: segments `(from, to, x_from, x_to)`.
struct Scale {
    segs: Vec<(u64, u64, f64, f64)>,
}

impl Scale {
    /// The pixel spans of `[x0, x1)`, one per segment it touches.
    fn spans(&self, v0: u64, v1: u64) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for &(a, b, p, q) in &self.segs {
            let (lo, hi) = (v0.max(a), v1.min(b));
            if hi <= lo {
                continue;
            }
            let f = |v: u64| p + (v - a) as f64 / (b - a).max(1) as f64 * (q - p);
            out.push((f(lo), f(hi)));
        }
        out
    }

    /// Round tick values, their x and the tick step of their segment, each segment with about
    /// one tick per 110 pixels.
    fn ticks(&self) -> Vec<(u64, f64, u64)> {
        let mut out = Vec::new();
        for &(a, b, p, q) in &self.segs {
            let n = ((q - p) / 110.0).round().max(1.0);
            let step = nice_step((b - a) as f64 / n);
            let mut t = a.div_ceil(step) * step;
            while t <= b {
                out.push((t, p + (t - a) as f64 / (b - a).max(1) as f64 * (q - p), step));
                t += step;
            }
        }
        out
    }
}

/// Sizes of the SVG layout.
struct Geometry {
    width: f64,
    left: f64,
    right: f64,
    row_h: f64,
    bar_h: f64,
}

/// Add the interval `[x0, x1)` (in column units) to the per-column coverage fractions.
fn add_cover(cover: &mut [f64], x0: f64, x1: f64) {
    let n = cover.len();
    if x1 <= x0 || n == 0 {
        return;
    }
    let mut c = x0.floor() as usize;
    while c < n && (c as f64) < x1 {
        let lo = x0.max(c as f64);
        let hi = x1.min(c as f64 + 1.0);
        if hi > lo {
            cover[c] += hi - lo;
        }
        c += 1;
    }
}

/// 1, 2 or 5 times a power of ten, at least `x` (and at least 1).
fn nice_step(x: f64) -> u64 {
    let x = x.max(1.0);
    let p = 10f64.powf(x.log10().floor());
    let m = [1.0, 2.0, 5.0, 10.0].into_iter().find(|m| m * p >= x).unwrap_or(10.0);
    (m * p).round().max(1.0) as u64
}

/// `950`, `12.5k`, `3.2M`, `1.25G`.
fn fmt_count(v: u64) -> String {
    let f = v as f64;
    let (d, suffix) = if v >= 1_000_000_000 {
        (1e9, "G")
    } else if v >= 1_000_000 {
        (1e6, "M")
    } else if v >= 1_000 {
        (1e3, "k")
    } else {
        return v.to_string();
    };
    let x = f / d;
    let t = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let t = if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t };
    format!("{t}{suffix}")
}

/// A tick label with as many decimals as the tick step needs (`6.875G` for steps of 5M),
/// trailing zeros dropped.
fn fmt_tick(v: u64, step: u64) -> String {
    let unit = if v >= 1_000_000_000 {
        (1e9, "G")
    } else if v >= 1_000_000 {
        (1e6, "M")
    } else if v >= 1_000 {
        (1e3, "k")
    } else {
        return v.to_string();
    };
    let decimals = (unit.0 / step.max(1) as f64).log10().ceil().clamp(0.0, 9.0) as usize;
    let t = format!("{:.*}", decimals, v as f64 / unit.0);
    let t = if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.') } else { &t };
    format!("{t}{}", unit.1)
}

/// Distinct colors: golden-angle hues.
fn color(i: usize) -> String {
    let h = (i as f64 * 137.508) % 360.0;
    format!("hsl({h:.0},62%,48%)")
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

impl Plugin for AsidStory {
    fn name(&self) -> &'static str {
        "asidstory"
    }

    fn hooks(&self) -> u32 {
        hook::ASID_CHANGE
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        self.start = Some(cx.icount);
        let asid = cx.asid();
        self.open(cx, asid, false);
        Ok(())
    }

    fn asid_change(&mut self, cx: &mut Cx, old: u64, new: u64) {
        // x86_64 page-table isolation switches between the two halves of one process's PGD at
        // every kernel entry and exit: not a change of address space (osi_linux, which runs
        // first, has decided that).
        if cx.plugin::<OsiLinux>().is_some_and(|o| o.same_address_space(old, new)) {
            return;
        }
        self.switches += 1;
        if self.start.is_none() {
            self.start = Some(cx.icount);
        }
        let running = cx
            .plugin::<OsiLinux>()
            .and_then(|o| o.last_switch())
            .filter(|s| s.icount == cx.icount && s.new_asid == new)
            .and_then(|s| s.previous.clone());
        self.close(cx.icount, running.as_ref());
        self.open(cx, new, true);
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        let running = cx.plugin::<OsiLinux>().and_then(|o| o.current_process(cx));
        self.close(cx.icount, running.as_ref());
        self.start.get_or_insert(cx.icount);
        self.end = Some(cx.icount);
        let mut wrote = Vec::new();
        if let Some(p) = &self.file {
            std::fs::write(p, self.text()).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            wrote.push(p.display().to_string());
        }
        if let Some(p) = &self.svg {
            std::fs::write(p, self.svg()).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            wrote.push(p.display().to_string());
        }
        Ok(Some(format!(
            "asidstory: {} processes, {} address-space switches{}",
            self.rows().len(),
            self.switches,
            if wrote.is_empty() { String::new() } else { format!("; wrote {}", wrote.join(", ")) }
        )))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, kernel thread, intervals) of each row.
    type RowSpec = (RowKey, bool, Vec<(u64, u64)>);

    fn story(rows: Vec<RowSpec>, end: u64) -> AsidStory {
        let mut st = AsidStory {
            width: 10,
            file: None,
            svg: None,
            range: Some((0, end)),
            rows: Vec::new(),
            index: BTreeMap::new(),
            cur: None,
            start: Some(0),
            end: Some(end),
            switches: 3,
            user_first: None,
        };
        for (key, kt, iv) in rows {
            if matches!(key, RowKey::Process(..)) && !kt {
                let f = iv[0].0;
                st.user_first = Some(st.user_first.map_or(f, |u| u.min(f)));
            }
            let i = st.row(key, kt);
            st.rows[i].instructions = iv.iter().map(|(a, b)| b - a).sum();
            st.rows[i].intervals = iv;
        }
        st
    }

    #[test]
    fn svg_zooms_on_the_processes_of_a_boot() {
        let st = story(
            vec![
                (RowKey::Asid(0), false, vec![(0, 500_000)]),
                (RowKey::Process(2, "kworker/0:1".into()), true, vec![(500_000, 950_000)]),
                (RowKey::Process(1, "init".into()), false, vec![(950_000, 960_000), (990_000, 1_000_000)]),
                (RowKey::Process(7, "a<b&c".into()), false, vec![(960_000, 990_000)]),
            ],
            1_000_000,
        );
        let svg = st.svg();
        assert!(svg.contains("split axis: 0 to 949000 compressed; 949000 to 1000000"), "{svg}");
        assert!(svg.contains(">a&lt;b&amp;c (7)</text>") && !svg.contains("a<b"), "escaped");
        for label in ["init (1)", "paging off (asid 0)", "[kworker/0:1] (2)"] {
            assert_eq!(svg.matches(&format!(">{label}</text>")).count(), 1, "{label}");
        }
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
        // init's two runs are two bars in the expanded part; the 30k-instruction process is wide
        let init = svg.split("<g><title>init (1)").nth(1).unwrap().split("</g></g>").next().unwrap();
        assert_eq!(init.matches("<rect").count(), 2);
        let a = svg.split("<g><title>a&lt;b").nth(1).unwrap();
        let w: f64 = a.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(w > 300.0, "{w}");
        // tick labels on both sides of the break
        assert!(svg.contains(">0</text>") && svg.contains(">1M</text>"), "{svg}");
        let text = st.text();
        assert!(text.contains(" [kworker/0:1] "), "{text}");
        // processes from the start: no detail panel
        let st = story(vec![(RowKey::Process(1, "init".into()), false, vec![(0, 1000)])], 1000);
        assert!(!st.svg().contains("split axis"));
    }

    #[test]
    fn helpers() {
        assert_eq!(nice_step(0.3), 1);
        assert_eq!(nice_step(7.0), 10);
        assert_eq!(nice_step(1_300.0), 2_000);
        assert_eq!(nice_step(400_000.0), 500_000);
        assert_eq!(fmt_count(950), "950");
        assert_eq!(fmt_count(12_500), "12.5k");
        assert_eq!(fmt_count(3_000_000), "3M");
        assert_eq!(fmt_count(1_250_000_000), "1.25G");
        assert_eq!(fmt_tick(6_875_000_000, 5_000_000), "6.875G");
        assert_eq!(fmt_tick(6_870_000_000, 5_000_000), "6.87G");
        assert_eq!(fmt_tick(5_000_000_000, 5_000_000_000), "5G");
        assert_eq!(fmt_tick(1_500_000, 500_000), "1.5M");
        assert_eq!(fmt_tick(0, 100), "0");
        let mut c = vec![0.0; 4];
        add_cover(&mut c, 0.5, 2.25);
        assert_eq!(c, vec![0.5, 1.0, 0.25, 0.0]);
        assert_eq!(xml("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
