//! The Ailuro PC board: the devices of an i440FX/PIIX3-era PC as the CPU sees them through port I/O,
//! MMIO and the INTR pin.
//!
//! The board owns no notion of host time: [`PcBoard::advance_to`] moves its virtual clock forward and
//! [`PcBoard::next_deadline_ns`] says when a device next changes state by itself. It knows nothing of
//! record/replay or of the CPU; every piece of state is serialisable and [`PcBoard::save_state`]
//! captures all of it.
//!
//! Interrupt wiring follows QEMU's `pc` machine: each ISA IRQ goes both to the 8259 pair and to the
//! IOAPIC (IRQ0 on pin 2, the others identity-mapped). The 8259 output reaches the CPU through the
//! local APIC's LINT0 when that is programmed for ExtINT, or directly while the local APIC is
//! software-disabled (the state after reset).

#![forbid(unsafe_code)]

mod acpi_pm;
pub mod firmware;
pub mod fw_cfg;
mod i8042;
mod ioapic;
mod lapic;
mod pci;
mod pic;
mod pit;
mod rtc;
pub mod testdev;
mod uart;

use acpi_pm::{AcpiPm, PmAction};
pub use firmware::{FirmwareError, FirmwareImage};
use fw_cfg::{FwCfg, FW_CFG_PORT_DATA, FW_CFG_PORT_SEL};
use i8042::I8042;
use ioapic::{IoApic, IOAPIC_BASE};
use lapic::{Lapic, LAPIC_BASE};
use pci::PciHost;
use pic::DualPic;
use pit::Pit;
use rtc::Rtc;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use testdev::PcTestdev;
use uart::Uart;

/// Board configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcConfig {
    /// Guest RAM size in bytes (reported through the CMOS memory-size bytes).
    pub ram_size: u64,
    /// Wall-clock time of the RTC at virtual time 0, in seconds since the Unix epoch.
    pub rtc_base_unix: i64,
}

/// What the board shows the guest beyond [`PcConfig`]: firmware data and optional devices.
///
/// Not part of `PcConfig` because `PcConfig` is inside the saved board layout of earlier
/// versions; these take effect through the device state they create, which is saved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcDevices {
    /// Command line offered through fw_cfg (`FW_CFG_CMDLINE_*`): the `-append` text.
    pub cmdline: String,
    /// QEMU's `-device pc-testdev` (ports 0xe0–0xeb, 0x2000–0x2017, MMIO 0xff000000).
    pub pc_testdev: bool,
    /// System firmware (`-bios FILE`): mapped at the top of the 4 GiB space, read-only. (Its
    /// ISA alias below 1 MiB is RAM the machine fills; see [`FirmwareImage::isa_alias`].)
    pub bios: Option<FirmwareImage>,
    /// QEMU's isa-debugcon (`-debugcon`) at this port (QEMU's default 0xe9; SeaBIOS writes its
    /// log to 0x402).
    pub debugcon: Option<u16>,
}

/// QEMU's isa-debugcon: bytes written to its port are the firmware's debug log; a read returns
/// a fixed value so that software can tell the port is there (SeaBIOS checks for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugCon {
    /// The I/O port.
    pub port: u16,
    /// What a read returns (QEMU's `readback` property, 0xe9 by default).
    pub readback: u8,
}

/// QEMU's default isa-debugcon port and read-back value.
pub const DEBUGCON_DEFAULT_PORT: u16 = 0xe9;

/// Something a device asks of the machine, collected with [`PcBoard::take_requests`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoardRequest {
    /// isa-debug-exit: the guest wrote `v` to port 0xf4; the process should exit with `(v << 1) | 1`.
    DebugExit(i32),
    /// System reset (i8042 reset line, port 0xcf9).
    Reset,
    /// Power off.
    PowerOff,
}

