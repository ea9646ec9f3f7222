//! Kernel loaders of Ailuro.
//!
//! A loader writes a kernel (and whatever the boot protocol asks for: modules, command line, an
//! information structure) into [`GuestRam`](ailuro_bus::GuestRam) and returns the register state
//! the CPU must be entered with ([`BootEntry`]). The caller puts the CPU into the protocol's start
//! state (for multiboot: `Cpu::enter_flat_protected_mode(entry.eip)`, then EAX/EBX/ESI from the
//! entry).
//!
//! Implemented: multiboot v1 ([`load_multiboot`]), both ELF32 kernels and the "a.out kludge"
//! (header flag bit 16), modelled on QEMU's `-kernel` multiboot loader.

#![warn(missing_docs)]

mod multiboot;

pub use multiboot::{
    find_multiboot_header, is_elf, load_multiboot, BootEntry, BootError, Module, MultibootHeader, BOOTLOADER_NAME,
    MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH_LEN,
};
