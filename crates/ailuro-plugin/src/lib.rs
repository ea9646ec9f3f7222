//! Ailuro's analysis-plugin API (`docs/PLUGINS.md` has the guide).
//!
//! A plugin is a Rust type implementing [`Plugin`]: it says which callback kinds it wants
//! ([`Plugin::hooks`], bits of [`hook`]) and overrides those callbacks. A [`PluginSet`] holds the
//! loaded plugins, in load order, and is the CPU's [`CpuObserver`]: the CPU calls it only for the
//! kinds at least one plugin wants, and the set calls only the plugins that want each kind, so a
//! kind nobody wants costs nothing on the hot path. The machine adds the events only it sees
//! (port and MMIO accesses, DMA, replay start and end).
//!
//! Every callback gets a [`Cx`]: the program point, a read-only view of the CPU and RAM (with page
//! walks that never fault the guest), the plugin log, and read access to the *other* loaded
//! plugins by type ([`Cx::plugin`]) — that is how plugins build on each other (e.g. `syscalls`
//! asks `osi_linux` for the current process) without global state. A plugin that others depend
//! on is loaded before them, so it sees each event first.

#![warn(missing_docs)]

mod args;

use std::any::Any;

pub use ailuro_bus::observe::{hook, CpuObserver, CpuView, InterruptEvent, MemAccess};
use ailuro_bus::{GuestRam, ProgramPoint};
pub use ailuro_plog::{PlogWriter, RecordBuilder};
pub use args::{parse_plugin_list, parse_u64, ArgInfo, Args, PluginSpec};

/// Bits of [`Plugin::hooks`] beyond the CPU's [`hook`] bits: events the machine reports.
pub mod machine_hook {
    /// [`super::Plugin::port_io`].
    pub const PORT_IO: u32 = 1 << 16;
    /// [`super::Plugin::mmio`].
    pub const MMIO: u32 = 1 << 17;
    /// [`super::Plugin::dma`].
    pub const DMA: u32 = 1 << 18;
}

/// An analysis plugin. All callbacks have empty defaults; only those whose bit is in
/// [`Plugin::hooks`] are ever called (replay start/end and [`Plugin::finish`] always are).
#[allow(unused_variables)]
pub trait Plugin: Any {
    /// The registered name (`-panda NAME`).
    fn name(&self) -> &'static str;
    /// Bits of [`hook`] and [`machine_hook`] this plugin wants. Asked again whenever the run
    /// loop resumes the CPU (see [`Plugin::wake_at`]), so a plugin may want more or less over time
    /// (e.g. `trace` wants instructions only inside its range).
    fn hooks(&self) -> u32 {
        0
    }
    /// The next instruction count at which this plugin needs the run loop to stop the CPU and
    /// ask [`Plugin::hooks`] again, or call [`Plugin::at_icount`] (e.g. the start of a traced
    /// range, the point where `memsavep` dumps memory). `None`: no such point.
    fn wake_at(&self) -> Option<u64> {
        None
    }
    /// The run reached an instruction count returned by [`Plugin::wake_at`] (the CPU is between
    /// instructions; `cx.icount` is exactly that count).
    fn at_icount(&mut self, cx: &mut Cx) {}
    /// The replay (or live run) starts; `cx.icount` is its first instruction count.
    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        Ok(())
    }
    /// Before an instruction executes.
    fn before_insn(&mut self, cx: &mut Cx) {}
    /// After an instruction retired (`pc` is its address; `cx.pc` the next one).
    fn after_insn(&mut self, cx: &mut Cx, pc: u64) {}
    /// Before a basic block starts (see [`CpuObserver::before_block`]).
    fn before_block(&mut self, cx: &mut Cx) {}
    /// After the control transfer that ends a block retired (`pc` is its address).
    fn after_block(&mut self, cx: &mut Cx, pc: u64) {}
    /// A guest memory read.
    fn mem_read(&mut self, cx: &mut Cx, access: &MemAccess) {}
    /// A guest memory write.
    fn mem_write(&mut self, cx: &mut Cx, access: &MemAccess) {}
    /// An interrupt or exception is delivered.
    fn interrupt(&mut self, cx: &mut Cx, event: &InterruptEvent) {}
    /// The address space changed (x86 CR3 write).
    fn asid_change(&mut self, cx: &mut Cx, old: u64, new: u64) {}
    /// A port access (`value` read or written). No CPU view is available here.
    fn port_io(&mut self, cx: &mut Cx, port: u16, size: u8, value: u32, write: bool) {}
    /// An MMIO access. No CPU view is available here.
    fn mmio(&mut self, cx: &mut Cx, addr: u64, size: u8, value: u64, write: bool) {}
    /// DMA into guest RAM (applied from the log during replay).
    fn dma(&mut self, cx: &mut Cx, addr: u64, data: &[u8]) {}
    /// The run ends (`cx.icount` is the final count). Returns a summary for stderr, if any.
    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// `self` as `Any`, so other plugins can find it by type ([`Cx::plugin`]).
    fn as_any(&self) -> &dyn Any;
}