/// Why [`PcBoard::load_state`] rejected a state blob.
#[derive(Debug, thiserror::Error)]
pub enum BoardStateError {
    /// The blob could not be decoded (truncated or malformed).
    #[error("malformed PC board state: {0}")]
    Malformed(String),
    /// The blob was written by an incompatible version of the board.
    #[error("unsupported PC board state version {found} (expected {expected})")]
    Version {
        /// Version found in the blob.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The blob decoded but describes an impossible device state.
    #[error("inconsistent PC board state: {0}")]
    Inconsistent(&'static str),
}

/// Version of the `save_state` layout.
// 3: the local APIC latches NMI IPIs.
// 4: fw_cfg and the optional pc-testdev follow the board (version 3 blobs still load: their
//    board had neither device, and keeps having neither).
// 5: the firmware ROM (`-bios`) and isa-debugcon follow them (version 4 and 3 blobs load without
//    either).
const STATE_VERSION: u32 = 5;
/// Earlier layouts, still accepted by [`PcBoard::load_state`].
const STATE_VERSION_V4: u32 = 4;
const STATE_VERSION_V3: u32 = 3;
const COM1_BASE: u16 = 0x3f8;
const COM1_IRQ: u8 = 4;
const RTC_IRQ: u8 = 8;
/// ACPI SCI (level triggered; the FADT and MADT say so).
const SCI_IRQ: u8 = 9;
/// ACPI PM register block (PM1a_EVT, PM1a_CNT, PM_TMR), as QEMU's PIIX4 PM.
const PM_BASE: u16 = 0x600;
const PM_LEN: u16 = 12;
const KBD_IRQ: u8 = 1;
const AUX_IRQ: u8 = 12;
/// isa-debug-exit port (QEMU's default iobase).
const DEBUG_EXIT_PORT: u16 = 0xf4;
const APIC_WINDOW: u64 = 0x1000;

/// The PC board and all of its devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcBoard {
    cfg: PcConfig,
    /// Current virtual time.
    now_ns: u64,
    pic: DualPic,
    pit: Pit,
    rtc: Rtc,
    com1: Uart,
    kbc: I8042,
    lapic: Lapic,
    ioapic: IoApic,
    pci: PciHost,
    pm: AcpiPm,
    /// Host input for COM1 not yet taken by the receiver.
    com1_input: VecDeque<u8>,
    /// COM1 output not yet collected.
    serial_out: Vec<u8>,
    requests: Vec<BoardRequest>,
    /// Last level driven on each ISA IRQ line.
    isa_levels: u16,
    /// Last level of the 8259 pair's INT output (for LINT0 in fixed delivery mode).
    pic_out: bool,
    /// System control port A (0x92): bit 1 is the fast A20 gate (stored only).
    port92: u8,
    /// QEMU's fw_cfg (ports 0x510/0x511). `None` only on a board restored from a version 3
    /// state, which predates it. Saved after the board (see [`SavedRef`]), so skipped here.
    #[serde(skip)]
    fw_cfg: Option<FwCfg>,
    /// pc-testdev, only when asked for. Saved after the board, like `fw_cfg`.
    #[serde(skip)]
    testdev: Option<Box<PcTestdev>>,
    /// The firmware ROM at the top of 4 GiB (`-bios`). Saved after the board (version 5), so a
    /// replay or a reset needs no file.
    #[serde(skip)]
    bios: Option<Box<FirmwareImage>>,
    /// isa-debugcon, only when asked for. Saved after the board (version 5).
    #[serde(skip)]
    debugcon: Option<DebugCon>,
    /// isa-debugcon output not yet collected (transient: taken after every slice).
    #[serde(skip)]
    debug_out: Vec<u8>,
}

/// Saved form: a version tag in front of the board, then the devices added in version 4 (kept
/// out of the board's own layout so a version 3 blob still decodes as a board).
#[derive(Serialize)]
struct SavedRef<'a> {
    version: u32,
    board: &'a PcBoard,
    fw_cfg: &'a Option<FwCfg>,
    testdev: &'a Option<Box<PcTestdev>>,
    bios: &'a Option<Box<FirmwareImage>>,
    debugcon: &'a Option<DebugCon>,
}

