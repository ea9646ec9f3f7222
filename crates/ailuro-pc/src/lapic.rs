//! Local APIC (xAPIC register interface at 0xfee00000) of the single CPU: APIC ID 0, version 0x50014
//! (6 LVT entries) like QEMU's.
//!
//! The timer counts the 1 GHz bus clock (one tick per nanosecond) through the divide configuration;
//! its current count is computed from virtual time rather than stepped.

use serde::{Deserialize, Serialize};

/// Base of the local APIC's MMIO page.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
const VERSION: u32 = 0x0005_0014;

const SVR_ENABLE: u32 = 0x100;
const LVT_MASKED: u32 = 1 << 16;
const LVT_LEVEL: u32 = 1 << 15;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;

// LVT indices.
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;

/// Delivery modes.
pub const DM_FIXED: u8 = 0;
/// Lowest priority delivery.
pub const DM_LOWEST: u8 = 1;
/// NMI: the vector field is ignored; the CPU takes vector 2 through its NMI input.
pub const DM_NMI: u8 = 4;
/// ExtINT: the vector comes from the 8259.
pub const DM_EXTINT: u8 = 7;

/// The local APIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lapic {
    id: u8,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    esr: u32,
    /// Errors accumulated since the last ESR write.
    esr_pending: u32,
    icr_lo: u32,
    icr_hi: u32,
    /// LVT: timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; 6],
    divide: u32,
    initial_count: u32,
    /// Virtual time from which the timer counts down from `start_count` (the initial-count write,
    /// or a later divider change).
    timer_start_ns: u64,
    /// Counter value at `timer_start_ns`.
    start_count: u32,
    /// Next expiry of the timer (kept up to date even while the LVT entry is masked).
    timer_next_ns: Option<u64>,
    /// An NMI was accepted (ICR with NMI delivery mode addressed to this APIC) and not yet
    /// handed to the CPU. Edge-latched: several NMIs before the CPU takes one are one NMI.
    nmi: bool,
}

impl Default for Lapic {
    fn default() -> Self {
        Self::new()
    }
}

fn bit_set(a: &mut [u32; 8], v: u8) {
    a[(v >> 5) as usize] |= 1 << (v & 31);
}

fn bit_clear(a: &mut [u32; 8], v: u8) {
    a[(v >> 5) as usize] &= !(1 << (v & 31));
}

fn bit_test(a: &[u32; 8], v: u8) -> bool {
    a[(v >> 5) as usize] & (1 << (v & 31)) != 0
}

/// Highest vector set in a 256-bit register.
fn highest(a: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find(|&i| a[i] != 0).map(|i| (i as u8) * 32 + (31 - a[i].leading_zeros() as u8))
}

impl Lapic {
    /// State after RESET: software-disabled, all LVT entries masked, flat logical model.
    pub fn new() -> Lapic {
        Lapic {
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_lo: 0,
            icr_hi: 0,
            lvt: [LVT_MASKED; 6],
            divide: 0,
            initial_count: 0,
            timer_start_ns: 0,
            start_count: 0,
            timer_next_ns: None,
            nmi: false,
        }
    }

    /// SVR bit 8: the APIC is software-enabled.
    pub fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    fn spurious_vector(&self) -> u8 {
        self.svr as u8
    }

    fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The highest pending vector that may interrupt now (priority class above the PPR's).
    fn deliverable(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The APIC asserts INTR for one of its own vectors.
    pub fn has_interrupt(&self) -> bool {
        self.deliverable().is_some()
    }

    /// INTA for an APIC interrupt: the highest deliverable vector moves from IRR to ISR. When the
    /// CPU acknowledges with nothing deliverable the APIC answers with its spurious vector.
    pub fn acknowledge(&mut self) -> u8 {
        match self.deliverable() {
            Some(v) => {
                bit_clear(&mut self.irr, v);
                bit_set(&mut self.isr, v);
                v
            }
            None => self.spurious_vector(),
        }
    }

    /// Accept an interrupt with `vector` into IRR (from the IOAPIC, an IPI or a local source).
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.esr_pending |= 0x40; // received illegal vector
            self.signal_error();
            return;
        }
        bit_set(&mut self.irr, vector);
        if level {
            bit_set(&mut self.tmr, vector);
        } else {
            bit_clear(&mut self.tmr, vector);
        }
    }

