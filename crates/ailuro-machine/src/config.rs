//! The machine configuration: what a recording carries so a replay needs no options.

use serde::{Deserialize, Serialize};

/// Guest architecture of a machine (mirrors the tag in recording headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestArch {
    /// 32-bit x86 PC.
    I386,
    /// 64-bit x86 PC.
    X86_64,
    /// 32-bit ARM `virt` board.
    Arm,
}

impl GuestArch {
    /// The most guest RAM this architecture's machine has (PC: below the 3 GiB PCI hole). `-m`
    /// and recordings are held to it, so a forged snapshot cannot make the host allocate more.
    pub fn max_ram(self) -> u64 {
        3 << 30
    }

    /// The name used in binary names and messages (`i386`, `x86_64`, `arm`).
    pub fn name(self) -> &'static str {
        match self {
            GuestArch::I386 => "i386",
            GuestArch::X86_64 => "x86_64",
            GuestArch::Arm => "arm",
        }
    }
}

/// Everything about the machine that a replay must reproduce and a live run was started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfig {
    /// Guest architecture.
    pub arch: GuestArch,
    /// RAM size in bytes.
    pub ram_size: u64,
    /// Wall-clock time (Unix seconds) of the RTC at power-on.
    pub rtc_base_unix: i64,
    /// Kernel command line given with `-append` (informational in recordings).
    pub cmdline: String,
    /// Exit instead of resetting when the guest asks for a reset (`-no-reboot`).
    pub no_reboot: bool,
}

impl MachineConfig {
    /// Serialize for the snapshot header.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing a MachineConfig cannot fail")
    }

    /// Parse from a snapshot header.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