#[derive(Deserialize)]
struct SavedVersion {
    version: u32,
}

#[derive(Deserialize)]
struct Saved {
    #[allow(dead_code)]
    version: u32,
    board: PcBoard,
    fw_cfg: Option<FwCfg>,
    testdev: Option<Box<PcTestdev>>,
    bios: Option<Box<FirmwareImage>>,
    debugcon: Option<DebugCon>,
}

/// Version 4 layout: fw_cfg and pc-testdev after the board.
#[derive(Deserialize)]
struct SavedV4 {
    #[allow(dead_code)]
    version: u32,
    board: PcBoard,
    fw_cfg: Option<FwCfg>,
    testdev: Option<Box<PcTestdev>>,
}

/// Version 3 layout: the board alone.
#[derive(Deserialize)]
struct SavedV3 {
    #[allow(dead_code)]
    version: u32,
    board: PcBoard,
}

impl PcBoard {
    /// A board in its power-on state at virtual time 0, with fw_cfg (empty command line) and no
    /// optional devices.
    pub fn new(cfg: PcConfig) -> PcBoard {
        PcBoard::with_devices(cfg, &PcDevices::default())
    }

    /// A board in its power-on state at virtual time 0, with fw_cfg offering `devices.cmdline` and
    /// the optional devices `devices` asks for.
    pub fn with_devices(cfg: PcConfig, devices: &PcDevices) -> PcBoard {
        let mut b = PcBoard {
            fw_cfg: Some(FwCfg::new(cfg.ram_size, &devices.cmdline)),
            testdev: devices.pc_testdev.then(|| Box::new(PcTestdev::new())),
            bios: devices.bios.clone().map(Box::new),
            debugcon: devices.debugcon.map(|port| DebugCon { port, readback: 0xe9 }),
            debug_out: Vec::new(),
            rtc: Rtc::new(cfg.rtc_base_unix, cfg.ram_size),
            cfg,
            now_ns: 0,
            pic: DualPic::new(),
            pit: Pit::new(),
            com1: Uart::new(),
            kbc: I8042::new(),
            lapic: Lapic::new(),
            ioapic: IoApic::new(),
            pci: PciHost::new(),
            pm: AcpiPm::new(),
            com1_input: VecDeque::new(),
            serial_out: Vec::new(),
            requests: Vec::new(),
            isa_levels: 0,
            pic_out: false,
            port92: 0x02,
        };
        // Take the lines' power-on levels (PIT OUT0 is high) without treating them as edges.
        b.update_irqs();
        b.pic.clear_requests();
        b
    }

    /// Move virtual time forward to `now_ns` (a smaller value is ignored) and fire everything due.
    pub fn advance_to(&mut self, now_ns: u64) {
        if now_ns <= self.now_ns {
            return;
        }
        let prev = self.now_ns;
        self.now_ns = now_ns;
        // PIT channel 0: an OUT rising edge in (prev, now] is a request on IRQ0 even if OUT has
        // already fallen again (mode 2 pulses, long mode 3 gaps).
        if self.pit.channels[0].rose_between(prev, now_ns) {
            self.set_isa_irq(0, false);
            self.set_isa_irq(0, true);
        }
        self.com1.advance(now_ns);
        self.rtc.advance(now_ns);
        self.lapic.advance(now_ns);
        self.pm.advance(now_ns);
        self.update_irqs();
    }

