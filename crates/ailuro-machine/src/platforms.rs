//! The three implementations of the CPU's [`Platform`] seam: live, recording and replaying.

use std::collections::VecDeque;

use ailuro_bus::{Platform, ProgramPoint};
use ailuro_pc::PcBoard;
use ailuro_rr::{Event, LogEntry, LogWriter};

use crate::clock::VirtualClock;
use crate::tap::ConsoleTap;

/// Per-kind counters of logged or replayed events (index = kind byte of the log format).
#[derive(Clone, Debug, Default)]
pub struct EventStats {
    /// Number of events per kind.
    pub count: [u64; 16],
    /// Encoded payload bytes per kind (approximate uncompressed size).
    pub bytes: [u64; 16],
}

impl EventStats {
    /// Account one event.
    pub fn add(&mut self, e: &Event) {
        let k = (e.kind() as usize).min(15);
        self.count[k] += 1;
        self.bytes[k] += approx_encoded_len(e);
    }
}

/// Rough uncompressed size of an entry in the log (icount delta + kind + fields), for statistics.
fn approx_encoded_len(e: &Event) -> u64 {
    2 + match e {
        Event::IoRead { .. } => 4,
        Event::MmioRead { .. } => 8,
        Event::Timestamp { .. } => 5,
        Event::InterruptAck { .. } => 1,
        Event::IrqLine { .. } => 2,
        Event::Dma { data, .. } => 6 + data.len() as u64,
        Event::Checkpoint { .. } => 21,
        Event::Reset => 0,
        Event::HostEvent { data, .. } => 4 + data.len() as u64,
        Event::Clock { .. } => 6,
    }
}

/// The recording side of a live run: the log being written and its bookkeeping.
pub struct Recorder {
    /// The open log.
    pub writer: LogWriter,
    /// Recording name (path prefix).
    pub name: std::path::PathBuf,
    /// Instruction count at `begin_record`.
    pub start_icount: u64,
    /// Instruction count of the next periodic checkpoint.
    pub next_checkpoint: u64,
    /// What has been logged so far.
    pub stats: EventStats,
    /// First error writing the log; the run loop stops the recording when it sees one.
    pub error: Option<ailuro_rr::RecordingError>,
    /// Host time of the last flush: pending entries reach the file at least every second, so a
    /// killed recording loses at most that much (host time never reaches the guest from here).
    pub last_flush: std::time::Instant,
}

impl Recorder {
    /// Append one entry (errors are kept and reported by the run loop).
    #[inline]
    pub fn log(&mut self, icount: u64, event: Event) {
        if self.error.is_some() {
            return;
        }
        self.stats.add(&event);
        if let Err(e) = self.writer.append(&LogEntry { icount, event }) {
            self.error = Some(e);
        }
    }
}

/// Live platform: the board, on the virtual clock, optionally recording every inward crossing.
pub struct LivePlatform<'a> {
    /// The devices.
    pub board: &'a mut PcBoard,
    /// Virtual time.
    pub clock: &'a VirtualClock,
    /// Present while recording.
    pub recorder: Option<&'a mut Recorder>,
    /// Follows UART writes so the console can be reconstructed (kept in sync in live runs so a
    /// snapshot taken at any point carries it).
    pub tap: &'a mut ConsoleTap,
}

impl LivePlatform<'_> {
    #[inline]
    fn sync(&mut self, at: ProgramPoint) {
        self.board.advance_to(self.clock.now(at.icount));
    }

    #[inline]
    fn log(&mut self, at: ProgramPoint, event: Event) {
        if let Some(r) = self.recorder.as_deref_mut() {
            r.log(at.icount, event);
        }
    }
}

impl Platform for LivePlatform<'_> {
    fn io_read(&mut self, at: ProgramPoint, port: u16, size: u8) -> u32 {
        self.sync(at);
        let value = self.board.io_read(port, size);
        self.log(at, Event::IoRead { port, size, value });
        value
    }

    fn io_write(&mut self, at: ProgramPoint, port: u16, size: u8, value: u32) {
        self.sync(at);
        self.tap.observe_io_write(port, size, value);
        self.board.io_write(port, size, value);
    }

    fn mmio_read(&mut self, at: ProgramPoint, addr: u64, size: u8) -> u64 {
        self.sync(at);
        let value = self.board.mmio_read(addr, size);
        self.log(at, Event::MmioRead { addr, size, value });
        value
    }

    fn mmio_write(&mut self, at: ProgramPoint, addr: u64, size: u8, value: u64) {
        self.sync(at);
        self.board.mmio_write(addr, size, value);
    }

    fn read_timestamp(&mut self, at: ProgramPoint) -> u64 {
        // TSC at 1 GHz: one tick per virtual nanosecond. Not logged: the replay keeps the same
        // virtual clock (its skips are logged as `Clock` entries), see docs/FORMATS.md version 2.
        self.clock.now(at.icount)
    }

    fn interrupt_ack(&mut self, at: ProgramPoint) -> u32 {
        self.sync(at);
        let vector = self.board.interrupt_ack() as u32;
        self.log(at, Event::InterruptAck { vector });
        vector
    }
}

/// A replay that stopped because the execution no longer fits the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Instruction count where it was detected.
    pub icount: u64,
    /// Program counter there.
    pub pc: u64,
    /// What the log said should happen.
    pub expected: String,
    /// What the replayed execution did instead.
    pub found: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replay diverged at instruction {} (pc {:#x}): expected {}, found {}",
            self.icount, self.pc, self.expected, self.found
        )
    }
}

