//! Intel 8259A programmable interrupt controller, and the PC's cascaded master/slave pair.
//!
//! Modelled after the 8259A datasheet as QEMU models it: edge-triggered requests latch into IRR on a
//! rising input edge (level-triggered inputs, selected through the ELCR, follow the line), IMR masks,
//! ISR records in-service requests, priority rotates through `priority_add`, and the slave's INT output
//! drives master input 2.

use serde::{Deserialize, Serialize};

/// One 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pic {
    /// Input lines as last seen (for edge detection).
    pub(crate) last_irr: u8,
    /// Interrupt request register.
    pub(crate) irr: u8,
    /// Interrupt mask register (OCW1).
    pub(crate) imr: u8,
    /// In-service register.
    pub(crate) isr: u8,
    /// Lowest-priority rotation: the input with the highest priority is `priority_add`.
    priority_add: u8,
    /// Vector base from ICW2 (multiple of 8).
    pub(crate) irq_base: u8,
    /// OCW3 read register select: false = IRR, true = ISR.
    read_isr: bool,
    /// OCW3 poll command pending for the next read.
    poll: bool,
    /// OCW3 special mask mode.
    special_mask: bool,
    /// Initialisation sequence position: 0 = operational, 1..=3 = expecting ICW2..ICW4.
    init_state: u8,
    /// ICW4 automatic EOI.
    auto_eoi: bool,
    /// OCW2 rotate in automatic EOI mode.
    rotate_on_auto_eoi: bool,
    /// ICW4 special fully nested mode.
    special_fully_nested: bool,
    /// ICW1 says ICW4 follows.
    init4: bool,
    /// ICW1 single (no cascade) mode.
    single_mode: bool,
    /// ICW1 LTIM: every input is level triggered.
    ltim: bool,
    /// Edge/level control register (ports 0x4d0/0x4d1): 1 = level triggered.
    pub(crate) elcr: u8,
    /// Bits of the ELCR that exist (IRQ0-2 and 8, 13 are hard-wired edge on PIIX).
    elcr_mask: u8,
    /// This is the master (matters for special fully nested mode).
    master: bool,
}

impl Pic {
    /// A chip in its power-on state.
    pub fn new(master: bool) -> Pic {
        Pic { master, elcr_mask: if master { 0xf8 } else { 0xde }, ..Pic::default() }
    }

    /// Priority (0 = highest) of the highest-priority bit set in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0;
        while mask & (1 << ((p + self.priority_add) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The input the chip wants to interrupt the CPU for, if any (its INT output is high iff `Some`).
    pub fn pending(&self) -> Option<u8> {
        let req = self.priority(self.irr & !self.imr);
        if req == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.master {
            // A further request from the slave may nest inside one already in service.
            in_service &= !(1 << 2);
        }
        let cur = self.priority(in_service);
        if req < cur {
            Some((req + self.priority_add) & 7)
        } else {
            None
        }
    }

    /// Inputs that are level triggered (ELCR, or all of them with ICW1 LTIM).
    fn level_mask(&self) -> u8 {
        if self.ltim {
            0xff
        } else {
            self.elcr
        }
    }

    /// Drive input `irq` (0..=7) to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if self.level_mask() & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            // Like QEMU, a latched edge request stays in IRR when the line falls again.
            self.last_irr &= !mask;
        }
    }

    /// The first INTA pulse for `irq`: move the request from IRR to ISR (or end it, in auto-EOI).
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        // A level-triggered request stays in IRR while its line is high.
        if self.level_mask() & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn init_reset(&mut self) {
        let keep = Pic { elcr: self.elcr, elcr_mask: self.elcr_mask, master: self.master, ..Pic::default() };
        let irr = self.irr & self.elcr;
        *self = keep;
        self.irr = irr;
    }

    /// Write to the command port (A0 = 0) or data port (A0 = 1).
    pub fn write(&mut self, a0: bool, val: u8) {
        if !a0 {
            if val & 0x10 != 0 {
                // ICW1.
                self.init_reset();
                self.init_state = 1;
                self.init4 = val & 1 != 0;
                self.single_mode = val & 2 != 0;
                self.ltim = val & 8 != 0;
            } else if val & 0x08 != 0 {
                // OCW3.
                if val & 0x04 != 0 {
                    self.poll = true;
                }
                if val & 0x02 != 0 {
                    self.read_isr = val & 1 != 0;
                }
                if val & 0x40 != 0 {
                    self.special_mask = val & 0x20 != 0;
                }
            } else {
                // OCW2.
                match val >> 5 {
                    0 | 4 => self.rotate_on_auto_eoi = val >> 7 != 0,
                    1 | 5 => {
                        let p = self.priority(self.isr);
                        if p != 8 {
                            let irq = (p + self.priority_add) & 7;
                            self.isr &= !(1 << irq);
                            if val >> 5 == 5 {
                                self.priority_add = (irq + 1) & 7;
                            }
                        }
                    }
                    3 => self.isr &= !(1 << (val & 7)),
                    6 => self.priority_add = ((val & 7) + 1) & 7,
                    7 => {
                        let irq = val & 7;
                        self.isr &= !(1 << irq);
                        self.priority_add = (irq + 1) & 7;
                    }
                    _ => {} // 2: no operation
                }
            }
        } else {
            match self.init_state {
                0 => self.imr = val,
                1 => {
                    self.irq_base = val & 0xf8;
                    self.init_state = if !self.single_mode {
                        2
                    } else if self.init4 {
                        3
                    } else {
                        0
                    };
                }
                2 => self.init_state = if self.init4 { 3 } else { 0 },
                _ => {
                    self.special_fully_nested = val & 0x10 != 0;
                    self.auto_eoi = val & 0x02 != 0;
                    self.init_state = 0;
                }
            }
        }
    }