    /// The earliest virtual time after now at which a device changes state by itself in a way the
    /// CPU could observe through an interrupt: PIT channel 0 edges, RTC interrupts, the local APIC
    /// timer, the UART character timeout.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let now = self.now_ns;
        [
            self.pit.next_irq0_ns(now),
            self.com1.next_deadline(),
            self.rtc.next_deadline(now),
            self.lapic.next_deadline(),
            self.pm.next_deadline(now),
        ]
        .into_iter()
        .flatten()
        .map(|t| t.max(now.saturating_add(1)))
        .min()
    }

    /// Port input. Unmapped ports read as all ones of the access size.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let size = normalise_io_size(size);
        // fw_cfg's port pair reads one data byte whatever the access (QEMU's "comb" region only
        // accepts byte reads; a wider one is treated as one here rather than as several).
        if (port == FW_CFG_PORT_SEL || port == FW_CFG_PORT_DATA) && self.fw_cfg.is_some() {
            return self.fw_cfg.as_mut().map_or(0, |f| f.read_data() as u32);
        }
        let v = match self.pci.io_read(port, size) {
            Some(v) => v,
            None => {
                // Byte devices: split wider accesses into consecutive byte reads, as QEMU does.
                let mut v = 0u32;
                for i in 0..size {
                    v |= (self.io_read8(port.wrapping_add(i as u16)) as u32) << (8 * i);
                }
                v
            }
        };
        self.update_irqs();
        v & size_mask(size)
    }

    /// Port output.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        let size = normalise_io_size(size);
        let value = value & size_mask(size);
        if port == DEBUG_EXIT_PORT {
            // isa-debug-exit takes the whole value of a write of any size.
            self.requests.push(BoardRequest::DebugExit(((value << 1) | 1) as i32));
        } else if port == FW_CFG_PORT_SEL && size == 2 && self.fw_cfg.is_some() {
            // Only a 16-bit write selects; byte writes would go to the (read-only) data register.
            if let Some(f) = self.fw_cfg.as_mut() {
                f.select(value as u16);
            }
        } else {
            match self.pci.io_write(port, size, value) {
                Some(true) => self.requests.push(BoardRequest::Reset),
                Some(false) => {}
                None => {
                    for i in 0..size {
                        self.io_write8(port.wrapping_add(i as u16), (value >> (8 * i)) as u8);
                    }
                }
            }
        }
        self.update_irqs();
    }

    fn io_read8(&mut self, port: u16) -> u8 {
        let now = self.now_ns;
        if let Some(d) = self.debugcon.as_ref().filter(|d| d.port == port) {
            return d.readback;
        }
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => self.pic.io_read(port),
            0x40..=0x43 => self.pit.read(port, now),
            0x60 => {
                // Reading the data port empties the output buffer and drops IRQ1/IRQ12 before the
                // next queued byte (if any) refills it, so each byte is a new edge (as in QEMU).
                for irq in [KBD_IRQ, AUX_IRQ] {
                    if self.isa_levels & (1 << irq) != 0 {
                        self.set_isa_irq(irq, false);
                    }
                }
                self.kbc.read(port)
            }
            0x64 => self.kbc.read(port),
            0x61 => self.pit.read_port61(now),
            0x70 | 0x71 => self.rtc.io_read(port, now),
            0x80 => 0xff,
            0x92 => self.port92,
            p if PcTestdev::claims_read(p) && self.testdev.is_some() => {
                self.testdev.as_ref().map_or(0xff, |t| t.read8(p))
            }
            p if (PM_BASE..PM_BASE + PM_LEN).contains(&p) => self.pm.read8(p - PM_BASE, now),
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                let v = self.com1.read(p - COM1_BASE, now);
                if self.com1.rx_room() > 0 && !self.com1_input.is_empty() {
                    // Let IRQ4 fall before more host input arrives, so the next byte raises a new
                    // edge (QEMU delivers it later from its main loop; a guest that reads one byte
                    // per interrupt must not hang on an edge-triggered 8259).
                    self.update_irqs();
                }
                self.feed_com1();
                v
            }
            _ => 0xff,
        }
    }

    fn io_write8(&mut self, port: u16, v: u8) {
        let now = self.now_ns;
        if self.debugcon.as_ref().is_some_and(|d| d.port == port) {
            self.debug_out.push(v);
            return;
        }
        match port {
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => self.pic.io_write(port, v),
            0x40..=0x43 => self.pit.write(port, v, now),
            0x60 | 0x64 => {
                self.kbc.write(port, v);
                if self.kbc.take_reset() {
                    self.requests.push(BoardRequest::Reset);
                }
            }
            0x61 => self.pit.write_port61(v, now),
            0x70 | 0x71 => self.rtc.io_write(port, v, now),
            0x92 => {
                // Bit 0 is a fast reset (edge 0 -> 1 in hardware; the bit reads back as 0).
                if v & 1 != 0 {
                    self.requests.push(BoardRequest::Reset);
                }
                self.port92 = v & 0x02;
            }
            p if (PM_BASE..PM_BASE + PM_LEN).contains(&p)
                && self.pm.write8(p - PM_BASE, v, now) == PmAction::PowerOff =>
            {
                self.requests.push(BoardRequest::PowerOff)
            }
            p if (PM_BASE..PM_BASE + PM_LEN).contains(&p) => {}
            p if (COM1_BASE..COM1_BASE + 8).contains(&p) => {
                self.com1.write(p - COM1_BASE, v, now);
                self.serial_out.extend(self.com1.take_output());
                self.feed_com1();
            }
            p if PcTestdev::claims_write(p) => {
                if let Some(t) = self.testdev.as_mut() {
                    t.write8(p, v);
                }
            }
            _ => {}
        }
    }

    /// MMIO load. Addresses no device claims read as all ones.
    pub fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        if PcTestdev::claims_mmio(addr) {
            if let Some(t) = &self.testdev {
                return t.mmio_read(addr, size) & size_mask64(size);
            }
        }
        if let Some(rom) = self.bios.as_ref().filter(|r| r.claims(addr, size)) {
            return rom.read(addr, size) & size_mask64(size);
        }
        let now = self.now_ns;
        let dword = |b: &PcBoard, off: u64| -> u32 {
            if in_window(addr, LAPIC_BASE) {
                b.lapic.read(off, now)
            } else {
                b.ioapic.read(off)
            }
        };
        let base = if in_window(addr, LAPIC_BASE) {
            LAPIC_BASE
        } else if in_window(addr, IOAPIC_BASE) {
            IOAPIC_BASE
        } else {
            return size_mask64(size);
        };
        // 32-bit registers: narrower reads take bytes of the containing dword, an 8-byte read
        // combines two dwords.
        let off = addr - base;
        let aligned = off & !3;
        let lo = dword(self, aligned) as u64;
        let v = if size == 8 { lo | (dword(self, aligned + 4) as u64) << 32 } else { lo >> ((off & 3) * 8) };
        v & size_mask64(size)
    }

    /// MMIO store. Addresses no device claims ignore writes.
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        if PcTestdev::claims_mmio(addr) {
            if let Some(t) = self.testdev.as_mut() {
                t.mmio_write(addr, size, value);
                return;
            }
        }
        if self.bios.as_ref().is_some_and(|r| r.claims(addr, size)) {
            // ROM: stores are dropped (QEMU maps "pc.bios" read-only).
            return;
        }
        let now = self.now_ns;
        // The APICs only take naturally aligned 32-bit (or wider) stores.
        if size < 4 || addr & 3 != 0 {
            return;
        }
        if in_window(addr, LAPIC_BASE) {
            if let Some(v) = self.lapic.write(addr - LAPIC_BASE, value as u32, now) {
                self.ioapic.eoi(v, &mut self.lapic);
            }
        } else if in_window(addr, IOAPIC_BASE) {
            self.ioapic.write(addr - IOAPIC_BASE, value as u32, &mut self.lapic);
        }
        self.update_irqs();
    }

    /// Does the 8259 pair's INT output reach the CPU? Through LINT0 as ExtINT (virtual wire), or
    /// directly while the local APIC is software-disabled.
    fn pic_reaches_cpu(&self) -> bool {
        !self.lapic.enabled() || self.lapic.extint_open()
    }

    /// Level of the CPU's INTR pin.
    pub fn intr_level(&self) -> bool {
        self.lapic.has_interrupt() || (self.pic_reaches_cpu() && self.pic.output())
    }

    /// The CPU takes an external interrupt: returns its vector. An APIC interrupt moves from IRR
    /// to ISR; the 8259 gets its INTA cycle; with nothing pending the answer is the local APIC's
    /// spurious vector, or the 8259's spurious IRQ7 vector when the 8259 is wired to INTR.
    pub fn interrupt_ack(&mut self) -> u8 {
        let v = if self.lapic.has_interrupt() {
            self.lapic.acknowledge()
        } else if self.pic_reaches_cpu() {
            self.pic.acknowledge()
        } else {
            self.lapic.acknowledge()
        };
        self.update_irqs();
        v
    }

    /// Host input for COM1; queued on the board and fed into the receive FIFO as it has room.
    pub fn serial_input(&mut self, bytes: &[u8]) {
        self.com1_input.extend(bytes);
        self.feed_com1();
        self.update_irqs();
    }

    /// COM1 output transmitted since the last call.
    pub fn take_serial_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.serial_out)
    }

    /// isa-debugcon output written since the last call (empty without the device).
    pub fn take_debugcon_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.debug_out)
    }

    /// The isa-debugcon device, if the board has one (a replay reconstructs its output from the
    /// guest's port writes).
    pub fn debugcon(&self) -> Option<&DebugCon> {
        self.debugcon.as_ref()
    }

    /// The firmware ROM, if the board has one (`-bios`).
    pub fn firmware(&self) -> Option<&FirmwareImage> {
        self.bios.as_deref()
    }

    /// Whether an NMI was requested since the last call (today: an NMI IPI through the local
    /// APIC's ICR, to self or to all including self). The run loop passes it on to the CPU
    /// (`Cpu::raise_nmi`) between instructions and records it like an interrupt-pin change.
    /// Edge semantics: several NMIs between two calls are one NMI.
    pub fn take_nmi(&mut self) -> bool {
        self.lapic.take_nmi()
    }

    /// Requests (exit, reset, power-off) raised since the last call, oldest first.
    pub fn take_requests(&mut self) -> Vec<BoardRequest> {
        std::mem::take(&mut self.requests)
    }

    /// The whole board state as bytes (postcard, with a version tag).
    pub fn save_state(&self) -> Vec<u8> {
        postcard::to_stdvec(&SavedRef {
            version: STATE_VERSION,
            board: self,
            fw_cfg: &self.fw_cfg,
            testdev: &self.testdev,
            bios: &self.bios,
            debugcon: &self.debugcon,
        })
        .expect("serialising plain data into a Vec cannot fail")
    }

    /// Rebuild a board from [`PcBoard::save_state`] bytes.
    pub fn load_state(bytes: &[u8]) -> Result<PcBoard, BoardStateError> {
        let (v, _) =
            postcard::take_from_bytes::<SavedVersion>(bytes).map_err(|e| BoardStateError::Malformed(e.to_string()))?;
        let malformed = |e: postcard::Error| BoardStateError::Malformed(e.to_string());
        let (b, rest) = match v.version {
            STATE_VERSION => {
                let (saved, rest) = postcard::take_from_bytes::<Saved>(bytes).map_err(malformed)?;
                let mut b = saved.board;
                b.fw_cfg = saved.fw_cfg;
                b.testdev = saved.testdev;
                b.bios = saved.bios;
                b.debugcon = saved.debugcon;
                (b, rest)
            }
            // Before -bios and isa-debugcon: a board without them.
            STATE_VERSION_V4 => {
                let (saved, rest) = postcard::take_from_bytes::<SavedV4>(bytes).map_err(malformed)?;
                let mut b = saved.board;
                b.fw_cfg = saved.fw_cfg;
                b.testdev = saved.testdev;
                (b, rest)
            }
            // A board from before fw_cfg: restore it as it was, without the new devices, so the
            // guest keeps seeing the machine it was recorded on.
            STATE_VERSION_V3 => {
                let (saved, rest) = postcard::take_from_bytes::<SavedV3>(bytes).map_err(malformed)?;
                (saved.board, rest)
            }
            found => return Err(BoardStateError::Version { found, expected: STATE_VERSION }),
        };
        if !rest.is_empty() {
            return Err(BoardStateError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        b.validate()?;
        Ok(b)
    }

    fn validate(&self) -> Result<(), BoardStateError> {
        let checks: [(bool, &'static str); 12] = [
            (self.pic.valid(), "8259 state out of range"),
            (self.pit.valid(), "8254 state out of range"),
            (self.rtc.valid(), "CMOS state out of range"),
            (self.com1.valid(), "COM1 state out of range"),
            (self.kbc.valid(), "i8042 queues overfull"),
            (self.lapic.valid(), "local APIC state out of range"),
            (self.ioapic.valid(), "IOAPIC redirection table has the wrong size"),
            (self.pci.valid(), "PCI configuration space has the wrong size"),
            (self.pm.valid(), "ACPI PM state out of range"),
            (self.fw_cfg.as_ref().is_none_or(|f| f.valid()), "fw_cfg read position out of range"),
            (self.testdev.as_ref().is_none_or(|t| t.valid()), "pc-testdev memory has the wrong size"),
            (self.bios.as_ref().is_none_or(|r| r.valid()), "firmware ROM has an impossible size"),
        ];
        match checks.into_iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(BoardStateError::Inconsistent(what)),
            None => Ok(()),
        }
    }

    /// Move queued host input into the COM1 receiver while it has room.
    fn feed_com1(&mut self) {
        while self.com1.rx_room() > 0 {
            match self.com1_input.pop_front() {
                Some(b) => self.com1.receive(b, self.now_ns),
                None => break,
            }
        }
    }

    /// Drive one ISA IRQ line into both the 8259 pair and the IOAPIC (IRQ0 on pin 2).
    fn set_isa_irq(&mut self, irq: u8, level: bool) {
        self.pic.set_irq(irq, level);
        let pin = if irq == 0 { 2 } else { irq as usize };
        self.ioapic.set_pin(pin, level, &mut self.lapic);
        if level {
            self.isa_levels |= 1 << irq;
        } else {
            self.isa_levels &= !(1 << irq);
        }
    }

    /// Recompute every device's IRQ output and propagate changes.
    fn update_irqs(&mut self) {
        let now = self.now_ns;
        let lines = [
            (0u8, self.pit.out0(now)),
            (KBD_IRQ, self.kbc.irq1()),
            (COM1_IRQ, self.com1.irq()),
            (RTC_IRQ, self.rtc.irq()),
            (AUX_IRQ, self.kbc.irq12()),
            (SCI_IRQ, self.pm.sci()),
        ];
        // pc-testdev may drive any line; a shared line is high while either source holds it.
        let testdev = self.testdev.as_ref().map_or(0u16, |t| t.irq_levels());
        let mut driven = 0u16;
        for (irq, level) in lines {
            driven |= 1 << irq;
            let level = level || testdev & (1 << irq) != 0;
            let cur = self.isa_levels & (1 << irq) != 0;
            if cur != level {
                self.set_isa_irq(irq, level);
            }
        }
        // Lines no built-in device drives: only the testdev (low without it).
        for irq in 0..16u8 {
            if driven & (1 << irq) == 0 {
                let level = testdev & (1 << irq) != 0;
                if (self.isa_levels & (1 << irq) != 0) != level {
                    self.set_isa_irq(irq, level);
                }
            }
        }
        // LINT0 in fixed delivery mode turns a rising 8259 output into a local interrupt.
        let out = self.pic.output();
        if out && !self.pic_out {
            self.lapic.lint0_fixed_edge();
        }
        self.pic_out = out;
    }
}

fn in_window(addr: u64, base: u64) -> bool {
    addr >= base && addr < base + APIC_WINDOW
}

fn normalise_io_size(size: u8) -> u8 {
    match size {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    }
}

fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

fn size_mask64(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests;
