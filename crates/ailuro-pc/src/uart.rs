//! National Semiconductor 16550A UART (COM1 at 0x3f8, IRQ 4).
//!
//! Transmission is instantaneous: a byte written to THR goes straight to the output buffer (or, in
//! loopback mode, to the receive FIFO) and THR is empty again at once, so the THRE interrupt is
//! re-raised as the 8250 driver expects. Received bytes come from the board's host-input queue and
//! are moved into the receive FIFO whenever it has room. The character timeout interrupt fires four
//! character times (at the programmed baud rate) after the last receive-FIFO activity.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

const FIFO_SIZE: usize = 16;

// IER bits.
const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const IER_RLSI: u8 = 0x04;
const IER_MSI: u8 = 0x08;
// IIR values.
const IIR_NO_INT: u8 = 0x01;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_CTI: u8 = 0x0c;
// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const LSR_INT_ANY: u8 = 0x1e;
// MCR bits.
const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
// MSR bits.
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
// FCR bits.
const FCR_FE: u8 = 0x01;
const FCR_RFR: u8 = 0x02;
const FCR_XFR: u8 = 0x04;

/// A 16550A.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uart {
    divisor: u16,
    ier: u8,
    iir: u8,
    lcr: u8,
    mcr: u8,
    lsr: u8,
    msr: u8,
    scr: u8,
    fcr: u8,
    /// Receive FIFO (holds at most one byte with FIFOs disabled).
    rx: VecDeque<u8>,
    /// Receive FIFO trigger level.
    rx_trigger: u8,
    /// A THRE interrupt is pending (cleared by an IIR read that reports it or a THR write).
    thr_ipending: bool,
    /// A character timeout interrupt is pending.
    timeout_ipending: bool,
    /// Virtual time at which the character timeout fires, if armed.
    timeout_at: Option<u64>,
    /// Bytes transmitted and not yet collected by the board.
    tx_out: Vec<u8>,
}

impl Default for Uart {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart {
    /// Power-on state.
    pub fn new() -> Uart {
        Uart {
            divisor: 12,
            ier: 0,
            iir: IIR_NO_INT,
            lcr: 0,
            mcr: 0,
            lsr: LSR_THRE | LSR_TEMT,
            msr: MSR_DCD | MSR_DSR | MSR_CTS,
            scr: 0,
            fcr: 0,
            rx: VecDeque::new(),
            rx_trigger: 1,
            thr_ipending: false,
            timeout_ipending: false,
            timeout_at: None,
            tx_out: Vec::new(),
        }
    }

    /// Check invariants after deserialisation.
    pub(crate) fn valid(&self) -> bool {
        self.rx.len() <= FIFO_SIZE
    }

    /// Nanoseconds per character (10 bits) at the programmed rate (1.8432 MHz / 16 / divisor).
    fn char_ns(&self) -> u64 {
        let div = if self.divisor == 0 { 1 } else { self.divisor as u64 };
        10 * 1_000_000_000 * div / 115_200
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_FE != 0
    }

    /// How many bytes the receiver can take now.
    pub fn rx_room(&self) -> usize {
        if self.mcr & MCR_LOOP != 0 {
            return 0; // the external input is disconnected in loopback mode
        }
        if self.fifo_enabled() {
            FIFO_SIZE - self.rx.len()
        } else {
            usize::from(self.rx.is_empty())
        }
    }

    fn arm_timeout(&mut self, now: u64) {
        self.timeout_at = if self.fifo_enabled() && !self.rx.is_empty() {
            Some(now.saturating_add(4 * self.char_ns()))
        } else {
            None
        };
    }

    /// A byte arrives at the receiver.
    pub fn receive(&mut self, byte: u8, now: u64) {
        let cap = if self.fifo_enabled() { FIFO_SIZE } else { 1 };
        if self.rx.len() >= cap {
            // Overrun: the 16550A discards the new character (FIFO) / overwrites (non-FIFO).
            if !self.fifo_enabled() {
                self.rx.clear();
                self.rx.push_back(byte);
            }
            self.lsr |= LSR_OE;
        } else {
            self.rx.push_back(byte);
        }
        self.lsr |= LSR_DR;
        self.timeout_ipending = false;
        self.arm_timeout(now);
        self.update();
    }

    /// Let virtual time pass (fires the character timeout).
    pub fn advance(&mut self, now: u64) {
        if let Some(t) = self.timeout_at {
            if now >= t {
                self.timeout_at = None;
                if !self.rx.is_empty() {
                    self.timeout_ipending = true;
                    self.update();
                }
            }
        }
    }

