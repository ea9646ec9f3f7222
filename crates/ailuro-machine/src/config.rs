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
    /// Kernel command line as the guest sees it (informational in recordings: the boot happens
    /// before recording starts and the string is in the snapshot's RAM). For a Linux kernel the
    /// `-append` text; for a multiboot kernel QEMU's "KERNEL_PATH APPEND" (see
    /// [`MachineConfig::guest_cmdline`]).
    pub cmdline: String,
    /// Exit instead of resetting when the guest asks for a reset (`-no-reboot`).
    pub no_reboot: bool,
}

/// Does `image` carry a Linux x86 boot-protocol header ("HdrS" at 0x202)?
pub fn is_linux_bzimage(image: &[u8]) -> bool {
    image.get(0x202..0x206) == Some(&b"HdrS"[..])
}

impl MachineConfig {
    /// The command line a kernel booted with `-kernel kernel_path -append append` sees, as QEMU
    /// builds it: a Linux kernel gets `append` alone; a multiboot kernel gets the kernel's path as
    /// given, a space, then `append` (QEMU formats "%s %s", so the space is there even without
    /// `-append`; kvm-unit-tests and other multiboot kernels skip the first word as argv[0]).
    pub fn guest_cmdline(kernel: &[u8], kernel_path: &str, append: &str) -> String {
        if is_linux_bzimage(kernel) {
            append.to_string()
        } else {
            format!("{kernel_path} {append}")
        }
    }

    /// Serialize for the snapshot header.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing a MachineConfig cannot fail")
    }

    /// Parse from a snapshot header.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiboot_command_line_starts_with_the_kernel_path() {
        let elf = b"\x7fELF....";
        assert_eq!(MachineConfig::guest_cmdline(elf, "dir/k.elf", "a=1 b"), "dir/k.elf a=1 b");
        assert_eq!(MachineConfig::guest_cmdline(elf, "k.elf", ""), "k.elf ");
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(MachineConfig::guest_cmdline(&bz, "bzImage", "console=ttyS0"), "console=ttyS0");
    }
}
