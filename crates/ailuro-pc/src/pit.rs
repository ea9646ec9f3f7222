//! Intel 8254 programmable interval timer (ports 0x40-0x43) and the channel 2 gate/output bits of
//! port 0x61.
//!
//! Counters are not stepped: each channel remembers the virtual time at which its count was loaded
//! (or its gate rose) and derives count and OUT from the elapsed number of 1.193182 MHz input clocks,
//! as QEMU does. Edges of OUT are therefore computed, not simulated, and an IRQ0 edge that happened
//! between two `advance` calls is still reported.

use serde::{Deserialize, Serialize};

/// PIT input clock in Hz.
pub const PIT_FREQ: u64 = 1_193_182;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Number of whole PIT input clocks in `ns` nanoseconds.
pub fn ns_to_ticks(ns: u64) -> u64 {
    ((ns as u128 * PIT_FREQ as u128) / NS_PER_SEC as u128) as u64
}

/// The first nanosecond count at which `ticks` whole input clocks have elapsed.
pub fn ticks_to_ns_ceil(ticks: u64) -> u64 {
    let n = ticks as u128 * NS_PER_SEC as u128;
    n.div_ceil(PIT_FREQ as u128).min(u64::MAX as u128) as u64
}

/// One counter of the 8254.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Programmed count (1..=0x10000; a written 0 means 0x10000).
    count: u32,
    /// Latched count (counter latch / read-back), if any.
    latched_count: Option<u16>,
    /// The low byte of a 16-bit latched count has been read.
    latch_lo_read: bool,
    /// Latched status byte (read-back), if any; read before any latched count.
    latched_status: Option<u8>,
    /// Access mode: 1 = LSB, 2 = MSB, 3 = LSB then MSB.
    rw_mode: u8,
    /// Read flip-flop: the LSB has been read in mode 3.
    read_hi_next: bool,
    /// Write flip-flop: the LSB has been written in mode 3.
    write_hi_next: bool,
    /// LSB written, waiting for the MSB.
    write_latch: u8,
    /// Counting mode 0..=5.
    mode: u8,
    /// BCD counting: counts are four decimal digits (0 means 10000).
    bcd: bool,
    /// GATE input.
    gate: bool,
    /// Virtual time at which the count was loaded (or the gate last triggered it).
    load_ns: u64,
    /// A count has been written since the mode was programmed (OUT follows the mode only then).
    armed: bool,
    /// The "null count" status bit: a count was written but not yet loaded into the counter.
    null_count: bool,
    /// Modes 0 and 4 stop counting while GATE is low: nanoseconds lost that way since the load.
    gate_low_ns: u64,
    /// When GATE last fell.
    gate_fell_ns: u64,
}

impl Channel {
    /// Reset state as QEMU has it: mode 3 with a count of 0x10000, loaded at time 0 (so channel 0
    /// runs at 18.2 Hz from power-on, as after a BIOS).
    fn new(gate: bool) -> Channel {
        Channel { count: 0x10000, rw_mode: 3, gate, mode: 3, armed: true, ..Channel::default() }
    }

    /// Does a low GATE pause this counter (rather than stop and later restart it)?
    fn gate_pauses(&self) -> bool {
        matches!(self.mode, 0 | 4)
    }

    /// Nanoseconds the counter has been counting since its load.
    fn counted_ns(&self, now: u64) -> u64 {
        let mut ns = now.saturating_sub(self.load_ns).saturating_sub(self.gate_low_ns);
        if self.gate_pauses() && !self.gate {
            ns = ns.saturating_sub(now.saturating_sub(self.gate_fell_ns.max(self.load_ns)));
        }
        ns
    }

    fn elapsed(&self, now: u64) -> u64 {
        ns_to_ticks(self.counted_ns(now))
    }

    /// Is the counter counting (a count has been loaded, and triggered for the gate-triggered modes)?
    fn counting(&self) -> bool {
        self.armed
    }

