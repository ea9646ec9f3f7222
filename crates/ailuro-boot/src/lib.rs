//! Kernel loaders of Ailuro.
//!
//! A loader writes a kernel (and whatever the boot protocol asks for: modules, command line, an
//! information structure) into [`GuestRam`](ailuro_bus::GuestRam) and returns the register state
//! the CPU must be entered with ([`BootEntry`]). The caller puts the CPU into the protocol's start
//! state (for multiboot: `Cpu::enter_flat_protected_mode(entry.eip)`, then EAX/EBX/ESI from the
//! entry).
//!
//! Implemented: multiboot v1 ([`load_multiboot`]), both ELF32 kernels and the "a.out kludge"
//! (header flag bit 16), modelled on QEMU's `-kernel` multiboot loader; the Linux x86 boot protocol
//! ([`load_linux`], bzImage entered at its 32-bit entry point, see [`linux`]); and minimal ACPI
//! tables for a firmware-less PC ([`build_acpi_tables`], see [`acpi`] for what the board must
//! implement for them to be true).

#![warn(missing_docs)]

pub mod acpi;
pub mod linux;
mod multiboot;

pub use acpi::{build_acpi_tables, AcpiConfig, AcpiError};
pub use linux::{load_linux, parse_setup_header, set_boot_params_rsdp, LinuxBootEntry, LinuxBootError, SetupHeader};

pub use multiboot::{
    find_multiboot_header, is_elf, load_multiboot, BootEntry, BootError, Module, MultibootHeader, BOOTLOADER_NAME,
    MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH_LEN,
};