/// What callbacks ask of the run: stop it, report an error.
#[derive(Debug, Default)]
pub struct Control {
    /// A plugin asked to end the run (reason).
    pub stop: Option<String>,
    /// A plugin failed (first error wins); the run stops.
    pub error: Option<String>,
}

/// The context of one callback.
pub struct Cx<'a> {
    /// Instructions retired so far.
    pub icount: u64,
    /// Program counter (see the callback for which instruction).
    pub pc: u64,
    cpu: Option<&'a dyn CpuView>,
    ram: Option<&'a GuestRam>,
    plog: Option<&'a mut PlogWriter>,
    before: &'a [Box<dyn Plugin>],
    after: &'a [Box<dyn Plugin>],
    control: &'a mut Control,
}

impl<'a> Cx<'a> {
    /// The CPU, when the event comes from it (not for port/MMIO/DMA events).
    pub fn cpu(&self) -> Option<&'a dyn CpuView> {
        self.cpu
    }

    /// Guest RAM, when available (not for port/MMIO events, which happen inside an instruction).
    pub fn ram(&self) -> Option<&'a GuestRam> {
        self.ram
    }

    /// Current address-space identifier (0 if unknown here).
    pub fn asid(&self) -> u64 {
        self.cpu.map_or(0, |c| c.asid())
    }

    /// Read guest-physical memory; `false` if any byte is outside RAM or RAM is unavailable.
    pub fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> bool {
        self.ram.is_some_and(|r| r.read(paddr, buf).is_ok())
    }

    /// Read guest-virtual memory through the current page tables (never faults the guest);
    /// `false` if a page is unmapped or the CPU view is unavailable.
    pub fn read_virt(&self, vaddr: u64, buf: &mut [u8]) -> bool {
        let (Some(cpu), Some(ram)) = (self.cpu, self.ram) else { return false };
        let mut done = 0usize;
        while done < buf.len() {
            let va = vaddr.wrapping_add(done as u64);
            let in_page = (4096 - (va & 0xfff)) as usize;
            let n = in_page.min(buf.len() - done);
            let Some(pa) = cpu.virt_to_phys(ram, va) else { return false };
            if ram.read(pa, &mut buf[done..done + n]).is_err() {
                return false;
            }
            done += n;
        }
        true
    }

    /// Read a little-endian u32 at a virtual address.
    pub fn read_virt_u32(&self, vaddr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read_virt(vaddr, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// Read a NUL-terminated string (at most `max` bytes) at a virtual address; `None` if the
    /// first byte is unreadable. Stops early at an unmapped page.
    pub fn read_virt_cstr(&self, vaddr: u64, max: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while out.len() < max {
            if !self.read_virt(vaddr + out.len() as u64, &mut b) {
                if out.is_empty() {
                    return None;
                }
                break;
            }
            if b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        Some(out)
    }

    /// Another loaded plugin, by type (loaded before or after this one).
    pub fn plugin<T: Plugin>(&self) -> Option<&'a T> {
        self.before.iter().chain(self.after.iter()).find_map(|p| p.as_any().downcast_ref::<T>())
    }

    /// Is a plugin log (`-pandalog`) open?
    pub fn has_plog(&self) -> bool {
        self.plog.is_some()
    }

    /// Start a plugin-log record stamped with this program point and address space; `None` when
    /// no log is open. Finish it with [`Cx::emit`].
    ///
    /// Records may be written at any icount, also earlier than records already written (port
    /// and MMIO events, for instance, arrive after the CPU slice they happened in): the log keeps
    /// them in the order written, and readers sort when asked (`ailuro-plog dump --sorted`).
    pub fn record(&mut self, plugin: &str, kind: &str) -> Option<RecordBuilder<'_>> {
        let asid = self.cpu.map(|c| c.asid());
        let (icount, pc) = (self.icount, self.pc);
        self.plog.as_deref_mut().map(|w| w.record(icount, pc, plugin, kind).asid(asid))
    }

    /// Finish a record from [`Cx::record`]; a write error stops the run with that error.
    pub fn emit(control: &mut Control, rec: RecordBuilder<'_>) {
        if let Err(e) = rec.emit() {
            control.error.get_or_insert(format!("cannot write the plugin log: {e}"));
        }
    }

    /// Write a record with `fill` adding its fields (nothing happens without a plugin log).
    pub fn log(&mut self, plugin: &str, kind: &str, fill: impl FnOnce(RecordBuilder<'_>) -> RecordBuilder<'_>) {
        let asid = self.cpu.map(|c| c.asid());
        let (icount, pc) = (self.icount, self.pc);
        if let Some(w) = self.plog.as_deref_mut() {
            let rec = fill(w.record(icount, pc, plugin, kind).asid(asid));
            if let Err(e) = rec.emit() {
                self.control.error.get_or_insert(format!("cannot write the plugin log: {e}"));
            }
        }
    }

    /// Ask for the run to end after the current instruction.
    pub fn request_stop(&mut self, reason: impl Into<String>) {
        self.control.stop.get_or_insert(reason.into());
    }

    /// Report a failure: the run stops with this error.
    pub fn fail(&mut self, error: impl Into<String>) {
        self.control.error.get_or_insert(error.into());
    }
}

/// How a registered plugin is created.
pub type Factory = fn(&Args, &LoadCx) -> Result<Box<dyn Plugin>, String>;

/// A registered plugin: name, documentation, arguments, dependencies and factory.
#[derive(Clone, Copy)]
pub struct PluginInfo {
    /// Name used with `-panda`.
    pub name: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Accepted arguments.
    pub args: &'static [ArgInfo],
    /// Plugins this one needs; they are loaded (with default arguments) before it if not named.
    pub deps: &'static [&'static str],
    /// Creates the plugin from its arguments.
    pub make: Factory,
}

