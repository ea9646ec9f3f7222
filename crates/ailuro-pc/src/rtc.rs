//! Motorola MC146818 real-time clock and CMOS RAM (index port 0x70, data port 0x71, IRQ 8).
//!
//! The wall clock is `epoch_secs + (now - epoch_ns) / 1e9` in virtual time; the guest setting the
//! clock moves the epoch. Time registers are encoded on read in the format register B selects
//! (BCD/binary, 12/24 hour). Periodic, alarm and update-ended flags are derived from virtual time
//! whenever the chip is looked at, so nothing is stepped.

use serde::{Deserialize, Serialize};

const NS: u64 = 1_000_000_000;
/// UIP is set this long before each update.
const UIP_NS: u64 = 244_000;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// CMOS offset of the century byte (ACPI FADT default, as QEMU).
const CENTURY: usize = 0x32;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Broken-down time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tm {
    year: i64,
    mon: u32,
    mday: u32,
    hour: u32,
    min: u32,
    sec: u32,
    /// 1 = Sunday.
    wday: u32,
}

fn tm_from_unix(t: i64) -> Tm {
    // Keep the calendar arithmetic far from overflow whatever the configuration says.
    let t = t.clamp(-(1 << 40), 1 << 40);
    let days = t.div_euclid(86_400);
    let s = t.rem_euclid(86_400) as u32;
    let (year, mon, mday) = civil_from_days(days);
    Tm { year, mon, mday, hour: s / 3600, min: s / 60 % 60, sec: s % 60, wday: ((days + 4).rem_euclid(7) + 1) as u32 }
}

fn unix_from_tm(tm: &Tm) -> i64 {
    days_from_civil(tm.year, tm.mon.clamp(1, 12), tm.mday.clamp(1, 31)) * 86_400
        + tm.hour.min(23) as i64 * 3600
        + tm.min.min(59) as i64 * 60
        + tm.sec.min(59) as i64
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u32 {
    ((v >> 4) as u32) * 10 + (v & 0x0f) as u32
}

/// The RTC and its 128 bytes of CMOS RAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtc {
    /// CMOS RAM; bytes 0..=9 hold the time only while SET is on (or for the alarm bytes).
    cmos: Vec<u8>,
    index: u8,
    /// Port 0x70 bit 7 (NMI disable), stored only.
    nmi_disabled: bool,
    /// Wall-clock seconds at virtual time `epoch_ns`.
    epoch_secs: i64,
    epoch_ns: u64,
    /// Flags have been brought up to date until this virtual time.
    synced_ns: u64,
}

impl Rtc {
    /// Power-on state with the clock at `base_unix` and the memory-size bytes for `ram_size`,
    /// filled in as a PC BIOS (and QEMU) would.
    pub fn new(base_unix: i64, ram_size: u64) -> Rtc {
        let mut cmos = vec![0u8; 128];
        cmos[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        cmos[REG_B] = B_24H; // BCD, 24 hour
        cmos[REG_D] = 0x80; // valid RAM and time
                            // Base memory: 640 KiB.
        cmos[0x15] = 0x80;
        cmos[0x16] = 0x02;
        // Extended memory above 1 MiB in KiB, capped at 65535.
        let ext_kb = (ram_size / 1024).saturating_sub(1024).min(0xffff);
        cmos[0x17] = ext_kb as u8;
        cmos[0x18] = (ext_kb >> 8) as u8;
        cmos[0x30] = ext_kb as u8;
        cmos[0x31] = (ext_kb >> 8) as u8;
        // Memory between 16 MiB and 4 GiB (below the PCI hole at 0xe0000000, as QEMU's pc) in
        // 64 KiB units.
        let below_4g = ram_size.min(0xe000_0000);
        let above_16m = (below_4g.saturating_sub(16 << 20) / 65_536).min(0xffff);
        cmos[0x34] = above_16m as u8;
        cmos[0x35] = (above_16m >> 8) as u8;
        // Memory above 4 GiB in 64 KiB units.
        let above_4g = ram_size.saturating_sub(0xe000_0000) / 65_536;
        cmos[0x5b] = above_4g as u8;
        cmos[0x5c] = (above_4g >> 8) as u8;
        cmos[0x5d] = (above_4g >> 16) as u8;
        // Equipment byte: math coprocessor present, VGA.
        cmos[0x14] = 0x02;
        // Checksum of 0x10..=0x2d at 0x2e (high) / 0x2f (low).
        let sum: u16 = cmos[0x10..=0x2d].iter().map(|&b| b as u16).sum();
        cmos[0x2e] = (sum >> 8) as u8;
        cmos[0x2f] = sum as u8;
        let mut rtc = Rtc { cmos, index: 0, nmi_disabled: false, epoch_secs: base_unix, epoch_ns: 0, synced_ns: 0 };
        let century = tm_from_unix(base_unix).year.div_euclid(100) as u32;
        rtc.cmos[CENTURY] = to_bcd(century);
        rtc.cmos[0x37] = to_bcd(century);
        rtc
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        self.cmos.len() == 128 && self.index < 128
    }

    fn set_mode(&self) -> bool {
        self.cmos[REG_B] & B_SET != 0
    }

    /// Register A DV2..DV1 = 11: the divider chain is held in reset (no updates, no periodic ticks).
    fn divider_reset(&self) -> bool {
        self.cmos[REG_A] & 0x60 == 0x60
    }

    /// The clock is updating (neither SET nor the divider reset holds it).
    fn running(&self) -> bool {
        !self.set_mode() && !self.divider_reset()
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_DM_BINARY != 0
    }

    fn enc(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn dec(&self, v: u8) -> u32 {
        if self.binary() {
            v as u32
        } else {
            from_bcd(v)
        }
    }

    fn enc_hour(&self, h: u32) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.enc(h)
        } else {
            let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
            self.enc(h12) | if h >= 12 { 0x80 } else { 0 }
        }
    }