    /// When the UART next changes state by itself (character timeout), if it could interrupt.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.ier & IER_RDI != 0 {
            self.timeout_at
        } else {
            None
        }
    }

    fn update(&mut self) {
        let id = if self.ier & IER_RLSI != 0 && self.lsr & LSR_INT_ANY != 0 {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && self.timeout_ipending {
            IIR_CTI
        } else if self.ier & IER_RDI != 0
            && self.lsr & LSR_DR != 0
            && (!self.fifo_enabled() || self.rx.len() >= self.rx_trigger as usize)
        {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thr_ipending {
            IIR_THRI
        } else if self.ier & IER_MSI != 0 && self.msr & 0x0f != 0 {
            IIR_MSI
        } else {
            IIR_NO_INT
        };
        self.iir = id | (self.iir & 0xf0);
    }

    /// The IRQ line as seen on the ISA bus: PCs gate the UART's interrupt output with OUT2.
    pub fn irq(&self) -> bool {
        self.iir & IIR_NO_INT == 0 && self.mcr & MCR_OUT2 != 0
    }

    /// Collect transmitted bytes.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.tx_out)
    }

    fn loopback_msr(&self) -> u8 {
        let m = self.mcr;
        (if m & MCR_RTS != 0 { MSR_CTS } else { 0 })
            | (if m & MCR_DTR != 0 { MSR_DSR } else { 0 })
            | (if m & MCR_OUT1 != 0 { MSR_RI } else { 0 })
            | (if m & MCR_OUT2 != 0 { MSR_DCD } else { 0 })
    }

    /// Register read (`reg` = port - base, 0..=7).
    pub fn read(&mut self, reg: u16, now: u64) -> u8 {
        match reg & 7 {
            0 => {
                if self.lcr & 0x80 != 0 {
                    return self.divisor as u8;
                }
                let v = self.rx.pop_front().unwrap_or(0);
                if self.rx.is_empty() {
                    self.lsr &= !(LSR_DR | LSR_BI);
                }
                self.timeout_ipending = false;
                self.arm_timeout(now);
                self.update();
                v
            }
            1 => {
                if self.lcr & 0x80 != 0 {
                    (self.divisor >> 8) as u8
                } else {
                    self.ier
                }
            }
            2 => {
                let v = self.iir;
                if v & 0x0f == IIR_THRI {
                    self.thr_ipending = false;
                    self.update();
                }
                v
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr;
                if self.lsr & (LSR_BI | LSR_OE) != 0 {
                    self.lsr &= !(LSR_BI | LSR_OE);
                    self.update();
                }
                v
            }
            6 => {
                if self.mcr & MCR_LOOP != 0 {
                    self.loopback_msr() | (self.msr & 0x0f)
                } else {
                    let v = self.msr;
                    self.msr &= 0xf0;
                    self.update();
                    v
                }
            }
            _ => self.scr,
        }
    }

    /// Register write.
    pub fn write(&mut self, reg: u16, val: u8, now: u64) {
        match reg & 7 {
            0 => {
                if self.lcr & 0x80 != 0 {
                    self.divisor = (self.divisor & 0xff00) | val as u16;
                    return;
                }
                self.thr_ipending = false;
                if self.mcr & MCR_LOOP != 0 {
                    self.receive(val, now);
                } else {
                    self.tx_out.push(val);
                }
                // The transmitter is infinitely fast: THR and the shift register are empty again.
                self.lsr |= LSR_THRE | LSR_TEMT;
                self.thr_ipending = true;
                self.update();
            }
            1 => {
                if self.lcr & 0x80 != 0 {
                    self.divisor = (self.divisor & 0x00ff) | ((val as u16) << 8);
                    return;
                }
                let changed = (self.ier ^ val) & 0x0f;
                self.ier = val & 0x0f;
                // Enabling the THRE interrupt while THR is empty raises it again, even if an IIR
                // read had cleared it (the 8250 driver's THRE test and Windows rely on this).
                if changed & IER_THRI != 0 {
                    self.thr_ipending = self.ier & IER_THRI != 0 && self.lsr & LSR_THRE != 0;
                }
                self.update();
            }
            2 => {
                let mut val = val;
                if val == self.fcr {
                    return;
                }
                if (val ^ self.fcr) & FCR_FE != 0 {
                    val |= FCR_RFR | FCR_XFR;
                }
                if val & FCR_RFR != 0 {
                    self.lsr &= !(LSR_DR | LSR_BI);
                    self.timeout_ipending = false;
                    self.timeout_at = None;
                    self.rx.clear();
                }
                if val & FCR_XFR != 0 {
                    self.lsr |= LSR_THRE | LSR_TEMT;
                    self.thr_ipending = true;
                }
                self.fcr = val & 0xc9;
                if self.fifo_enabled() {
                    self.iir |= 0xc0;
                    self.rx_trigger = [1, 4, 8, 14][(val >> 6) as usize];
                } else {
                    self.iir &= !0xc0;
                    self.rx_trigger = 1;
                }
                self.update();
            }
            3 => self.lcr = val,
            4 => {
                let old_loop = self.loopback_msr();
                self.mcr = val & 0x1f;
                if self.mcr & MCR_LOOP != 0 {
                    // Modem status deltas as the looped-back lines change (RI: trailing edge).
                    let new = self.loopback_msr();
                    let ch = old_loop ^ new;
                    let mut delta = 0;
                    if ch & MSR_CTS != 0 {
                        delta |= 0x01;
                    }
                    if ch & MSR_DSR != 0 {
                        delta |= 0x02;
                    }
                    if old_loop & MSR_RI != 0 && new & MSR_RI == 0 {
                        delta |= 0x04;
                    }
                    if ch & MSR_DCD != 0 {
                        delta |= 0x08;
                    }
                    self.msr |= delta;
                }
                self.update();
            }
            5 | 6 => {} // LSR/MSR are read-only (factory test writes ignored)
            _ => self.scr = val,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_values() {
        let mut u = Uart::new();
        assert_eq!(u.read(2, 0), 0x01);
        assert_eq!(u.read(5, 0), 0x60);
        assert_eq!(u.read(6, 0), 0xb0);
        assert!(!u.irq());
    }

    #[test]
    fn linux_autoconfig_probe() {
        let mut u = Uart::new();
        // IER scratch test.
        u.write(1, 0, 0);
        assert_eq!(u.read(1, 0) & 0x0f, 0);
        u.write(1, 0x0f, 0);
        assert_eq!(u.read(1, 0) & 0x0f, 0x0f);
        u.write(1, 0, 0);
        // Loopback test: MCR = LOOP | OUT2 | RTS gives CTS|DCD.
        u.write(4, 0x1a, 0);
        assert_eq!(u.read(6, 0) & 0xf0, 0x90);
        u.write(4, 0, 0);
        // FIFO detection: IIR bits 7:6 = 11 means 16550A.
        u.write(2, 0x01, 0);
        assert_eq!(u.read(2, 0) >> 6, 3);
        // EFR probe with LCR = 0xbf reads IIR, which is not 0.
        u.write(3, 0xbf, 0);
        assert_ne!(u.read(2, 0), 0);
        u.write(3, 0x03, 0);
    }

    #[test]
    fn divisor_latch() {
        let mut u = Uart::new();
        u.write(3, 0x80, 0);
        u.write(0, 0x01, 0);
        u.write(1, 0x00, 0);
        assert_eq!(u.read(0, 0), 1);
        assert_eq!(u.read(1, 0), 0);
        u.write(3, 0x03, 0);
        u.write(0, b'A', 0);
        assert_eq!(u.take_output(), b"A");
    }

    #[test]
    fn thre_interrupt_semantics() {
        let mut u = Uart::new();
        u.write(4, MCR_OUT2 | MCR_RTS | MCR_DTR, 0);
        u.write(1, IER_THRI, 0);
        assert!(u.irq(), "enabling THRI with THR empty interrupts");
        assert_eq!(u.read(2, 0) & 0x0f, IIR_THRI);
        assert!(!u.irq(), "reading IIR cleared it");
        u.write(0, b'x', 0);
        assert!(u.irq(), "THR empty again after the (instant) transmission");
        // Toggling IER re-raises.
        u.read(2, 0);
        u.write(1, 0, 0);
        u.write(1, IER_THRI, 0);
        assert!(u.irq());
        // OUT2 gates the line.
        u.write(4, 0, 0);
        assert!(!u.irq());
    }

    #[test]
    fn fifo_trigger_and_timeout() {
        let mut u = Uart::new();
        u.write(2, 0x81, 0); // FIFO, trigger 8
        u.write(4, MCR_OUT2, 0);
        u.write(1, IER_RDI, 0);
        for b in 0..5 {
            u.receive(b, 0);
        }
        assert!(!u.irq(), "below trigger level");
        let t = u.next_deadline().unwrap();
        assert_eq!(t, 4 * u.char_ns());
        u.advance(t - 1);
        assert!(!u.irq());
        u.advance(t);
        assert!(u.irq());
        assert_eq!(u.read(2, t) & 0x0f, IIR_CTI);
        let mut got = vec![];
        while u.read(5, t) & LSR_DR != 0 {
            got.push(u.read(0, t));
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(!u.irq());
        for b in 0..8 {
            u.receive(b, t);
        }
        assert_eq!(u.read(2, t) & 0x0f, IIR_RDI);
    }

    #[test]
    fn non_fifo_receive_one_at_a_time() {
        let mut u = Uart::new();
        assert_eq!(u.rx_room(), 1);
        u.receive(b'q', 0);
        assert_eq!(u.rx_room(), 0);
        u.write(1, IER_RDI, 0);
        u.write(4, MCR_OUT2, 0);
        assert!(u.irq());
        assert_eq!(u.read(0, 0), b'q');
        assert!(!u.irq());
        assert_eq!(u.read(5, 0) & LSR_DR, 0);
    }

    #[test]
    fn loopback_tx_to_rx() {
        let mut u = Uart::new();
        u.write(4, MCR_LOOP, 0);
        u.write(0, 0x5a, 0);
        assert!(u.take_output().is_empty());
        assert_eq!(u.read(5, 0) & LSR_DR, LSR_DR);
        assert_eq!(u.read(0, 0), 0x5a);
        assert_eq!(u.rx_room(), 0);
    }

    #[test]
    fn overrun_reported_in_lsr() {
        let mut u = Uart::new();
        u.write(4, MCR_LOOP, 0);
        u.write(0, 1, 0);
        u.write(0, 2, 0);
        assert_eq!(u.read(5, 0) & LSR_OE, LSR_OE);
        assert_eq!(u.read(5, 0) & LSR_OE, 0);
    }
}
