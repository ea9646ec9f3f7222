//! Intel 82093AA I/O APIC at 0xfec00000: 24 pins, version 0x11, like QEMU's.
//!
//! Interrupt messages go to the board's only local APIC. Edge-triggered pins deliver on a rising
//! input edge while unmasked (the 82093AA ignores edges on masked pins); level-triggered pins
//! deliver while the input is high and remote IRR is clear, and remote IRR is cleared by the local
//! APIC's EOI broadcast for the vector.

use crate::lapic::{Lapic, DM_FIXED, DM_LOWEST, DM_NMI};
use serde::{Deserialize, Serialize};

/// Base of the IOAPIC's MMIO window.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Number of input pins.
pub const PINS: usize = 24;

const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const DELIVERY_STATUS: u64 = 1 << 12;
const DEST_LOGICAL: u64 = 1 << 11;

/// The I/O APIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoApic {
    id: u8,
    ioregsel: u8,
    /// Redirection table.
    redir: Vec<u64>,
    /// Input pin levels.
    levels: u32,
    /// Latched requests not yet delivered.
    irr: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// Reset state: every redirection entry masked.
    pub fn new() -> IoApic {
        IoApic { id: 0, ioregsel: 0, redir: vec![MASKED; PINS], levels: 0, irr: 0 }
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        self.redir.len() == PINS
    }

    /// Drive input `pin` to `level`.
    pub fn set_pin(&mut self, pin: usize, level: bool, lapic: &mut Lapic) {
        if pin >= PINS {
            return;
        }
        let mask = 1u32 << pin;
        let was = self.levels & mask != 0;
        if level {
            self.levels |= mask;
        } else {
            self.levels &= !mask;
        }
        let e = self.redir[pin];
        if e & LEVEL != 0 {
            if level {
                self.irr |= mask;
            } else {
                self.irr &= !mask;
            }
        } else if level && !was && e & MASKED == 0 {
            self.irr |= mask;
        }
        self.service(lapic);
    }

    /// Deliver every pending, unmasked request.
    fn service(&mut self, lapic: &mut Lapic) {
        for pin in 0..PINS {
            let mask = 1u32 << pin;
            if self.irr & mask == 0 {
                continue;
            }
            let e = self.redir[pin];
            if e & MASKED != 0 {
                continue;
            }
            let mode = ((e >> 8) & 7) as u8;
            // NMI messages are edge events whatever the trigger-mode bit says (the 82093AA
            // datasheet asks software to program NMI entries as edge-triggered; a level NMI
            // would otherwise wait forever for an EOI that NMI handlers do not send).
            let level = e & LEVEL != 0 && mode != DM_NMI;
            if level {
                if e & REMOTE_IRR != 0 {
                    continue;
                }
                self.redir[pin] |= REMOTE_IRR;
            } else {
                self.irr &= !mask;
            }
            let dest = (e >> 56) as u8;
            if !lapic.matches(dest, e & DEST_LOGICAL != 0) {
                continue;
            }
            match mode {
                DM_FIXED | DM_LOWEST => lapic.accept(e as u8, level),
                // To the CPU's NMI input (the vector is ignored), like an NMI IPI.
                DM_NMI => lapic.raise_nmi(),
                // SMI/INIT/ExtINT messages have no receiver on this board.
                _ => {}
            }
        }
    }

    /// EOI broadcast from the local APIC for a level-triggered `vector`.
    pub fn eoi(&mut self, vector: u8, lapic: &mut Lapic) {
        for e in &mut self.redir {
            if *e & REMOTE_IRR != 0 && *e as u8 == vector {
                *e &= !REMOTE_IRR;
            }
        }
        self.service(lapic);
    }

    fn read_reg(&self) -> u32 {
        match self.ioregsel {
            0x00 => (self.id as u32 & 0xf) << 24,
            0x01 => ((PINS as u32 - 1) << 16) | 0x11,
            0x02 => (self.id as u32 & 0xf) << 24,
            r @ 0x10..=0x3f => {
                let pin = ((r - 0x10) / 2) as usize;
                let e = self.redir[pin] & !DELIVERY_STATUS;
                if r & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0xffff_ffff,
        }
    }

    fn write_reg(&mut self, val: u32, lapic: &mut Lapic) {
        match self.ioregsel {
            0x00 => self.id = ((val >> 24) & 0xf) as u8,
            r @ 0x10..=0x3f => {
                let pin = ((r - 0x10) / 2) as usize;
                let e = self.redir[pin];
                let ro = e & (REMOTE_IRR | DELIVERY_STATUS);
                let ne = if r & 1 == 0 {
                    (e & 0xffff_ffff_0000_0000) | (val as u64 & !(REMOTE_IRR | DELIVERY_STATUS)) | ro
                } else {
                    (e & 0xffff_ffff) | ((val as u64) << 32)
                };
                self.redir[pin] = ne;
                // Switching to edge triggering drops remote IRR; a level request whose line is
                // still high becomes pending again.
                if ne & LEVEL == 0 {
                    self.redir[pin] &= !REMOTE_IRR;
                } else if self.levels & (1 << pin) != 0 {
                    self.irr |= 1 << pin;
                }
                self.service(lapic);
            }
            _ => {}
        }
    }

    /// MMIO read at `offset` in the window (IOREGSEL at 0x00, IOWIN at 0x10).
    pub fn read(&self, offset: u64) -> u32 {
        match offset & 0xff {
            0x00 => self.ioregsel as u32,
            0x10 => self.read_reg(),
            _ => 0,
        }
    }

    /// MMIO write.
    pub fn write(&mut self, offset: u64, val: u32, lapic: &mut Lapic) {
        match offset & 0xff {
            0x00 => self.ioregsel = val as u8,
            0x10 => self.write_reg(val, lapic),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (IoApic, Lapic) {
        let mut l = Lapic::new();
        l.write(0xf0, 0x1ff, 0);
        (IoApic::new(), l)
    }

    fn program(io: &mut IoApic, l: &mut Lapic, pin: u8, lo: u32, hi: u32) {
        io.write(0, 0x11 + 2 * pin as u32, l);
        io.write(0x10, hi, l);
        io.write(0, 0x10 + 2 * pin as u32, l);
        io.write(0x10, lo, l);
    }

    #[test]
    fn nmi_delivery_mode_reaches_the_nmi_input() {
        let (mut io, mut l) = setup();
        // Pin 5: NMI delivery mode (4), physical destination 0, level-triggered as programmed.
        program(&mut io, &mut l, 5, (4 << 8) | (1 << 15) | 0x42, 0);
        io.set_pin(5, true, &mut l);
        assert!(l.take_nmi(), "NMI raised");
        assert!(!l.take_nmi());
        // No remote IRR for NMI entries: the next rising edge raises another NMI.
        io.set_pin(5, false, &mut l);
        io.set_pin(5, true, &mut l);
        assert!(l.take_nmi());
        // Masked: nothing.
        program(&mut io, &mut l, 6, (4 << 8) | (1 << 16), 0);
        io.set_pin(6, true, &mut l);
        assert!(!l.take_nmi());
    }

    #[test]
    fn version_and_id() {
        let (mut io, mut l) = setup();
        io.write(0, 1, &mut l);
        assert_eq!(io.read(0x10), 0x0017_0011);
        io.write(0, 0, &mut l);
        io.write(0x10, 0x0200_0000, &mut l);
        assert_eq!(io.read(0x10), 0x0200_0000);
        io.write(0, 0x10, &mut l);
        assert_eq!(io.read(0x10), 0x0001_0000, "masked at reset");
    }

    #[test]
    fn edge_pin_delivers_on_rising_edge() {
        let (mut io, mut l) = setup();
        program(&mut io, &mut l, 2, 0x30, 0);
        io.set_pin(2, true, &mut l);
        assert_eq!(l.acknowledge(), 0x30);
        io.set_pin(2, true, &mut l);
        l.write(0xb0, 0, 0);
        assert!(!l.has_interrupt());
        io.set_pin(2, false, &mut l);
        io.set_pin(2, true, &mut l);
        assert!(l.has_interrupt());
    }

    #[test]
    fn masked_edge_is_ignored() {
        let (mut io, mut l) = setup();
        program(&mut io, &mut l, 4, 0x1_0034, 0);
        io.set_pin(4, true, &mut l);
        program(&mut io, &mut l, 4, 0x34, 0);
        assert!(!l.has_interrupt());
    }

    #[test]
    fn level_remote_irr_and_eoi() {
        let (mut io, mut l) = setup();
        program(&mut io, &mut l, 9, 0x8049, 0);
        io.set_pin(9, true, &mut l);
        assert_eq!(l.acknowledge(), 0x49);
        io.write(0, 0x22, &mut l);
        assert_ne!(io.read(0x10) & (1 << 14), 0, "remote IRR");
        // EOI while the line is still high redelivers.
        let v = l.write(0xb0, 0, 0).unwrap();
        io.eoi(v, &mut l);
        assert!(l.has_interrupt());
        assert_eq!(l.acknowledge(), 0x49);
        io.set_pin(9, false, &mut l);
        let v = l.write(0xb0, 0, 0).unwrap();
        io.eoi(v, &mut l);
        assert!(!l.has_interrupt());
        assert_eq!(io.read(0x10) & (1 << 14), 0);
    }

    #[test]
    fn logical_destination_must_match() {
        let (mut io, mut l) = setup();
        l.write(0xd0, 0x0100_0000, 0);
        program(&mut io, &mut l, 1, 0x0931, 0x0200_0000);
        io.set_pin(1, true, &mut l);
        assert!(!l.has_interrupt());
        io.set_pin(1, false, &mut l);
        program(&mut io, &mut l, 1, 0x0931, 0x0100_0000);
        io.set_pin(1, true, &mut l);
        assert!(l.has_interrupt());
    }
}