/// What a factory may know about the run being set up.
#[derive(Clone, Debug, Default)]
pub struct LoadCx {
    /// Recording name when replaying.
    pub recording: Option<std::path::PathBuf>,
    /// Instruction count where the replay starts and ends (`None` live).
    pub replay_range: Option<(u64, u64)>,
    /// Architecture name (`i386`, `x86_64`, `arm`).
    pub arch: String,
}

/// The loaded plugins and the plugin log; the CPU's observer during a run.
pub struct PluginSet {
    plugins: Vec<Box<dyn Plugin>>,
    hooks: Vec<u32>,
    union: u32,
    plog: Option<PlogWriter>,
    /// Stop/error requests from callbacks.
    pub control: Control,
}

impl PluginSet {
    /// Create the plugins named in `specs` (dependencies first), checking names and arguments
    /// against `registry`. Errors name what exists.
    pub fn load(registry: &[PluginInfo], specs: &[PluginSpec], lcx: &LoadCx) -> Result<PluginSet, String> {
        let mut order: Vec<(PluginInfo, Vec<(String, String)>)> = Vec::new();
        fn find<'r>(registry: &'r [PluginInfo], name: &str) -> Result<&'r PluginInfo, String> {
            registry.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<&str> = registry.iter().map(|p| p.name).collect();
                format!("unknown plugin '{name}'; available: {}", names.join(", "))
            })
        }
        fn add(
            registry: &[PluginInfo],
            order: &mut Vec<(PluginInfo, Vec<(String, String)>)>,
            specs: &[PluginSpec],
            name: &str,
            depth: usize,
        ) -> Result<(), String> {
            if depth > 16 {
                return Err(format!("plugin dependency cycle at '{name}'"));
            }
            if order.iter().any(|(p, _)| p.name == name) {
                return Ok(());
            }
            let info = *find(registry, name)?;
            for d in info.deps {
                add(registry, order, specs, d, depth + 1)?;
            }
            let args = specs.iter().find(|s| s.name == name).map(|s| s.args.clone()).unwrap_or_default();
            order.push((info, args));
            Ok(())
        }
        for s in specs {
            if specs.iter().filter(|t| t.name == s.name).count() > 1 {
                return Err(format!("plugin '{}' is loaded twice", s.name));
            }
            add(registry, &mut order, specs, &s.name, 0)?;
        }
        let mut plugins = Vec::new();
        for (info, pairs) in order {
            let args = Args::new(info.name, &pairs);
            let p = (info.make)(&args, lcx)?;
            args.finish(info.args)?;
            plugins.push(p);
        }
        Ok(PluginSet::from_plugins(plugins))
    }

    /// A set of already-created plugins (in dispatch order).
    pub fn from_plugins(plugins: Vec<Box<dyn Plugin>>) -> PluginSet {
        let hooks: Vec<u32> = plugins.iter().map(|p| p.hooks()).collect();
        let union = hooks.iter().fold(0, |a, b| a | b);
        PluginSet { plugins, hooks, union, plog: None, control: Control::default() }
    }

    /// Ask every plugin for its hooks again (between CPU runs).
    pub fn refresh_hooks(&mut self) {
        for (h, p) in self.hooks.iter_mut().zip(&self.plugins) {
            *h = p.hooks();
        }
        self.union = self.hooks.iter().fold(0, |a, b| a | b);
    }

    /// The earliest instruction count any plugin wants to be woken at.
    pub fn wake_at(&self) -> Option<u64> {
        self.plugins.iter().filter_map(|p| p.wake_at()).min()
    }

    /// Call [`Plugin::at_icount`] of the plugins whose wake point is `cpu.icount()` (or past).
    pub fn wake(&mut self, cpu: &dyn CpuView, ram: &GuestRam) {
        let now = cpu.icount();
        let due: Vec<bool> = self.plugins.iter().map(|p| p.wake_at().is_some_and(|w| w <= now)).collect();
        let mut i = 0;
        self.each(0, point(cpu), Some(cpu), Some(ram), |p, cx| {
            if due[i] {
                p.at_icount(cx);
            }
            i += 1;
        });
        self.refresh_hooks();
    }

    /// Attach the plugin log every plugin writes into.
    pub fn set_plog(&mut self, w: PlogWriter) {
        self.plog = Some(w);
    }

    /// Names of the loaded plugins, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Is any plugin loaded?
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Union of the loaded plugins' hook bits.
    pub fn wanted(&self) -> u32 {
        self.union
    }

    /// A loaded plugin by type.
    pub fn get<T: Plugin>(&self) -> Option<&T> {
        self.plugins.iter().find_map(|p| p.as_any().downcast_ref::<T>())
    }

    /// Call `f` on the loaded plugin of type `T`, if any (e.g. for the machine to configure
    /// plugins it knows).
    pub fn with_mut<T: Plugin>(&mut self, f: impl FnOnce(&mut T)) {
        for p in self.plugins.iter_mut() {
            let any: &mut dyn Any = p.as_mut();
            if let Some(t) = any.downcast_mut::<T>() {
                f(t);
                return;
            }
        }
    }

    /// Call `f` on every plugin whose hooks include `bit` (all plugins if `bit` is 0).
    fn each(
        &mut self,
        bit: u32,
        at: ProgramPoint,
        cpu: Option<&dyn CpuView>,
        ram: Option<&GuestRam>,
        mut f: impl FnMut(&mut dyn Plugin, &mut Cx),
    ) {
        for i in 0..self.plugins.len() {
            if bit != 0 && self.hooks[i] & bit == 0 {
                continue;
            }
            let (before, rest) = self.plugins.split_at_mut(i);
            let (cur, after) = rest.split_first_mut().expect("index in range");
            let mut cx = Cx {
                icount: at.icount,
                pc: at.pc,
                cpu,
                ram,
                plog: self.plog.as_mut(),
                before,
                after,
                control: &mut self.control,
            };
            f(cur.as_mut(), &mut cx);
        }
    }

    /// The run starts. An error from any plugin is returned (the run must not start).
    pub fn start(&mut self, at: ProgramPoint, cpu: &dyn CpuView, ram: &GuestRam) -> Result<(), String> {
        let mut err = None;
        self.each(0, at, Some(cpu), Some(ram), |p, cx| {
            if err.is_none() {
                if let Err(e) = p.start(cx) {
                    err = Some(format!("plugin {}: {e}", p.name()));
                }
            }
        });
        // Plugins may decide what they want in `start` (e.g. from the replay's range).
        self.refresh_hooks();
        err.map_or(Ok(()), Err)
    }

    /// The run ended: plugins finish (summaries returned in order), then the log is closed.
    ///
    /// Errors: the first of a failure reported during the run and not yet taken from
    /// [`Self::control`] (e.g. a plugin-log write that failed: disk full), a plugin's `finish`
    /// error, and a failure to finish the plugin log. The log is finished (or, after a write
    /// failure, already removed) in every case.
    pub fn finish(&mut self, at: ProgramPoint, cpu: &dyn CpuView, ram: &GuestRam) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut err = None;
        self.each(0, at, Some(cpu), Some(ram), |p, cx| match p.finish(cx) {
            Ok(Some(s)) => out.push(s),
            Ok(None) => {}
            Err(e) => {
                err.get_or_insert(format!("plugin {}: {e}", p.name()));
            }
        });
        // The earliest failure is the cause of the others (a failed write makes finishing the
        // log fail too), so it is the one reported.
        let mut err = self.control.error.take().or(err);
        if let Some(w) = self.plog.take() {
            let path = w.path().display().to_string();
            let records = w.record_count();
            match w.finish() {
                Ok(_) => out.push(format!("plugin log {path}: {records} records")),
                Err(e) => {
                    err.get_or_insert(format!("cannot finish the plugin log: {e}"));
                }
            }
        }
        err.map_or(Ok(out), Err)
    }

    /// A port access seen by the machine.
    pub fn port_io(&mut self, at: ProgramPoint, port: u16, size: u8, value: u32, write: bool) {
        if self.union & machine_hook::PORT_IO != 0 {
            self.each(machine_hook::PORT_IO, at, None, None, |p, cx| p.port_io(cx, port, size, value, write));
        }
    }

    /// An MMIO access seen by the machine.
    pub fn mmio(&mut self, at: ProgramPoint, addr: u64, size: u8, value: u64, write: bool) {
        if self.union & machine_hook::MMIO != 0 {
            self.each(machine_hook::MMIO, at, None, None, |p, cx| p.mmio(cx, addr, size, value, write));
        }
    }

    /// DMA into RAM applied by the machine.
    pub fn dma(&mut self, at: ProgramPoint, cpu: &dyn CpuView, ram: &GuestRam, addr: u64, data: &[u8]) {
        if self.union & machine_hook::DMA != 0 {
            self.each(machine_hook::DMA, at, Some(cpu), Some(ram), |p, cx| p.dma(cx, addr, data));
        }
    }

    /// Has a callback asked to stop, or failed?
    pub fn wants_stop(&self) -> bool {
        self.control.stop.is_some() || self.control.error.is_some()
    }
}