/// Describe a log entry for divergence reports.
pub fn describe(e: &LogEntry) -> String {
    let what = match &e.event {
        Event::IoRead { port, size, value } => format!("a {size}-byte read of port {port:#x} (value {value:#x})"),
        Event::MmioRead { addr, size, value } => format!("a {size}-byte MMIO read of {addr:#x} (value {value:#x})"),
        Event::Timestamp { value } => format!("a time-stamp read (value {value})"),
        Event::InterruptAck { vector } => format!("an interrupt acknowledge (vector {vector:#x})"),
        Event::IrqLine { line, level } => format!("interrupt line {line} set to {}", u8::from(*level)),
        Event::Dma { addr, data } => format!("DMA of {} bytes to {addr:#x}", data.len()),
        Event::Checkpoint { pc, .. } => format!("a checkpoint at pc {pc:#x}"),
        Event::Reset => "a machine reset".to_string(),
        Event::HostEvent { code, .. } => format!("host event {code}"),
        Event::Clock { now_ns } => format!("a virtual-clock skip to {now_ns} ns"),
    };
    format!("{what} at instruction {}", e.icount)
}

/// The synchronous entries the replayed CPU will ask for before the next asynchronous entry.
#[derive(Default)]
pub struct SyncQueue {
    /// Pending synchronous entries, in log order.
    pub entries: VecDeque<LogEntry>,
    /// First divergence seen by the platform.
    pub divergence: Option<Divergence>,
    /// What the replayed CPU consumed.
    pub stats: EventStats,
}

/// Replay platform: no devices; every value comes from the log.
pub struct ReplayPlatform<'a> {
    /// Entries to hand out.
    pub queue: &'a mut SyncQueue,
    /// Console reconstruction.
    pub tap: &'a mut ConsoleTap,
    /// Reconstructed console bytes not yet shown.
    pub console: &'a mut Vec<u8>,
    /// A recording being cut from this replay (`scissors`): consumed entries are written again.
    pub relog: Option<&'a mut Recorder>,
    /// The virtual clock time-stamp reads come from (log version 2); `None` for version-1 logs,
    /// whose `Timestamp` entries carry the values.
    pub clock: Option<&'a VirtualClock>,
    /// The recorded board's isa-debugcon port, if it had one: writes there are its output.
    pub debugcon: Option<u16>,
    /// Reconstructed isa-debugcon bytes not yet shown.
    pub debug_out: &'a mut Vec<u8>,
}

impl ReplayPlatform<'_> {
    /// Take the next synchronous entry if it is the one `matches` accepts at `at`; otherwise record
    /// a divergence (the first one wins) and return `None`.
    #[inline]
    fn take(
        &mut self,
        at: ProgramPoint,
        found: impl FnOnce() -> String,
        matches: impl FnOnce(&Event) -> bool,
    ) -> Option<Event> {
        if self.queue.divergence.is_some() {
            return None;
        }
        match self.queue.entries.front() {
            Some(e) if e.icount == at.icount && matches(&e.event) => {
                let e = self.queue.entries.pop_front().expect("front exists");
                self.queue.stats.add(&e.event);
                if let Some(r) = self.relog.as_deref_mut() {
                    r.log(e.icount, e.event.clone());
                }
                Some(e.event)
            }
            other => {
                let expected = match other {
                    Some(e) => describe(e),
                    None => "no synchronous input before the next asynchronous event".to_string(),
                };
                self.queue.divergence = Some(Divergence { icount: at.icount, pc: at.pc, expected, found: found() });
                None
            }
        }
    }
}

impl Platform for ReplayPlatform<'_> {
    fn io_read(&mut self, at: ProgramPoint, port: u16, size: u8) -> u32 {
        match self.take(
            at,
            || format!("a {size}-byte read of port {port:#x}"),
            |e| matches!(e, Event::IoRead { port: p, size: s, .. } if *p == port && *s == size),
        ) {
            Some(Event::IoRead { value, .. }) => value,
            _ => 0,
        }
    }

    fn io_write(&mut self, _at: ProgramPoint, port: u16, size: u8, value: u32) {
        if let Some(b) = self.tap.observe_io_write(port, size, value) {
            self.console.push(b);
        }
        if let Some(dc) = self.debugcon {
            // The board splits a wide write into byte writes to consecutive ports; the one that
            // lands on the debugcon port is output.
            let k = dc.wrapping_sub(port);
            if k < u16::from(size.clamp(1, 4)) {
                self.debug_out.push((value >> (8 * k)) as u8);
            }
        }
    }

    fn mmio_read(&mut self, at: ProgramPoint, addr: u64, size: u8) -> u64 {
        match self.take(
            at,
            || format!("a {size}-byte MMIO read of {addr:#x}"),
            |e| matches!(e, Event::MmioRead { addr: a, size: s, .. } if *a == addr && *s == size),
        ) {
            Some(Event::MmioRead { value, .. }) => value,
            _ => 0,
        }
    }

    fn mmio_write(&mut self, _at: ProgramPoint, _addr: u64, _size: u8, _value: u64) {}

    fn read_timestamp(&mut self, at: ProgramPoint) -> u64 {
        if let Some(c) = self.clock {
            return c.now(at.icount);
        }
        match self.take(at, || "a time-stamp read".to_string(), |e| matches!(e, Event::Timestamp { .. })) {
            Some(Event::Timestamp { value }) => value,
            _ => 0,
        }
    }

    fn interrupt_ack(&mut self, at: ProgramPoint) -> u32 {
        match self.take(at, || "an interrupt acknowledge".to_string(), |e| matches!(e, Event::InterruptAck { .. })) {
            Some(Event::InterruptAck { vector }) => vector,
            _ => 0,
        }
    }
}
