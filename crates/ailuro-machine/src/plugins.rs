//! Running analysis plugins on a machine: the CPU observer, port/MMIO events from the platform
//! seam, wake points, and start/finish.

use ailuro_bus::{GuestRam, Platform, ProgramPoint};
use ailuro_plugin::{machine_hook, PluginSet};
use ailuro_x86::{Cpu, RunExit};

/// A port or MMIO access seen at the platform seam, delivered to plugins after the CPU returns.
#[derive(Clone, Copy, Debug)]
enum IoEvent {
    Port { at: ProgramPoint, port: u16, size: u8, value: u32, write: bool },
    Mmio { at: ProgramPoint, addr: u64, size: u8, value: u64, write: bool },
}

/// Forwards to the real platform and notes every access.
struct Tee<'a, P: Platform + ?Sized> {
    inner: &'a mut P,
    events: &'a mut Vec<IoEvent>,
}

impl<P: Platform + ?Sized> Platform for Tee<'_, P> {
    fn io_read(&mut self, at: ProgramPoint, port: u16, size: u8) -> u32 {
        let value = self.inner.io_read(at, port, size);
        self.events.push(IoEvent::Port { at, port, size, value, write: false });
        value
    }
    fn io_write(&mut self, at: ProgramPoint, port: u16, size: u8, value: u32) {
        self.inner.io_write(at, port, size, value);
        self.events.push(IoEvent::Port { at, port, size, value, write: true });
    }
    fn mmio_read(&mut self, at: ProgramPoint, addr: u64, size: u8) -> u64 {
        let value = self.inner.mmio_read(at, addr, size);
        self.events.push(IoEvent::Mmio { at, addr, size, value, write: false });
        value
    }
    fn mmio_write(&mut self, at: ProgramPoint, addr: u64, size: u8, value: u64) {
        self.inner.mmio_write(at, addr, size, value);
        self.events.push(IoEvent::Mmio { at, addr, size, value, write: true });
    }
    fn read_timestamp(&mut self, at: ProgramPoint) -> u64 {
        self.inner.read_timestamp(at)
    }
    fn interrupt_ack(&mut self, at: ProgramPoint) -> u32 {
        self.inner.interrupt_ack(at)
    }
}

/// Plugins loaded on a machine.
pub struct Plugins {
    /// The set (dispatch, plugin log).
    pub set: PluginSet,
    started: bool,
    io: Vec<IoEvent>,
}

impl Plugins {
    /// Wrap a loaded set.
    pub fn new(set: PluginSet) -> Plugins {
        Plugins { set, started: false, io: Vec::new() }
    }

    /// Call the plugins' `start` once, before the first instruction they see.
    pub(crate) fn ensure_started(&mut self, cpu: &Cpu, ram: &GuestRam) -> Result<(), String> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let v = cpu.observer_view();
        self.set.start(ProgramPoint { icount: cpu.icount(), pc: cpu.pc() }, &v, ram)
    }

    /// Run the CPU up to `stop_at` (earlier if a plugin wants to be woken), reporting to the
    /// plugins; then deliver port/MMIO events and due wake-ups.
    pub(crate) fn run<P: Platform + ?Sized>(
        &mut self,
        cpu: &mut Cpu,
        ram: &mut GuestRam,
        p: &mut P,
        stop_at: u64,
    ) -> RunExit {
        self.wake_due(cpu, ram);
        // Plugins may want more or less from slice to slice (Plugin::hooks).
        self.set.refresh_hooks();
        let stop_at = match self.set.wake_at() {
            Some(w) => stop_at.min(w.max(cpu.icount() + 1)),
            None => stop_at,
        };
        let exit = if self.set.wanted() & (machine_hook::PORT_IO | machine_hook::MMIO) != 0 {
            let mut tee = Tee { inner: p, events: &mut self.io };
            cpu.run_observed(ram, &mut tee, stop_at, &mut self.set)
        } else {
            cpu.run_observed(ram, p, stop_at, &mut self.set)
        };
        for e in self.io.drain(..) {
            match e {
                IoEvent::Port { at, port, size, value, write } => self.set.port_io(at, port, size, value, write),
                IoEvent::Mmio { at, addr, size, value, write } => self.set.mmio(at, addr, size, value, write),
            }
        }
        self.wake_due(cpu, ram);
        exit
    }

    fn wake_due(&mut self, cpu: &Cpu, ram: &GuestRam) {
        if self.set.wake_at().is_some_and(|w| w <= cpu.icount()) {
            let v = cpu.observer_view();
            self.set.wake(&v, ram);
        }
    }

    /// DMA applied to RAM by the machine.
    pub(crate) fn dma(&mut self, cpu: &Cpu, ram: &GuestRam, addr: u64, data: &[u8]) {
        let v = cpu.observer_view();
        self.set.dma(ProgramPoint { icount: cpu.icount(), pc: cpu.pc() }, &v, ram, addr, data);
    }

    /// A stop or error requested by a plugin, if any.
    pub(crate) fn take_stop(&mut self) -> Option<Result<String, String>> {
        if let Some(e) = self.set.control.error.take() {
            return Some(Err(e));
        }
        self.set.control.stop.take().map(Ok)
    }

    /// The run ended: plugins finish; returns their summaries.
    pub(crate) fn finish(&mut self, cpu: &Cpu, ram: &GuestRam) -> Result<Vec<String>, String> {
        if !self.started {
            return Ok(Vec::new());
        }
        let v = cpu.observer_view();
        self.set.finish(ProgramPoint { icount: cpu.icount(), pc: cpu.pc() }, &v, ram)
    }
}