    /// Poll-mode read: acknowledges the highest pending request and reports it.
    fn poll_read(&mut self) -> u8 {
        match self.pending() {
            Some(irq) => {
                self.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    /// Read the command port (IRR/ISR per OCW3) or data port (IMR); a pending poll command wins.
    /// Returns the value and whether the read was a poll (which may have acknowledged a request).
    pub fn read(&mut self, a0: bool) -> (u8, bool) {
        if self.poll {
            self.poll = false;
            return (self.poll_read(), true);
        }
        let v = if !a0 {
            if self.read_isr {
                self.isr
            } else {
                self.irr
            }
        } else {
            self.imr
        };
        (v, false)
    }

    /// Check invariants after deserialisation.
    fn valid(&self) -> bool {
        self.priority_add < 8 && self.init_state <= 3
    }

    /// ELCR write (bits that do not exist stay edge-triggered).
    pub fn write_elcr(&mut self, val: u8) {
        self.elcr = val & self.elcr_mask;
    }
}

/// The PC's two cascaded 8259As: master at 0x20/0x21, slave at 0xa0/0xa1 on master input 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualPic {
    /// Master chip (IRQ0-7).
    pub master: Pic,
    /// Slave chip (IRQ8-15).
    pub slave: Pic,
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// The pair in its power-on state.
    pub fn new() -> DualPic {
        DualPic { master: Pic::new(true), slave: Pic::new(false) }
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        self.master.valid() && self.slave.valid()
    }

    /// Forget latched requests (power-on: lines that are already high at reset are not edges).
    pub(crate) fn clear_requests(&mut self) {
        self.master.irr = 0;
        self.slave.irr = 0;
    }

    /// Propagate the slave's INT output into master input 2.
    fn cascade(&mut self) {
        let s = self.slave.pending().is_some();
        self.master.set_irq(2, s);
    }

    /// Drive ISA IRQ line `irq` (0..=15).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if irq < 8 {
            self.master.set_irq(irq, level);
        } else {
            self.slave.set_irq(irq - 8, level);
        }
        self.cascade();
    }

    /// The master's INT output (the pair's connection to the CPU).
    pub fn output(&self) -> bool {
        self.master.pending().is_some()
    }

