//! The board's virtual clock: guest-visible time derived from the instruction count.

use serde::{Deserialize, Serialize};

/// Virtual nanoseconds per retired instruction while the CPU runs (a 1 GHz, 1-IPC guest).
pub const NS_PER_INSN: u64 = 1;

/// Maps instruction counts to virtual nanoseconds.
///
/// While the CPU executes, time advances with the instruction count; while it is halted the run
/// loop moves time forward to the next device deadline with [`VirtualClock::jump_to`]. Nothing here
/// reads host time, so a live run without host input is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualClock {
    base_ns: u64,
    base_icount: u64,
}

impl VirtualClock {
    /// A clock reading `ns` at instruction count `icount`.
    pub fn new(ns: u64, icount: u64) -> Self {
        Self { base_ns: ns, base_icount: icount }
    }

    /// Virtual time at instruction count `icount` (which must not precede the last jump).
    #[inline]
    pub fn now(&self, icount: u64) -> u64 {
        self.base_ns + icount.saturating_sub(self.base_icount) * NS_PER_INSN
    }

    /// First instruction count at which the clock reads at least `ns`, given the CPU runs.
    #[inline]
    pub fn icount_at(&self, ns: u64) -> u64 {
        if ns <= self.base_ns {
            self.base_icount
        } else {
            self.base_icount + (ns - self.base_ns).div_ceil(NS_PER_INSN)
        }
    }

    /// Let time pass without instructions (the CPU is halted): the clock reads `ns` at `icount`.
    pub fn jump_to(&mut self, ns: u64, icount: u64) {
        let now = self.now(icount);
        self.base_ns = ns.max(now);
        self.base_icount = icount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_instructions_and_jumps_when_halted() {
        let mut c = VirtualClock::new(0, 100);
        assert_eq!(c.now(100), 0);
        assert_eq!(c.now(150), 50 * NS_PER_INSN);
        assert_eq!(c.icount_at(50 * NS_PER_INSN), 150);
        c.jump_to(1_000_000, 150);
        assert_eq!(c.now(150), 1_000_000);
        assert_eq!(c.now(151), 1_000_000 + NS_PER_INSN);
        // Jumping backwards never makes time run backwards.
        c.jump_to(5, 160);
        assert_eq!(c.now(160), 1_000_000 + 10 * NS_PER_INSN);
    }
}