    /// An error was recorded in the ESR: raise the LVT error interrupt if it is unmasked (an
    /// illegal error vector only records itself, it cannot recurse).
    fn signal_error(&mut self) {
        let l = self.lvt[LVT_ERROR];
        let v = l as u8;
        if l & LVT_MASKED == 0 && v >= 16 {
            bit_set(&mut self.irr, v);
            bit_clear(&mut self.tmr, v);
        }
    }

    /// Does a message for `dest` in `logical` (or physical) destination mode address this APIC?
    pub fn matches(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.id;
        }
        let ldr = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xf {
            dest & ldr != 0 // flat model
        } else {
            // Cluster model: high nibble = cluster (0xf broadcast), low nibble = members.
            ((dest >> 4) == (ldr >> 4) || dest >> 4 == 0xf) && (dest & ldr & 0x0f) != 0
        }
    }

    /// LINT0 delivery mode and mask, for the 8259 virtual wire.
    pub fn lint0(&self) -> (u8, bool) {
        let l = self.lvt[LVT_LINT0];
        (((l >> 8) & 7) as u8, l & LVT_MASKED != 0)
    }

    /// LINT0 programmed for ExtINT and unmasked: the 8259's INT passes through as a virtual wire.
    pub fn extint_open(&self) -> bool {
        let (mode, masked) = self.lint0();
        mode == DM_EXTINT && !masked
    }

    /// Rising edge on LINT0 in fixed delivery mode: a local interrupt.
    pub fn lint0_fixed_edge(&mut self) {
        let l = self.lvt[LVT_LINT0];
        if self.enabled() && l & LVT_MASKED == 0 && (l >> 8) & 7 == DM_FIXED as u32 {
            self.accept(l as u8, l & LVT_LEVEL != 0);
        }
    }

    fn divisor_shift(&self) -> u32 {
        let v = (self.divide & 3) | ((self.divide >> 1) & 4);
        (v + 1) & 7
    }

    fn period_ns(&self) -> u64 {
        (self.initial_count as u64) << self.divisor_shift()
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.initial_count == 0 {
            return 0;
        }
        let ticks = now.saturating_sub(self.timer_start_ns) >> self.divisor_shift();
        let sc = self.start_count as u64;
        if ticks < sc {
            return (sc - ticks) as u32;
        }
        if self.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC != 0 {
            // Reached zero at `sc` ticks, reloaded with the initial count, and so on.
            let ic = self.initial_count as u64;
            (ic - (ticks - sc) % ic) as u32
        } else {
            0
        }
    }

    /// Fire the timer if it has expired by `now`. Several periods passing coalesce into one
    /// request (IRR holds one bit per vector).
    pub fn advance(&mut self, now: u64) {
        let Some(next) = self.timer_next_ns else { return };
        if next > now {
            return;
        }
        let l = self.lvt[LVT_TIMER];
        if l & LVT_MASKED == 0 {
            self.accept(l as u8, false);
        }
        let period = self.period_ns();
        self.timer_next_ns = if l & LVT_TIMER_PERIODIC != 0 && period > 0 {
            let missed = (now - next) / period + 1;
            Some(next.saturating_add(missed.saturating_mul(period)))
        } else {
            None
        };
    }

    /// Next timer expiry that would interrupt, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        self.timer_next_ns
    }

    /// EOI: retire the highest in-service vector; returns it if it was level-triggered (so the
    /// board broadcasts the EOI to the IOAPIC).
    fn eoi(&mut self) -> Option<u8> {
        let v = highest(&self.isr)?;
        bit_clear(&mut self.isr, v);
        // TMR keeps the trigger mode of the last accepted interrupt (it is only rewritten on the
        // next acceptance), as on Intel parts and QEMU.
        bit_test(&self.tmr, v).then_some(v)
    }

    /// 32-bit register read at `offset` within the page.
    pub fn read(&self, offset: u64, now: u64) -> u32 {
        let idx = (offset >> 4) as usize;
        match idx {
            0x02 => (self.id as u32) << 24,
            0x03 => VERSION,
            0x08 => self.tpr as u32,
            0x09 => 0, // arbitration priority: not meaningful with one CPU
            0x0a => self.ppr() as u32,
            0x0d => self.ldr,
            0x0e => self.dfr,
            0x0f => self.svr,
            0x10..=0x17 => self.isr[idx - 0x10],
            0x18..=0x1f => self.tmr[idx - 0x18],
            0x20..=0x27 => self.irr[idx - 0x20],
            0x28 => self.esr,
            0x30 => self.icr_lo & !(1 << 12), // delivery status: always idle
            0x31 => self.icr_hi,
            0x32..=0x37 => self.lvt[idx - 0x32],
            0x38 => self.initial_count,
            0x39 => self.current_count(now),
            0x3e => self.divide,
            _ => 0,
        }
    }

    /// 32-bit register write. Returns a level-triggered vector retired by an EOI, if any.
    pub fn write(&mut self, offset: u64, val: u32, now: u64) -> Option<u8> {
        let idx = (offset >> 4) as usize;
        match idx {
            0x02 => self.id = (val >> 24) as u8,
            0x08 => self.tpr = val as u8,
            0x0b => return self.eoi(),
            0x0d => self.ldr = val & 0xff00_0000,
            0x0e => self.dfr = val | 0x0fff_ffff,
            0x0f => {
                self.svr = val & 0x3ff; // no EOI-broadcast suppression (version bit 24 clear)
                if !self.enabled() {
                    // Software disable masks every LVT entry.
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            0x28 => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            0x30 => {
                self.icr_lo = val & !(1 << 12);
                self.send_ipi();
            }
            0x31 => self.icr_hi = val & 0xff00_0000,
            0x32..=0x37 => {
                let i = idx - 0x32;
                let mut v = val;
                // Writable bits: vector, delivery mode (LINT/perf/thermal), polarity and trigger
                // (LINT only), mask, timer mode (timer only).
                v &= match i {
                    LVT_TIMER => 0x0003_00ff,
                    LVT_LINT0 | 4 => 0x0001_a7ff,
                    LVT_ERROR => 0x0001_00ff,
                    _ => 0x0001_07ff,
                };
                if !self.enabled() {
                    v |= LVT_MASKED;
                }
                let was_periodic = self.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC != 0;
                self.lvt[i] = v;
                if i == LVT_TIMER && was_periodic != (v & LVT_TIMER_PERIODIC != 0) {
                    self.restart_timer_schedule(now);
                }
            }
            0x38 => {
                self.initial_count = val;
                self.timer_start_ns = now;
                self.start_count = val;
                self.timer_next_ns = (val != 0).then(|| now.saturating_add(self.period_ns()));
            }
            0x3e => {
                // Changing the divider re-bases the running count at its current value.
                let cur = self.current_count(now);
                self.divide = val & 0xb;
                self.timer_start_ns = now;
                self.start_count = cur;
                self.restart_timer_schedule(now);
            }
            _ => {}
        }
        None
    }

    /// Recompute the next expiry after a mode or divider change.
    fn restart_timer_schedule(&mut self, now: u64) {
        let shift = self.divisor_shift();
        let period = self.period_ns();
        if self.initial_count == 0 || period == 0 {
            self.timer_next_ns = None;
            return;
        }
        let first = self.timer_start_ns.saturating_add((self.start_count as u64) << shift);
        self.timer_next_ns = if first > now {
            Some(first)
        } else if self.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC != 0 {
            Some(first.saturating_add(((now - first) / period + 1).saturating_mul(period)))
        } else {
            None
        };
    }

    /// The ICR was written: deliver fixed IPIs addressed to this APIC (the only one).
    fn send_ipi(&mut self) {
        let v = self.icr_lo;
        let vector = v as u8;
        let mode = ((v >> 8) & 7) as u8;
        let to_self = match (v >> 18) & 3 {
            0 => self.matches((self.icr_hi >> 24) as u8, v & (1 << 11) != 0),
            1 | 2 => true,
            _ => false, // all excluding self: nobody else exists
        };
        if to_self && (mode == DM_FIXED || mode == DM_LOWEST) {
            if vector < 16 {
                self.esr_pending |= 0x20; // send illegal vector
            }
            self.accept(vector, false);
        }
        // NMI IPIs (vector ignored) to this APIC: by destination, to self, or to all including
        // self. They bypass IRR/ISR/TPR and even a software-disabled APIC (NMI is not masked by
        // SVR), and go to the CPU's NMI input.
        if to_self && mode == DM_NMI {
            self.nmi = true;
        }
    }

    /// An NMI message for this APIC (from the IOAPIC's NMI delivery mode): latched for the CPU's
    /// NMI input like an NMI IPI.
    pub(crate) fn raise_nmi(&mut self) {
        self.nmi = true;
    }

    /// Take the latched NMI request: true once per NMI accepted since the last call.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi)
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> Lapic {
        let mut l = Lapic::new();
        l.write(0xf0, 0x1ff, 0);
        l
    }

    #[test]
    fn reset_state() {
        let l = Lapic::new();
        assert_eq!(l.read(0x30, 0), 0x50014);
        assert_eq!(l.read(0x20, 0), 0);
        assert_eq!(l.read(0xe0, 0), 0xffff_ffff);
        assert_eq!(l.read(0xf0, 0), 0xff);
        assert_eq!(l.read(0x350, 0), 0x10000);
        assert!(!l.enabled());
    }

    #[test]
    fn self_ipi_priority_and_eoi() {
        let mut l = enabled();
        l.write(0x300, 0x0004_0041, 0); // shorthand self, vector 0x41
        assert!(l.has_interrupt());
        l.write(0x300, 0x0004_0062, 0);
        assert_eq!(l.acknowledge(), 0x62);
        // 0x41 is lower priority than the in-service 0x62.
        assert!(!l.has_interrupt());
        assert_eq!(l.read(0xa0, 0), 0x60, "PPR");
        assert_eq!(l.write(0xb0, 0, 0), None);
        assert_eq!(l.acknowledge(), 0x41);
        l.write(0xb0, 0, 0);
        assert!(!l.has_interrupt());
        assert_eq!(l.acknowledge(), 0xff, "spurious");
    }

    #[test]
    fn nmi_ipi_self_and_all_including_self() {
        let mut l = enabled();
        assert!(!l.take_nmi());
        l.write(0x300, 0x0004_0400, 0); // shorthand self, delivery mode NMI
        assert!(!l.has_interrupt(), "an NMI never enters IRR");
        assert!(l.take_nmi());
        assert!(!l.take_nmi(), "taken once");
        l.write(0x300, 0x0008_0400, 0); // all including self
        l.write(0x300, 0x0008_0400, 0); // a second one before the CPU took the first: latched once
        assert!(l.take_nmi());
        assert!(!l.take_nmi());
        l.write(0x300, 0x000c_0400, 0); // all excluding self: nobody
        assert!(!l.take_nmi());
        l.write(0x310, 0, 0);
        l.write(0x300, 0x0000_0400, 0); // physical destination 0 = this APIC
        assert!(l.take_nmi());
        l.write(0x310, 0x0100_0000, 0);
        l.write(0x300, 0x0000_0400, 0); // physical destination 1: not us
        assert!(!l.take_nmi());
    }

    #[test]
    fn tpr_blocks() {
        let mut l = enabled();
        l.write(0x80, 0x50, 0);
        l.accept(0x55, false);
        assert!(!l.has_interrupt());
        l.write(0x80, 0x40, 0);
        assert!(l.has_interrupt());
    }

    #[test]
    fn physical_ipi_to_own_id() {
        let mut l = enabled();
        l.write(0x310, 0, 0);
        l.write(0x300, 0x0000_4051, 0);
        assert!(l.has_interrupt());
        assert_eq!(l.read(0x300, 0) & (1 << 12), 0);
    }

    #[test]
    fn timer_one_shot_and_current_count() {
        let mut l = enabled();
        l.write(0x3e0, 0x3, 0); // divide by 16
        l.write(0x320, 0x30, 0); // one-shot, vector 0x30
        l.write(0x380, 1000, 100);
        assert_eq!(l.read(0x390, 100 + 160), 990);
        assert_eq!(l.next_deadline(), Some(100 + 16_000));
        l.advance(100 + 15_999);
        assert!(!l.has_interrupt());
        l.advance(100 + 16_000);
        assert!(l.has_interrupt());
        assert_eq!(l.read(0x390, 100 + 16_000), 0);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn timer_periodic() {
        let mut l = enabled();
        l.write(0x3e0, 0xb, 0); // divide by 1
        l.write(0x320, 0x2_0031, 0);
        l.write(0x380, 500, 0);
        for k in 1..5u64 {
            assert_eq!(l.next_deadline(), Some(500 * k));
            l.advance(500 * k);
            assert_eq!(l.acknowledge(), 0x31);
            l.write(0xb0, 0, 500 * k);
        }
        assert_eq!(l.read(0x390, 2100), 400);
    }

    #[test]
    fn masked_timer_has_no_deadline_but_keeps_counting() {
        let mut l = enabled();
        l.write(0x3e0, 0xb, 0);
        l.write(0x320, 0x3_0031, 0);
        l.write(0x380, 500, 0);
        assert_eq!(l.next_deadline(), None);
        l.advance(1200);
        assert!(!l.has_interrupt());
        l.write(0x320, 0x2_0031, 1200);
        assert_eq!(l.next_deadline(), Some(1500));
    }

    #[test]
    fn divide_change_keeps_count_continuous() {
        let mut l = enabled();
        l.write(0x3e0, 0xb, 0); // divide by 1
        l.write(0x320, 0x30, 0);
        l.write(0x380, 10_000, 0);
        assert_eq!(l.read(0x390, 4_000), 6_000);
        l.write(0x3e0, 0x0, 4_000); // divide by 2
        assert_eq!(l.read(0x390, 4_000), 6_000);
        assert_eq!(l.read(0x390, 6_000), 5_000);
        assert_eq!(l.next_deadline(), Some(16_000));
    }

    #[test]
    fn illegal_vector_raises_error_interrupt() {
        let mut l = enabled();
        l.write(0x370, 0xfe, 0);
        l.write(0x300, 0x0004_0003, 0); // self-IPI with vector 3
        assert_eq!(l.acknowledge(), 0xfe);
        l.write(0x280, 0, 0);
        assert_eq!(l.read(0x280, 0), 0x60);
        l.write(0x280, 0, 0);
        assert_eq!(l.read(0x280, 0), 0);
    }

    #[test]
    fn software_disable_masks_lvt() {
        let mut l = enabled();
        l.write(0x350, 0x700, 0);
        assert!(l.extint_open());
        l.write(0xf0, 0xff, 0);
        assert!(!l.extint_open());
        l.write(0x350, 0x700, 0);
        assert_eq!(l.read(0x350, 0), 0x10700);
    }

    #[test]
    fn logical_flat_match() {
        let mut l = enabled();
        l.write(0xd0, 0x0100_0000, 0);
        assert!(l.matches(0x01, true));
        assert!(!l.matches(0x02, true));
        assert!(l.matches(0, false));
        assert!(!l.matches(1, false));
    }
}