    /// Current value of the counting element.
    pub fn count_at(&self, now: u64) -> u16 {
        let modulus = if self.bcd { 10_000 } else { 0x10000 };
        let v = if !self.counting() {
            self.count as u64 % modulus
        } else {
            let d = self.elapsed(now);
            let c = self.count as u64;
            match self.mode {
                0 | 1 | 4 | 5 => (c + modulus - d % modulus) % modulus,
                2 | 6 => c - d % c,
                // Mode 3 decrements by two, twice per period.
                _ => ((c + modulus - (2 * d) % c) % modulus) & !1,
            }
        };
        if self.bcd {
            let v = v as u16;
            (v / 1000 % 10) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)
        } else {
            v as u16
        }
    }

    /// Level of OUT.
    pub fn out_at(&self, now: u64) -> bool {
        if !self.counting() {
            // After a control word OUT is low in mode 0 and high in every other mode.
            return self.mode != 0;
        }
        let d = self.elapsed(now);
        let c = self.count as u64;
        match self.mode {
            0 => d >= c,
            1 => d >= c,
            2 | 6 => !self.gate || d % c != c - 1,
            3 | 7 => !self.gate || d % c < c.div_ceil(2),
            // Modes 4/5: a one-clock low pulse when the count expires.
            _ => d != c,
        }
    }

    /// Counts (in input clocks since `load_ns`) at which OUT rises, the first one strictly after
    /// elapsed clock count `d`.
    fn next_rise_after(&self, d: u64) -> Option<u64> {
        if !self.counting() {
            return None;
        }
        let c = self.count as u64;
        match self.mode {
            0 | 1 => (d < c).then_some(c),
            2 | 3 | 6 | 7 => {
                if !self.gate {
                    return None;
                }
                Some((d / c + 1) * c)
            }
            _ => (d < c + 1).then_some(c + 1),
        }
    }

    /// Virtual time of the next rising edge of OUT strictly after `now`.
    pub fn next_rise_ns(&self, now: u64) -> Option<u64> {
        if self.gate_pauses() && !self.gate {
            return None;
        }
        let d = self.elapsed(now);
        let t = self.next_rise_after(d)?;
        let ns = self.load_ns.saturating_add(self.gate_low_ns).saturating_add(ticks_to_ns_ceil(t));
        Some(ns.max(now.saturating_add(1)))
    }

    /// Did OUT rise in the interval (from, to]?
    pub fn rose_between(&self, from: u64, to: u64) -> bool {
        if to <= from {
            return false;
        }
        match self.next_rise_ns(from) {
            Some(t) => t <= to,
            None => false,
        }
    }

    fn load_count(&mut self, val: u32, now: u64) {
        self.count = if self.bcd {
            // Four BCD digits; 0 means 10000.
            let digits = [val >> 12, val >> 8, val >> 4, val].map(|d| (d & 0xf).min(9));
            let v = digits.iter().fold(0, |acc, d| acc * 10 + d);
            if v == 0 {
                10_000
            } else {
                v
            }
        } else if val == 0 {
            0x10000
        } else {
            val
        };
        self.load_ns = now;
        self.null_count = false;
        self.gate_low_ns = 0;
        // Modes 1 and 5 wait for a gate trigger; everything else starts counting on load.
        self.armed = !matches!(self.mode, 1 | 5) || self.armed;
    }

    fn write_control(&mut self, val: u8) {
        let access = (val >> 4) & 3;
        if access == 0 {
            return; // latch, handled by the caller
        }
        self.rw_mode = access;
        self.read_hi_next = false;
        self.write_hi_next = false;
        self.mode = (val >> 1) & 7;
        if self.mode >= 6 {
            self.mode -= 4;
        }
        self.bcd = val & 1 != 0;
        self.armed = false;
        self.null_count = true;
        self.latched_count = None;
        self.latched_status = None;
    }

    fn latch(&mut self, now: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count_at(now));
            self.latch_lo_read = false;
        }
    }

    fn status(&self, now: u64) -> u8 {
        (u8::from(self.out_at(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.rw_mode << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        if let Some(l) = self.latched_count {
            return match self.rw_mode {
                1 => {
                    self.latched_count = None;
                    l as u8
                }
                2 => {
                    self.latched_count = None;
                    (l >> 8) as u8
                }
                _ => {
                    if self.latch_lo_read {
                        self.latched_count = None;
                        (l >> 8) as u8
                    } else {
                        self.latch_lo_read = true;
                        l as u8
                    }
                }
            };
        }
        let c = self.count_at(now);
        match self.rw_mode {
            1 => c as u8,
            2 => (c >> 8) as u8,
            _ => {
                self.read_hi_next = !self.read_hi_next;
                if self.read_hi_next {
                    c as u8
                } else {
                    (c >> 8) as u8
                }
            }
        }
    }

    fn write(&mut self, val: u8, now: u64) {
        match self.rw_mode {
            1 => self.load_count(val as u32, now),
            2 => self.load_count((val as u32) << 8, now),
            _ => {
                if self.write_hi_next {
                    self.write_hi_next = false;
                    self.load_count(self.write_latch as u32 | ((val as u32) << 8), now);
                } else {
                    self.write_hi_next = true;
                    self.write_latch = val;
                    // Mode 0: writing the first byte stops the count (OUT stays low).
                    if self.mode == 0 {
                        self.armed = false;
                    }
                }
            }
        }
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        let rising = gate && !self.gate;
        if !gate && self.gate {
            self.gate_fell_ns = now;
        }
        if rising && self.gate_pauses() {
            let lost = now.saturating_sub(self.gate_fell_ns.max(self.load_ns));
            self.gate_low_ns = self.gate_low_ns.saturating_add(lost);
        }
        self.gate = gate;
        if rising {
            match self.mode {
                // A rising gate triggers the one-shot modes once a count is there...
                1 | 5 if !self.null_count => {
                    self.load_ns = now;
                    self.armed = true;
                }
                // ...and restarts the periodic ones (which stop while the gate is low).
                2 | 3 if self.armed => self.load_ns = now,
                _ => {}
            }
        }
    }
}

/// The 8254 with its three channels: 0 drives IRQ0, 2 is gated by port 0x61 bit 0 (speaker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pit {
    /// Channels 0, 1 and 2.
    pub channels: [Channel; 3],
    /// Port 0x61 bit 1: speaker data enable (stored only).
    speaker_data: bool,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Power-on state: gates of channels 0 and 1 high, gate 2 low (port 0x61 bit 0).
    pub fn new() -> Pit {
        Pit { channels: [Channel::new(true), Channel::new(true), Channel::new(false)], speaker_data: false }
    }

    /// Check invariants after deserialisation (a zero count would divide by zero).
    pub(crate) fn valid(&self) -> bool {
        self.channels.iter().all(|c| (1..=0x10000).contains(&c.count) && c.mode <= 5 && (1..=3).contains(&c.rw_mode))
    }

    /// Level of channel 0's OUT (IRQ0).
    pub fn out0(&self, now: u64) -> bool {
        self.channels[0].out_at(now)
    }

    /// Next rising edge of channel 0's OUT strictly after `now`.
    pub fn next_irq0_ns(&self, now: u64) -> Option<u64> {
        self.channels[0].next_rise_ns(now)
    }

    /// Read one of ports 0x40-0x43.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port & 3 {
            3 => 0xff, // the control word register is write-only
            n => self.channels[n as usize].read(now),
        }
    }

    /// Write one of ports 0x40-0x43.
    pub fn write(&mut self, port: u16, val: u8, now: u64) {
        match port & 3 {
            3 => {
                let sel = val >> 6;
                if sel == 3 {
                    // Read-back command: bit 5 = 0 latches counts, bit 4 = 0 latches status.
                    for (i, ch) in self.channels.iter_mut().enumerate() {
                        if val & (2 << i) == 0 {
                            continue;
                        }
                        if val & 0x20 == 0 {
                            ch.latch(now);
                        }
                        if val & 0x10 == 0 && ch.latched_status.is_none() {
                            ch.latched_status = Some(ch.status(now));
                        }
                    }
                } else {
                    let ch = &mut self.channels[sel as usize];
                    if (val >> 4) & 3 == 0 {
                        ch.latch(now);
                    } else {
                        ch.write_control(val);
                    }
                }
            }
            n => self.channels[n as usize].write(val, now),
        }
    }

    /// Read port 0x61: bit 0 gate 2, bit 1 speaker data, bit 4 refresh toggle, bit 5 OUT2.
    pub fn read_port61(&self, now: u64) -> u8 {
        // DRAM refresh requests toggle bit 4 every 15.085 us.
        let refresh = (now / 15_085) & 1 == 1;
        u8::from(self.channels[2].gate)
            | (u8::from(self.speaker_data) << 1)
            | (u8::from(refresh) << 4)
            | (u8::from(self.channels[2].out_at(now)) << 5)
    }

    /// Write port 0x61.
    pub fn write_port61(&mut self, val: u8, now: u64) {
        self.speaker_data = val & 2 != 0;
        self.channels[2].set_gate(val & 1 != 0, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion_round_trips() {
        for t in [1u64, 2, 11931, 65536, 1 << 40] {
            let ns = ticks_to_ns_ceil(t);
            assert_eq!(ns_to_ticks(ns), t);
            assert_eq!(ns_to_ticks(ns - 1), t - 1);
        }
    }

    #[test]
    fn mode2_periodic_like_linux_hz100() {
        let mut p = Pit::new();
        // Linux: outb(0x34, 0x43); LATCH = 11932 for HZ=100.
        p.write(0x43, 0x34, 0);
        p.write(0x40, (11932u16 & 0xff) as u8, 0);
        p.write(0x40, (11932u16 >> 8) as u8, 0);
        assert!(p.out0(0));
        let first = p.next_irq0_ns(0).unwrap();
        assert_eq!(first, ticks_to_ns_ceil(11932));
        assert!((10_000_000 - 2_000..=10_000_000 + 2_000).contains(&first));
        let second = p.next_irq0_ns(first).unwrap();
        assert_eq!(second, ticks_to_ns_ceil(2 * 11932));
        // OUT low exactly one clock before the reload.
        assert!(!p.out0(ticks_to_ns_ceil(11931)));
        assert!(p.out0(first));
        assert!(p.channels[0].rose_between(first - 1, first));
        assert!(!p.channels[0].rose_between(first, second - 1));
    }

    #[test]
    fn mode0_one_shot_and_count_read() {
        let mut p = Pit::new();
        p.write(0x43, 0x30, 0);
        assert!(!p.out0(0));
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 0); // 4096
        let t = ticks_to_ns_ceil(1000);
        // Latch and read.
        p.write(0x43, 0x00, t);
        assert_eq!(p.read(0x40, t + 500_000) as u16 | (p.read(0x40, t + 500_000) as u16) << 8, 4096 - 1000);
        assert_eq!(p.next_irq0_ns(0), Some(ticks_to_ns_ceil(4096)));
        assert!(p.out0(ticks_to_ns_ceil(4096)));
        assert_eq!(p.next_irq0_ns(ticks_to_ns_ceil(4096)), None);
    }

    #[test]
    fn channel2_calibration_via_port61() {
        // Linux pit_calibrate_tsc: gate high, speaker off, mode 0 on channel 2, poll bit 5.
        let mut p = Pit::new();
        let r = p.read_port61(0);
        p.write_port61((r & !0x02) | 0x01, 0);
        p.write(0x43, 0xb0, 0);
        let latch = (PIT_FREQ / 20) as u16;
        p.write(0x42, latch as u8, 100);
        p.write(0x42, (latch >> 8) as u8, 100);
        assert_eq!(p.read_port61(200) & 0x20, 0);
        let end = 100 + ticks_to_ns_ceil(latch as u64);
        assert_eq!(p.read_port61(end - 1) & 0x20, 0);
        assert_eq!(p.read_port61(end) & 0x20, 0x20);
        assert_eq!(p.read_port61(end) & 1, 1);
    }

    #[test]
    fn readback_status() {
        let mut p = Pit::new();
        p.write(0x43, 0x34, 0);
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x01, 0);
        // Read back status+count of channel 0.
        p.write(0x43, 0xc2, 10_000);
        let st = p.read(0x40, 20_000);
        assert_eq!(st & 0x3f, 0x34);
        assert_eq!(st & 0x80, 0x80);
        let lo = p.read(0x40, 20_000) as u16;
        let hi = p.read(0x40, 20_000) as u16;
        assert_eq!(lo | hi << 8, 256 - ns_to_ticks(10_000) as u16);
    }

    #[test]
    fn mode3_square_wave() {
        let mut p = Pit::new();
        p.write(0x43, 0x36, 0);
        p.write(0x40, 100, 0);
        p.write(0x40, 0, 0);
        assert!(p.out0(ticks_to_ns_ceil(49)));
        assert!(!p.out0(ticks_to_ns_ceil(50)));
        assert_eq!(p.next_irq0_ns(1), Some(ticks_to_ns_ceil(100)));
    }

    #[test]
    fn bcd_counting() {
        let mut p = Pit::new();
        p.write(0x43, 0x31, 0); // channel 0, LSB/MSB, mode 0, BCD
        p.write(0x40, 0x00, 0);
        p.write(0x40, 0x10, 0); // 1000 decimal
        let t = ticks_to_ns_ceil(1);
        p.write(0x43, 0x00, t);
        assert_eq!(p.read(0x40, t), 0x99);
        assert_eq!(p.read(0x40, t), 0x09);
        assert_eq!(p.next_irq0_ns(0), Some(ticks_to_ns_ceil(1000)));
    }

    #[test]
    fn mode0_gate_low_pauses_count() {
        let mut p = Pit::new();
        p.write_port61(0x01, 0);
        p.write(0x43, 0xb0, 0);
        p.write(0x42, 0x00, 0);
        p.write(0x42, 0x10, 0); // 4096
        let t1 = ticks_to_ns_ceil(1000);
        p.write_port61(0x00, t1);
        let cnt = |p: &mut Pit, t| {
            p.write(0x43, 0x80, t);
            p.read(0x42, t) as u16 | (p.read(0x42, t) as u16) << 8
        };
        assert_eq!(cnt(&mut p, t1 + 5_000_000), 4096 - 1000);
        assert_eq!(p.channels[2].next_rise_ns(t1 + 5_000_000), None);
        p.write_port61(0x01, t1 + 5_000_000);
        let end = p.channels[2].next_rise_ns(t1 + 5_000_000).unwrap();
        assert!(end.abs_diff(ticks_to_ns_ceil(4096) + 5_000_000) <= 1);
        assert_eq!(p.read_port61(end - 2) & 0x20, 0);
        assert_eq!(p.read_port61(end) & 0x20, 0x20);
    }

    #[test]
    fn lobyte_only_access() {
        let mut p = Pit::new();
        p.write(0x43, 0x54, 0); // channel 1, LSB only, mode 2
        p.write(0x41, 18, 0);
        assert_eq!(p.read(0x41, 0), 18);
    }
}