    fn dec_hour(&self, v: u8) -> u32 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.dec(v)
        } else {
            let h = self.dec(v & 0x7f) % 12;
            if v & 0x80 != 0 {
                h + 12
            } else {
                h
            }
        }
    }

    fn secs_at(&self, now: u64) -> i64 {
        self.epoch_secs.saturating_add((now.saturating_sub(self.epoch_ns) / NS) as i64)
    }

    /// Encoded time registers 0, 2, 4, 6, 7, 8, 9 for wall-clock time `t`.
    fn time_regs(&self, t: i64) -> [(usize, u8); 7] {
        let tm = tm_from_unix(t);
        [
            (0, self.enc(tm.sec)),
            (2, self.enc(tm.min)),
            (4, self.enc_hour(tm.hour)),
            (6, self.enc(tm.wday)),
            (7, self.enc(tm.mday)),
            (8, self.enc(tm.mon)),
            (9, self.enc(tm.year.rem_euclid(100) as u32)),
        ]
    }

    /// Latch the running time into the CMOS time bytes.
    fn store_time(&mut self, now: u64) {
        for (i, v) in self.time_regs(self.secs_at(now)) {
            self.cmos[i] = v;
        }
    }

    /// Take the wall-clock time from the CMOS time bytes (the guest set the clock).
    fn load_time(&self) -> i64 {
        let c = &self.cmos;
        let century = from_bcd(c[CENTURY]) as i64;
        let tm = Tm {
            year: century * 100 + self.dec(c[9]) as i64,
            mon: self.dec(c[8]),
            mday: self.dec(c[7]),
            hour: self.dec_hour(c[4]),
            min: self.dec(c[2]),
            sec: self.dec(c[0]),
            wday: 1,
        };
        unix_from_tm(&tm)
    }

    fn alarm_matches(&self, t: i64) -> bool {
        let tm = tm_from_unix(t);
        let check = |alarm: u8, cur: u8| alarm & 0xc0 == 0xc0 || alarm == cur;
        check(self.cmos[1], self.enc(tm.sec))
            && check(self.cmos[3], self.enc(tm.min))
            && check(self.cmos[5], self.enc_hour(tm.hour))
    }

    /// Periodic interrupt period in 32.768 kHz ticks, if enabled.
    fn period_ticks(&self) -> Option<u64> {
        let rs = (self.cmos[REG_A] & 0x0f) as u32;
        match rs {
            0 => None,
            1 | 2 => Some(1 << (rs + 6)),
            _ => Some(1 << (rs - 1)),
        }
    }

    fn ticks32k(ns: u64) -> u64 {
        ((ns as u128 * 32_768) / NS as u128) as u64
    }

    fn ns_of_ticks32k(t: u64) -> u64 {
        (t as u128 * NS as u128).div_ceil(32_768).min(u64::MAX as u128) as u64
    }

    fn update_irqf(&mut self) {
        let c = self.cmos[REG_C] & 0x70;
        let b = self.cmos[REG_B];
        let on =
            (c & C_PF != 0 && b & B_PIE != 0) || (c & C_AF != 0 && b & B_AIE != 0) || (c & C_UF != 0 && b & B_UIE != 0);
        self.cmos[REG_C] = c | if on { C_IRQF } else { 0 };
    }

    /// Bring the flags up to virtual time `now`.
    pub fn advance(&mut self, now: u64) {
        let from = self.synced_ns;
        if now <= from {
            return;
        }
        self.synced_ns = now;
        if let Some(p) = self.period_ticks().filter(|_| !self.divider_reset()) {
            if Self::ticks32k(now) / p > Self::ticks32k(from) / p {
                self.cmos[REG_C] |= C_PF;
            }
        }
        if self.running() {
            let (s0, s1) = (self.secs_at(from), self.secs_at(now));
            if s1 > s0 {
                self.cmos[REG_C] |= C_UF;
                // Alarm: check each second that began in the interval (bounded; flags coalesce).
                let first = s0.saturating_add(1).max(s1.saturating_sub(2 * 86_400));
                if self.cmos[REG_C] & C_AF == 0 && (first..=s1).any(|t| self.alarm_matches(t)) {
                    self.cmos[REG_C] |= C_AF;
                }
            }
        }
        self.update_irqf();
    }

    /// Next virtual time at which the IRQ line could rise.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        let b = self.cmos[REG_B];
        if self.cmos[REG_C] & C_IRQF != 0 {
            return None; // the line is already up until register C is read
        }
        let mut best: Option<u64> = None;
        if b & B_PIE != 0 && !self.divider_reset() {
            if let Some(p) = self.period_ticks() {
                let k = Self::ticks32k(now) / p + 1;
                best = Some(Self::ns_of_ticks32k(k * p));
            }
        }
        if b & (B_UIE | B_AIE) != 0 && self.running() {
            let k = now.saturating_sub(self.epoch_ns) / NS + 1;
            let t = self.epoch_ns.saturating_add(k.saturating_mul(NS));
            best = Some(best.map_or(t, |x| x.min(t)));
        }
        best.map(|t| t.max(now.saturating_add(1)))
    }

    /// IRQ 8 level.
    pub fn irq(&self) -> bool {
        self.cmos[REG_C] & C_IRQF != 0
    }

    /// Port read (0x70/0x71).
    pub fn io_read(&mut self, port: u16, now: u64) -> u8 {
        if port & 1 == 0 {
            return 0xff; // the index register is write-only
        }
        self.advance(now);
        let i = self.index as usize;
        match i {
            0 | 2 | 4 | 6..=9 if self.running() => {
                let regs = self.time_regs(self.secs_at(now));
                regs.iter().find(|(r, _)| *r == i).map_or(0, |(_, v)| *v)
            }
            REG_A => {
                let into_sec = now.saturating_sub(self.epoch_ns) % NS;
                let uip = self.running() && into_sec >= NS - UIP_NS;
                (self.cmos[REG_A] & 0x7f) | if uip { 0x80 } else { 0 }
            }
            REG_C => {
                let v = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                v
            }
            REG_D => 0x80,
            _ => self.cmos[i],
        }
    }

    /// Port write (0x70 selects the register and the NMI mask, 0x71 writes it).
    pub fn io_write(&mut self, port: u16, val: u8, now: u64) {
        if port & 1 == 0 {
            self.index = val & 0x7f;
            self.nmi_disabled = val & 0x80 != 0;
            return;
        }
        self.advance(now);
        let i = self.index as usize;
        match i {
            0 | 2 | 4 | 6..=9 => {
                if !self.running() {
                    self.cmos[i] = val;
                } else {
                    // Setting one field of a running clock: keep the others and the second phase.
                    self.store_time(now);
                    self.cmos[i] = val;
                    let phase = now.saturating_sub(self.epoch_ns) % NS;
                    self.epoch_secs = self.load_time();
                    self.epoch_ns = now - phase;
                }
            }
            REG_A | REG_B => {
                let was_running = self.running();
                let was_reset = self.divider_reset();
                if was_running {
                    // Latch the time in the format it is being read in now.
                    self.store_time(now);
                }
                if i == REG_A {
                    self.cmos[REG_A] = val & 0x7f;
                } else {
                    // SET clears UIE. Register encodings follow B on every read while running.
                    self.cmos[REG_B] = if val & B_SET != 0 { val & !B_UIE } else { val };
                    self.update_irqf();
                }
                if !was_running && self.running() {
                    // The clock restarts from the (possibly rewritten) time registers. Releasing the
                    // divider reset puts the first update 500 ms later, as the datasheet says.
                    self.epoch_secs = self.load_time();
                    self.epoch_ns = if was_reset { now.saturating_sub(NS / 2) } else { now };
                }
            }
            REG_C | REG_D => {}
            _ => self.cmos[i] = val,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2023-11-14 22:13:20 UTC, a Tuesday.
    const T0: i64 = 1_700_000_000;

    fn read(r: &mut Rtc, idx: u8, now: u64) -> u8 {
        r.io_write(0x70, idx, now);
        r.io_read(0x71, now)
    }

    fn write(r: &mut Rtc, idx: u8, v: u8, now: u64) {
        r.io_write(0x70, idx, now);
        r.io_write(0x71, v, now);
    }

    #[test]
    fn calendar_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        assert_eq!(tm_from_unix(951_782_400), Tm { year: 2000, mon: 2, mday: 29, hour: 0, min: 0, sec: 0, wday: 3 });
        for t in [0i64, 951_782_400, T0, 4_102_444_799, -86_400] {
            assert_eq!(unix_from_tm(&tm_from_unix(t)), t);
        }
    }

    #[test]
    fn bcd_time_registers() {
        let mut r = Rtc::new(T0, 128 << 20);
        assert_eq!(read(&mut r, 0, 0), 0x20);
        assert_eq!(read(&mut r, 2, 0), 0x13);
        assert_eq!(read(&mut r, 4, 0), 0x22);
        assert_eq!(read(&mut r, 6, 0), 0x03);
        assert_eq!(read(&mut r, 7, 0), 0x14);
        assert_eq!(read(&mut r, 8, 0), 0x11);
        assert_eq!(read(&mut r, 9, 0), 0x23);
        assert_eq!(read(&mut r, 0x32, 0), 0x20);
        assert_eq!(read(&mut r, 0, 41 * NS + 5), 0x01);
        assert_eq!(read(&mut r, 2, 41 * NS + 5), 0x14);
    }

    #[test]
    fn binary_and_12_hour() {
        let mut r = Rtc::new(T0, 128 << 20);
        write(&mut r, 0x0b, B_DM_BINARY, 0);
        assert_eq!(read(&mut r, 4, 0), 0x80 | 10, "10 PM");
        assert_eq!(read(&mut r, 2, 0), 13);
        assert_eq!(read(&mut r, 9, 0), 23);
    }

    #[test]
    fn uip_before_update() {
        let mut r = Rtc::new(T0, 128 << 20);
        assert_eq!(read(&mut r, 0x0a, 0), 0x26);
        assert_eq!(read(&mut r, 0x0a, NS - UIP_NS - 1) & 0x80, 0);
        assert_eq!(read(&mut r, 0x0a, NS - UIP_NS) & 0x80, 0x80);
        assert_eq!(read(&mut r, 0x0d, 0), 0x80);
    }

    #[test]
    fn set_the_clock() {
        let mut r = Rtc::new(T0, 128 << 20);
        write(&mut r, 0x0b, 0x82, 500);
        // Frozen while SET.
        assert_eq!(read(&mut r, 0, 10 * NS), 0x20);
        write(&mut r, 0, 0x00, 10 * NS);
        write(&mut r, 2, 0x30, 10 * NS);
        write(&mut r, 4, 0x08, 10 * NS);
        write(&mut r, 0x0b, 0x02, 10 * NS);
        assert_eq!(read(&mut r, 4, 12 * NS), 0x08);
        assert_eq!(read(&mut r, 2, 12 * NS), 0x30);
        assert_eq!(read(&mut r, 0, 12 * NS), 0x02);
        assert_eq!(read(&mut r, 7, 12 * NS), 0x14);
    }

    #[test]
    fn linux_set_time_sequence() {
        // mc146818_set_time: SET, divider reset, write the fields, restore B, then restore A.
        let mut r = Rtc::new(T0, 128 << 20);
        write(&mut r, 0x0b, 0x82, 0);
        write(&mut r, 0x0a, 0x70 | 0x06, 0);
        for (idx, v) in [(0, 0x58), (2, 0x59), (4, 0x23), (7, 0x31), (8, 0x12), (9, 0x24)] {
            write(&mut r, idx, v, 0);
        }
        write(&mut r, 0x0b, 0x02, 0);
        // Still held by the divider reset.
        assert_eq!(read(&mut r, 0, 3 * NS), 0x58);
        write(&mut r, 0x0a, 0x26, 3 * NS);
        assert_eq!(read(&mut r, 0, 3 * NS + NS / 2 - 1), 0x58);
        assert_eq!(read(&mut r, 0, 3 * NS + NS / 2), 0x59);
        assert_eq!(read(&mut r, 0, 3 * NS + 3 * NS / 2), 0x00);
        assert_eq!(read(&mut r, 9, 3 * NS + 3 * NS / 2), 0x25);
        assert_eq!(read(&mut r, 8, 3 * NS + 3 * NS / 2), 0x01);
        assert_eq!(read(&mut r, 7, 3 * NS + 3 * NS / 2), 0x01);
        assert_eq!(read(&mut r, 6, 3 * NS + 3 * NS / 2), 0x04, "2025-01-01 is a Wednesday");
    }

    #[test]
    fn periodic_interrupt_and_reg_c() {
        let mut r = Rtc::new(T0, 128 << 20);
        write(&mut r, 0x0a, 0x26, 0); // 1024 Hz
        write(&mut r, 0x0b, 0x42, 0);
        let t = r.next_deadline(0).unwrap();
        assert_eq!(t, 976_563);
        r.advance(t - 1);
        assert!(!r.irq());
        r.advance(t);
        assert!(r.irq());
        assert_eq!(r.next_deadline(t), None);
        assert_eq!(read(&mut r, 0x0c, t), 0xc0);
        assert!(!r.irq());
        assert_eq!(read(&mut r, 0x0c, t), 0);
    }

    #[test]
    fn update_and_alarm_interrupts() {
        let mut r = Rtc::new(T0, 128 << 20);
        write(&mut r, 0x01, 0x22, 0); // alarm at hh:mm:22
        write(&mut r, 0x03, 0xff, 0);
        write(&mut r, 0x05, 0xff, 0);
        write(&mut r, 0x0b, 0x22, 0); // AIE
        assert_eq!(r.next_deadline(0), Some(NS));
        r.advance(NS);
        assert!(!r.irq());
        r.advance(2 * NS);
        assert!(r.irq());
        // PF is set too (periodic rate 1024 Hz runs even with PIE off).
        assert_eq!(read(&mut r, 0x0c, 2 * NS), 0xf0);
        write(&mut r, 0x0b, 0x12, 2 * NS); // UIE
        r.advance(3 * NS);
        assert_eq!(read(&mut r, 0x0c, 3 * NS) & 0xb0, 0x90);
    }

    #[test]
    fn memory_size_bytes() {
        let mut r = Rtc::new(T0, 32 << 20);
        let ext = read(&mut r, 0x30, 0) as u32 | (read(&mut r, 0x31, 0) as u32) << 8;
        assert_eq!(ext, 31 * 1024);
        let hi = read(&mut r, 0x34, 0) as u32 | (read(&mut r, 0x35, 0) as u32) << 8;
        assert_eq!(hi, (16 << 20) / 65536);
        let mut r = Rtc::new(T0, 1 << 30);
        assert_eq!(read(&mut r, 0x30, 0), 0xff);
        assert_eq!(read(&mut r, 0x31, 0), 0xff);
        // Plain CMOS memory.
        write(&mut r, 0x40, 0x5a, 0);
        assert_eq!(read(&mut r, 0x40, 0), 0x5a);
    }
}