fn point(cpu: &dyn CpuView) -> ProgramPoint {
    ProgramPoint { icount: cpu.icount(), pc: cpu.pc() }
}

impl CpuObserver for PluginSet {
    fn hooks(&self) -> u32 {
        self.union & hook::ALL
    }
    fn before_insn(&mut self, cpu: &dyn CpuView, ram: &GuestRam) {
        self.each(hook::BEFORE_INSN, point(cpu), Some(cpu), Some(ram), |p, cx| p.before_insn(cx));
    }
    fn after_insn(&mut self, cpu: &dyn CpuView, ram: &GuestRam, pc: u64) {
        self.each(hook::AFTER_INSN, point(cpu), Some(cpu), Some(ram), |p, cx| p.after_insn(cx, pc));
    }
    fn before_block(&mut self, cpu: &dyn CpuView, ram: &GuestRam) {
        self.each(hook::BEFORE_BLOCK, point(cpu), Some(cpu), Some(ram), |p, cx| p.before_block(cx));
    }
    fn after_block(&mut self, cpu: &dyn CpuView, ram: &GuestRam, pc: u64) {
        self.each(hook::AFTER_BLOCK, point(cpu), Some(cpu), Some(ram), |p, cx| p.after_block(cx, pc));
    }
    fn mem_read(&mut self, cpu: &dyn CpuView, ram: &GuestRam, a: &MemAccess) {
        self.each(hook::MEM_READ, point(cpu), Some(cpu), Some(ram), |p, cx| p.mem_read(cx, a));
    }
    fn mem_write(&mut self, cpu: &dyn CpuView, ram: &GuestRam, a: &MemAccess) {
        self.each(hook::MEM_WRITE, point(cpu), Some(cpu), Some(ram), |p, cx| p.mem_write(cx, a));
    }
    fn interrupt(&mut self, cpu: &dyn CpuView, ram: &GuestRam, e: &InterruptEvent) {
        self.each(hook::INTERRUPT, point(cpu), Some(cpu), Some(ram), |p, cx| p.interrupt(cx, e));
    }
    fn asid_change(&mut self, cpu: &dyn CpuView, ram: &GuestRam, old: u64, new: u64) {
        self.each(hook::ASID_CHANGE, point(cpu), Some(cpu), Some(ram), |p, cx| p.asid_change(cx, old, new));
    }
}

#[cfg(test)]
mod tests;
