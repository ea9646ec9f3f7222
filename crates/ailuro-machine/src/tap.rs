//! Console reconstruction: the guest's COM1 output, recovered from its outward port writes.
//!
//! A replay has no devices, but the guest still executes its `out` instructions to the UART. The
//! tap follows just enough 16550 state (DLAB, loopback) to know which writes to the data port are
//! transmitted characters, so a replay shows the same console as the recorded run.

use serde::{Deserialize, Serialize};

/// COM1's base port.
pub const COM1: u16 = 0x3f8;

/// The minimal UART state needed to tell transmitted bytes from divisor-latch writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleTap {
    lcr: u8,
    mcr: u8,
}

impl ConsoleTap {
    /// Observe an outward port write; returns the transmitted byte, if it was one.
    #[inline]
    pub fn observe_io_write(&mut self, port: u16, size: u8, value: u32) -> Option<u8> {
        if !(COM1..COM1 + 8).contains(&port) {
            return None;
        }
        // A wider write to a byte-wide device acts on the first port only (as the PC bus splits it
        // and the UART ignores the rest for our purposes).
        let _ = size;
        let v = value as u8;
        match port - COM1 {
            0 if self.lcr & 0x80 == 0 && self.mcr & 0x10 == 0 => return Some(v),
            3 => self.lcr = v,
            4 => self.mcr = v,
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisor_latch_and_loopback_writes_are_not_output() {
        let mut t = ConsoleTap::default();
        assert_eq!(t.observe_io_write(0x3f8, 1, b'a' as u32), Some(b'a'));
        t.observe_io_write(0x3fb, 1, 0x83); // DLAB on
        assert_eq!(t.observe_io_write(0x3f8, 1, 1), None);
        t.observe_io_write(0x3fb, 1, 0x03);
        assert_eq!(t.observe_io_write(0x3f8, 1, b'b' as u32), Some(b'b'));
        t.observe_io_write(0x3fc, 1, 0x10); // loopback
        assert_eq!(t.observe_io_write(0x3f8, 1, b'c' as u32), None);
        assert_eq!(t.observe_io_write(0x2f8, 1, b'd' as u32), None);
    }
}