    /// The INTA cycle: returns the vector the pair puts on the bus. With nothing pending the chips
    /// answer with the spurious IRQ7 (master) or IRQ15 (slave) vector, as the 8259A does.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending() {
            Some(irq) => {
                self.master.intack(irq);
                if irq == 2 && !self.master.single_mode {
                    let v = match self.slave.pending() {
                        Some(irq2) => {
                            self.slave.intack(irq2);
                            irq2
                        }
                        None => 7,
                    };
                    self.slave.irq_base.wrapping_add(v)
                } else {
                    self.master.irq_base.wrapping_add(irq)
                }
            }
            None => self.master.irq_base.wrapping_add(7),
        };
        self.cascade();
        vector
    }

    /// Port read for 0x20/0x21/0xa0/0xa1/0x4d0/0x4d1.
    pub fn io_read(&mut self, port: u16) -> u8 {
        let v = match port {
            0x20 | 0x21 => self.master.read(port & 1 != 0).0,
            0xa0 | 0xa1 => self.slave.read(port & 1 != 0).0,
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => 0xff,
        };
        self.cascade();
        v
    }

    /// Port write for 0x20/0x21/0xa0/0xa1/0x4d0/0x4d1.
    pub fn io_write(&mut self, port: u16, val: u8) {
        match port {
            0x20 | 0x21 => self.master.write(port & 1 != 0, val),
            0xa0 | 0xa1 => self.slave.write(port & 1 != 0, val),
            0x4d0 => self.master.write_elcr(val),
            0x4d1 => self.slave.write_elcr(val),
            _ => {}
        }
        self.cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Program the pair the way Linux's `init_8259A` does (vector base 0x30/0x38 as on i386).
    fn linux_init(p: &mut DualPic, auto_eoi: bool) {
        p.io_write(0x21, 0xff);
        p.io_write(0xa1, 0xff);
        p.io_write(0x20, 0x11);
        p.io_write(0x21, 0x30);
        p.io_write(0x21, 0x04);
        p.io_write(0x21, if auto_eoi { 0x03 } else { 0x01 });
        p.io_write(0xa0, 0x11);
        p.io_write(0xa1, 0x38);
        p.io_write(0xa1, 0x02);
        p.io_write(0xa1, 0x01);
        p.io_write(0x21, 0x00);
        p.io_write(0xa1, 0x00);
    }

    #[test]
    fn imr_probe_reads_back() {
        let mut p = DualPic::new();
        p.io_write(0x21, 0xff);
        assert_eq!(p.io_read(0x21), 0xff);
        p.io_write(0x21, 0xfb);
        assert_eq!(p.io_read(0x21), 0xfb);
    }

    #[test]
    fn edge_latch_ack_and_eoi() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        assert!(!p.output());
        p.set_irq(0, true);
        assert!(p.output());
        // OCW3 read IRR.
        p.io_write(0x20, 0x0a);
        assert_eq!(p.io_read(0x20), 0x01);
        assert_eq!(p.acknowledge(), 0x30);
        assert!(!p.output());
        p.io_write(0x20, 0x0b);
        assert_eq!(p.io_read(0x20), 0x01, "ISR");
        // Holding the line high does not re-request.
        p.set_irq(0, true);
        p.io_write(0x20, 0x20);
        assert!(!p.output());
        assert_eq!(p.io_read(0x20), 0x00);
        // A new edge does.
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert!(p.output());
    }

    #[test]
    fn priority_and_nesting() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x34);
        // Lower priority request waits, higher one nests.
        p.set_irq(6, true);
        assert!(!p.output());
        p.set_irq(1, true);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x31);
        p.io_write(0x20, 0x20); // ends IRQ1
        assert!(!p.output());
        p.io_write(0x20, 0x64); // specific EOI IRQ4
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x36);
    }

    #[test]
    fn masked_request_waits() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        p.io_write(0x21, 0x10);
        p.set_irq(4, true);
        assert!(!p.output());
        p.io_write(0x21, 0x00);
        assert!(p.output());
    }

    #[test]
    fn cascade_slave_irq() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        p.set_irq(8, true);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x38);
        assert_eq!(p.master.isr, 0x04);
        assert_eq!(p.slave.isr, 0x01);
        p.io_write(0xa0, 0x20);
        p.io_write(0x20, 0x20);
        assert_eq!(p.master.isr | p.slave.isr, 0);
    }

    #[test]
    fn spurious_vectors() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        assert_eq!(p.acknowledge(), 0x37);
        // IRQ7 spurious does not set ISR.
        assert_eq!(p.master.isr, 0);
        // A slave request that vanishes (level-triggered line dropped) before INTA gives IRQ15.
        p.io_write(0x4d1, 0x02); // IRQ9 level
        p.set_irq(9, true);
        assert!(p.output());
        // The master latched IR2; now the slave's request goes away.
        p.slave.irr = 0;
        assert_eq!(p.acknowledge(), 0x3f);
        assert_eq!(p.master.isr, 0x04, "master still needs its EOI");
    }

    #[test]
    fn auto_eoi_leaves_isr_clear() {
        let mut p = DualPic::new();
        linux_init(&mut p, true);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33);
        assert_eq!(p.master.isr, 0);
    }

    #[test]
    fn poll_mode() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        p.set_irq(5, true);
        p.io_write(0x20, 0x0c);
        assert_eq!(p.io_read(0x20), 0x85);
        assert_eq!(p.master.isr, 0x20);
        p.io_write(0x20, 0x0c);
        assert_eq!(p.io_read(0x20), 0x00);
    }

    #[test]
    fn level_triggered_follows_line() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        p.io_write(0x4d1, 0xff);
        assert_eq!(p.io_read(0x4d1), 0xde);
        p.io_write(0x4d0, 0xff);
        assert_eq!(p.io_read(0x4d0), 0xf8);
        p.set_irq(11, true);
        assert!(p.output());
        p.set_irq(11, false);
        assert!(p.slave.pending().is_none());
        // The master latched the cascade edge; the INTA cycle finds nothing and says IRQ15.
        assert_eq!(p.acknowledge(), 0x3f);
    }

    #[test]
    fn icw1_ltim_makes_inputs_level_triggered() {
        let mut p = DualPic::new();
        p.io_write(0x20, 0x19);
        p.io_write(0x21, 0x30);
        p.io_write(0x21, 0x04);
        p.io_write(0x21, 0x01);
        p.io_write(0x21, 0x00);
        p.set_irq(3, true);
        assert!(p.output());
        p.set_irq(3, false);
        assert!(!p.output());
    }

    #[test]
    fn rotation_changes_priority() {
        let mut p = DualPic::new();
        linux_init(&mut p, false);
        // Set priority: IRQ4 lowest, so IRQ5 highest.
        p.io_write(0x20, 0xc4);
        p.set_irq(0, true);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x36);
    }
}
