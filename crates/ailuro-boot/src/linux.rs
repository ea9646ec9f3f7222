//! Linux x86 boot protocol loader (bzImage, 32-bit entry point), like QEMU's direct `-kernel` boot but
//! without BIOS or real-mode setup code: the CPU is started at the kernel's 32-bit entry point.
//!
//! Reference: the kernel's `Documentation/arch/x86/boot.rst` ("32-bit boot protocol") and
//! `arch/x86/include/uapi/asm/bootparam.h` (`struct boot_params`, `struct setup_header`).
//!
//! # Memory layout produced by [`load_linux`] (guest-physical, RAM must start at 0)
//!
//! | address | contents |
//! |---|---|
//! | `0x0400..0x0500` | BIOS data area: only the EBDA segment (0x40e = `0x9fc0`) and the base memory size in KiB (0x413 = 639) are written, so that Linux's `reserve_bios_regions` and the ACPI RSDP scan see a PC |
//! | [`LINUX_GDT_ADDR`] `0x6000` | boot GDT: null, null, `__BOOT_CS` (0x10, flat 4 GiB code), `__BOOT_DS` (0x18, flat 4 GiB data); limit 0x1f |
//! | [`LINUX_ZERO_PAGE_ADDR`] `0x7000` | the zero page (`struct boot_params`, 4 KiB) |
//! | [`LINUX_CMDLINE_ADDR`] `0x20000` | the NUL-terminated kernel command line |
//! | `0x100000` | the protected-mode kernel (the bzImage after its `setup_sects + 1` setup sectors) |
//! | top of RAM | the initrd, page aligned, as high as possible below `min(initrd_addr_max + 1, RAM end, 4 GiB)` |
//!
//! The kernel later decompresses itself to `max(align_up(0x100000, kernel_alignment), pref_address)`
//! and uses `init_size` bytes there (Debian's 686 kernel: 16 MiB .. about 32 MiB); the loader checks
//! that this range lies in RAM and that the initrd does not overlap it.
//!
//! The e820 map in the zero page is:
//!
//! | range | type |
//! |---|---|
//! | `0 .. 0x9fc00` | RAM (1) |
//! | `0x9fc00 .. 0xa0000` | reserved (2): EBDA |
//! | `0xe0000 .. 0x100000` | reserved (2): ACPI tables ([`build_acpi_tables`](crate::build_acpi_tables)) and the system ROM area |
//! | `0x100000 .. RAM end` | RAM (1) |
//!
//! # What the caller must put into the CPU
//!
//! The 32-bit boot protocol's entry state, with the values in the returned [`LinuxBootEntry`]:
//!
//! * protected mode (CR0.PE = 1), paging off, interrupts off (EFLAGS.IF = 0, and DF = 0);
//! * GDTR = `{ base: gdt_base, limit: gdt_limit }` (the GDT written by the loader);
//! * CS = 0x10 (`__BOOT_CS`), DS = ES = SS = 0x18 (`__BOOT_DS`), FS/GS 0x18 as well; all with base 0,
//!   limit 4 GiB, 32-bit; CS execute/read, the others read/write. `Cpu::enter_flat_protected_mode`
//!   sets exactly these selectors and hidden descriptors but leaves GDTR = 0/0; the protocol
//!   requires GDTR to point at a GDT holding these descriptors, so the caller must also load GDTR
//!   (Linux 6.1's `startup_32` happens to `lgdt` its own table before reloading any selector, but
//!   an exception or a different kernel would use ours);
//! * EIP = `entry.eip` (the load address 0x100000), ESI = `entry.esi` (zero-page address),
//!   EBP = EDI = EBX = 0 (`entry.eax`/`entry.ebx` are 0; set EAX, ECX, EDX, ESP to 0 too for
//!   determinism — the kernel builds its own stack, first in the zero page's `scratch` field);
//! * CR0 = PE | ET (no paging, no WP), CR4 = 0, EFER = 0, IDTR may be 0/0 (interrupts are off).
//!
//! Nothing else may be written to the loader's areas before the kernel starts; the zero page and the
//! GDT are ordinary RAM the kernel reads and writes early on. This exact state (set by a reset stub
//! that loads the GDT and far-jumps) boots Debian's `linux-image-6.1.0-50-686` under QEMU `-M pc`
//! with this loader's RAM image and [`build_acpi_tables`](crate::build_acpi_tables)'s tables; see
//! `tests/qemu_crosscheck.rs`.
//!
//! Determinism: the kernel's KASLR (on in Debian's config) draws entropy from RDRAND (if CPUID
//! advertises it), RDTSC and the i8254, all of which are deterministic in a live run and
//! recorded, so a KASLR boot replays exactly (the Linux tests boot without `nokaslr`).

use ailuro_bus::{GuestRam, RamError};

use crate::BootEntry;

/// Where [`load_linux`] writes the boot GDT.
pub const LINUX_GDT_ADDR: u64 = 0x6000;
/// GDT limit (4 descriptors of 8 bytes, minus one).
pub const LINUX_GDT_LIMIT: u16 = 4 * 8 - 1;
/// Where [`load_linux`] builds the zero page (`struct boot_params`).
pub const LINUX_ZERO_PAGE_ADDR: u64 = 0x7000;
/// Where [`load_linux`] writes the kernel command line.
pub const LINUX_CMDLINE_ADDR: u64 = 0x2_0000;
/// Where the protected-mode kernel is loaded (and entered).
pub const LINUX_KERNEL_ADDR: u64 = 0x10_0000;
/// `__BOOT_CS`: the code selector the 32-bit boot protocol requires.
pub const LINUX_BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`: the data selector the 32-bit boot protocol requires.
pub const LINUX_BOOT_DS: u16 = 0x18;
/// Oldest boot protocol version accepted (2.06: `cmdline_size` exists).
pub const LINUX_MIN_PROTOCOL: u16 = 0x0206;
/// `type_of_loader` written into the zero page (0xff: "undefined" boot loader).
pub const LINUX_TYPE_OF_LOADER: u8 = 0xff;

/// Offset of `boot_params.acpi_rsdp_addr` (u64) in the zero page.
pub const BOOT_PARAMS_ACPI_RSDP_ADDR: u64 = 0x070;
/// Offset of `boot_params.alt_mem_k` (u32).
pub const BOOT_PARAMS_ALT_MEM_K: u64 = 0x1e0;
/// Offset of `boot_params.e820_entries` (u8).
pub const BOOT_PARAMS_E820_ENTRIES: u64 = 0x1e8;
/// Offset of `boot_params.hdr` (`struct setup_header`), the same as in the bzImage file.
pub const BOOT_PARAMS_HDR: u64 = 0x1f1;
/// Offset of `boot_params.e820_table` (entries of 20 bytes: addr u64, size u64, type u32).
pub const BOOT_PARAMS_E820_TABLE: u64 = 0x2d0;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

// Setup header field offsets (in the file and in the zero page).
const OFF_SETUP_SECTS: usize = 0x1f1;
const OFF_SYSSIZE: usize = 0x1f4;
const OFF_BOOT_FLAG: usize = 0x1fe;
const OFF_JUMP: usize = 0x200;
const OFF_HEADER: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_TYPE_OF_LOADER: usize = 0x210;
const OFF_LOADFLAGS: usize = 0x211;
const OFF_CODE32_START: usize = 0x214;
const OFF_RAMDISK_IMAGE: usize = 0x218;
const OFF_RAMDISK_SIZE: usize = 0x21c;
const OFF_HEAP_END_PTR: usize = 0x224;
const OFF_EXT_LOADER_VER: usize = 0x226;
const OFF_EXT_LOADER_TYPE: usize = 0x227;
const OFF_CMD_LINE_PTR: usize = 0x228;
const OFF_INITRD_ADDR_MAX: usize = 0x22c;
const OFF_KERNEL_ALIGNMENT: usize = 0x230;
const OFF_RELOCATABLE: usize = 0x234;
const OFF_XLOADFLAGS: usize = 0x236;
const OFF_CMDLINE_SIZE: usize = 0x238;
const OFF_HARDWARE_SUBARCH: usize = 0x23c;
const OFF_SETUP_DATA: usize = 0x250;
const OFF_PREF_ADDRESS: usize = 0x258;
const OFF_INIT_SIZE: usize = 0x260;
/// End of `struct setup_header` in `struct boot_params` (the EDD MBR signature buffer follows).
const HDR_MAX_END: usize = 0x290;

const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS"
/// loadflags bit 0: the protected-mode code is loaded at 0x100000 (bzImage).
pub const LOADFLAG_LOADED_HIGH: u8 = 1 << 0;
/// loadflags bit 7: `heap_end_ptr` is valid.
pub const LOADFLAG_CAN_USE_HEAP: u8 = 1 << 7;
/// xloadflags bit 0: the kernel has the 64-bit entry point at 0x200 (an x86_64 kernel).
pub const XLF_KERNEL_64: u16 = 1 << 0;

const PAGE: u64 = 4096;
const SECTOR: usize = 512;
const LOW_MEM_END: u64 = 0x9_fc00;
const HOLE_START: u64 = 0xa_0000;
const ACPI_AREA_START: u64 = 0xe_0000;
const HIGH_MEM_START: u64 = 0x10_0000;
const FOUR_GIB: u64 = 1 << 32;
/// Value of `heap_end_ptr` (only used by the real-mode setup code, which is skipped; QEMU's value).
const HEAP_END_PTR: u16 = 0xfe00;
/// Default `initrd_addr_max` of protocols before 2.03 (unused: 2.06 is required).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// Why a Linux kernel could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinuxBootError {
    /// Guest RAM does not start at physical address 0.
    #[error("the Linux loader needs RAM at physical address 0, but RAM starts at {base:#x}")]
    RamBase {
        /// RAM base address.
        base: u64,
    },
    /// The image is not a bzImage with a boot-protocol setup header.
    #[error("not a Linux bzImage: {reason}")]
    NotBzImage {
        /// What is missing or wrong.
        reason: String,
    },
    /// The boot protocol version is older than [`LINUX_MIN_PROTOCOL`].
    #[error("Linux boot protocol {}.{:02} is too old (2.06 or newer required)", version >> 8, version & 0xff)]
    ProtocolTooOld {
        /// `version` field of the setup header.
        version: u16,
    },
    /// Part of the image lies beyond the end of the file.
    #[error("bzImage is truncated: {what} needs file bytes {offset:#x}..{end:#x}, but the file has {file_len:#x}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Start offset.
        offset: u64,
        /// End offset (exclusive).
        end: u64,
        /// File length.
        file_len: usize,
    },
    /// The kernel (loaded image or its decompression area) does not fit in RAM.
    #[error("the kernel needs RAM {start:#x}..{end:#x} ({what}), but RAM ends at {ram_end:#x}")]
    KernelDoesNotFit {
        /// What range.
        what: &'static str,
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// RAM end (exclusive, capped at 4 GiB).
        ram_end: u64,
    },
    /// The initrd does not fit between the kernel and its highest allowed address.
    #[error(
        "initrd of {size:#x} bytes does not fit in RAM between the kernel's end {lowest:#x} and {highest:#x} \
         (min of RAM end and initrd_addr_max + 1)"
    )]
    InitrdDoesNotFit {
        /// initrd size.
        size: u64,
        /// Lowest address it may start at (end of the kernel's area, page aligned).
        lowest: u64,
        /// Address it must end below.
        highest: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes, but this kernel accepts at most {max} (cmdline_size)")]
    CmdlineTooLong {
        /// Length in bytes (without the terminating NUL).
        len: usize,
        /// The kernel's `cmdline_size` (or the loader's own limit, if smaller).
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineHasNul,
    /// A RAM access failed (internal consistency error; the loader checks bounds first).
    #[error("guest RAM access failed: {0}")]
    Ram(#[from] RamError),
}

/// The interesting fields of a bzImage's setup header (see [`parse_setup_header`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Number of 512-byte setup sectors after the boot sector (0 already replaced by 4).
    pub setup_sects: u8,
    /// Size of the protected-mode code in 16-byte paragraphs.
    pub syssize: u32,
    /// Boot protocol version (e.g. 0x020f for 2.15).
    pub version: u16,
    /// loadflags.
    pub loadflags: u8,
    /// 32-bit entry point of the image as built (normally 0x100000).
    pub code32_start: u32,
    /// Highest address the initrd may occupy (inclusive).
    pub initrd_addr_max: u32,
    /// Physical alignment required for a relocatable kernel (0 when the protocol predates it).
    pub kernel_alignment: u32,
    /// Whether the kernel is relocatable.
    pub relocatable_kernel: bool,
    /// xloadflags (0 before protocol 2.12); [`XLF_KERNEL_64`] marks an x86_64 kernel.
    pub xloadflags: u16,
    /// Maximum command line length without the terminating NUL.
    pub cmdline_size: u32,
    /// Preferred load address = the address the kernel runs at if not relocated (0 before 2.10).
    pub pref_address: u64,
    /// Memory the kernel needs from its run address during decompression and init (0 before 2.10).
    pub init_size: u32,
    /// End offset of the setup header in the file (0x202 + byte at 0x201).
    pub header_end: usize,
}

impl SetupHeader {
    /// File offset of the protected-mode kernel: `(setup_sects + 1) * 512`.
    pub fn kernel_offset(&self) -> usize {
        (usize::from(self.setup_sects) + 1) * SECTOR
    }

    /// Physical address the kernel decompresses itself to and runs at when loaded at 0x100000.
    pub fn run_address(&self) -> u64 {
        if self.relocatable_kernel {
            let aligned = align_up(LINUX_KERNEL_ADDR, u64::from(self.kernel_alignment.max(1)));
            aligned.max(self.pref_address)
        } else if self.pref_address != 0 {
            self.pref_address
        } else {
            LINUX_KERNEL_ADDR
        }
    }
}

/// Register and descriptor state for entering a kernel loaded by [`load_linux`], plus where the
/// loader put things. See the [module documentation](self) for exactly what the caller must set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxBootEntry {
    /// EIP = 0x100000 (the 32-bit entry point), ESI = zero-page address, EAX = EBX = 0.
    pub entry: BootEntry,
    /// GDTR base: the loader's boot GDT with `__BOOT_CS` 0x10 and `__BOOT_DS` 0x18.
    pub gdt_base: u32,
    /// GDTR limit.
    pub gdt_limit: u16,
    /// Code segment selector to load (0x10).
    pub cs: u16,
    /// Data segment selector for DS, ES, SS (and FS, GS) (0x18).
    pub ds: u16,
    /// Address of the zero page (`struct boot_params`), also in `entry.esi`.
    pub zero_page: u32,
    /// Address of the NUL-terminated command line.
    pub cmdline: u32,
    /// Address and size of the initrd, if one was loaded.
    pub initrd: Option<(u32, u32)>,
    /// End (exclusive) of the memory the kernel occupies: its loaded image and its decompression
    /// area (`run address + init_size`).
    pub kernel_end: u64,
    /// The parsed setup header.
    pub header: SetupHeader,
}

fn rd8(b: &[u8], off: usize) -> u8 {
    b[off]
}
fn rd16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from(rd32(b, off)) | (u64::from(rd32(b, off + 4)) << 32)
}
fn wr16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Parse and sanity-check the setup header of a bzImage. Accepts boot protocol 2.06 and newer with
/// `LOADED_HIGH` set (a bzImage); checks that the setup sectors and `syssize` lie inside the file.
pub fn parse_setup_header(image: &[u8]) -> Result<SetupHeader, LinuxBootError> {
    let not_bz = |reason: &str| LinuxBootError::NotBzImage { reason: reason.to_string() };
    if image.len() < OFF_HEADER + 6 {
        return Err(not_bz("file too short for a setup header"));
    }
    if rd16(image, OFF_BOOT_FLAG) != BOOT_FLAG_MAGIC {
        return Err(not_bz("no boot sector signature 0xaa55 at offset 0x1fe"));
    }
    if rd32(image, OFF_HEADER) != HDRS_MAGIC {
        return Err(not_bz("no \"HdrS\" magic at offset 0x202 (pre-2.00 zImage or not a kernel)"));
    }
    let version = rd16(image, OFF_VERSION);
    if version < LINUX_MIN_PROTOCOL {
        return Err(LinuxBootError::ProtocolTooOld { version });
    }
    let header_end = OFF_HEADER + usize::from(image[OFF_JUMP + 1]);
    // 2.06 has fields up to cmdline_size (ends at 0x23c).
    if header_end < OFF_CMDLINE_SIZE + 4 {
        return Err(not_bz("setup header too short for its protocol version (jump byte at 0x201)"));
    }
    let header_end = header_end.min(HDR_MAX_END);
    if image.len() < header_end {
        return Err(LinuxBootError::Truncated {
            what: "setup header",
            offset: OFF_SETUP_SECTS as u64,
            end: header_end as u64,
            file_len: image.len(),
        });
    }
    let loadflags = rd8(image, OFF_LOADFLAGS);
    if loadflags & LOADFLAG_LOADED_HIGH == 0 {
        return Err(not_bz("loadflags lack LOADED_HIGH: a zImage, not a bzImage"));
    }
    let setup_sects = match rd8(image, OFF_SETUP_SECTS) {
        0 => 4,
        n => n,
    };
    let has = |off: usize, len: usize| off + len <= header_end;
    let relocatable_kernel = has(OFF_RELOCATABLE, 1) && rd8(image, OFF_RELOCATABLE) != 0;
    let kernel_alignment = if has(OFF_KERNEL_ALIGNMENT, 4) { rd32(image, OFF_KERNEL_ALIGNMENT) } else { 0 };
    if relocatable_kernel && !kernel_alignment.is_power_of_two() {
        return Err(not_bz(&format!("relocatable kernel with invalid kernel_alignment {kernel_alignment:#x}")));
    }
    let initrd_addr_max = rd32(image, OFF_INITRD_ADDR_MAX);
    let hdr = SetupHeader {
        setup_sects,
        syssize: rd32(image, OFF_SYSSIZE),
        version,
        loadflags,
        code32_start: rd32(image, OFF_CODE32_START),
        initrd_addr_max: if initrd_addr_max == 0 { DEFAULT_INITRD_ADDR_MAX as u32 } else { initrd_addr_max },
        kernel_alignment,
        relocatable_kernel,
        xloadflags: if version >= 0x020c && has(OFF_XLOADFLAGS, 2) { rd16(image, OFF_XLOADFLAGS) } else { 0 },
        cmdline_size: rd32(image, OFF_CMDLINE_SIZE),
        pref_address: if version >= 0x020a && has(OFF_PREF_ADDRESS, 8) { rd64(image, OFF_PREF_ADDRESS) } else { 0 },
        init_size: if version >= 0x020a && has(OFF_INIT_SIZE, 4) { rd32(image, OFF_INIT_SIZE) } else { 0 },
        header_end,
    };
    let kofs = hdr.kernel_offset();
    if kofs >= image.len() {
        return Err(LinuxBootError::Truncated {
            what: "setup sectors (setup_sects) and protected-mode kernel",
            offset: 0,
            end: kofs as u64,
            file_len: image.len(),
        });
    }
    if hdr.syssize == 0 {
        return Err(not_bz("syssize is 0 (no protected-mode kernel)"));
    }
    let sys_end = kofs as u64 + u64::from(hdr.syssize) * 16;
    if sys_end > image.len() as u64 {
        return Err(LinuxBootError::Truncated {
            what: "protected-mode kernel (syssize)",
            offset: kofs as u64,
            end: sys_end,
            file_len: image.len(),
        });
    }
    Ok(hdr)
}

/// Load a bzImage for the 32-bit boot protocol: the protected-mode kernel at 0x100000, the initrd
/// at the top of RAM, the command line, a boot GDT and the zero page with a copy of the setup header
/// and an e820 map (layout in the [module documentation](self)).
///
/// Never panics on malformed input. On error RAM may have been partly written.
pub fn load_linux(
    ram: &mut GuestRam,
    bzimage: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LinuxBootEntry, LinuxBootError> {
    if ram.base() != 0 {
        return Err(LinuxBootError::RamBase { base: ram.base() });
    }
    let hdr = parse_setup_header(bzimage)?;
    let ram_end = ram.end().min(FOUR_GIB);

    // The kernel: the loaded image and the area it decompresses into.
    let kernel_file = &bzimage[hdr.kernel_offset()..];
    let load_end = LINUX_KERNEL_ADDR + kernel_file.len() as u64;
    if load_end > ram_end {
        return Err(LinuxBootError::KernelDoesNotFit {
            what: "protected-mode image loaded at 0x100000",
            start: LINUX_KERNEL_ADDR,
            end: load_end,
            ram_end,
        });
    }
    let run = hdr.run_address();
    let run_end = run.saturating_add(u64::from(hdr.init_size));
    if run_end > ram_end {
        return Err(LinuxBootError::KernelDoesNotFit {
            what: "decompressed kernel: run address + init_size",
            start: run,
            end: run_end,
            ram_end,
        });
    }
    let kernel_end = load_end.max(run_end);

    // The command line.
    if cmdline.as_bytes().contains(&0) {
        return Err(LinuxBootError::CmdlineHasNul);
    }
    let max = (hdr.cmdline_size as usize).min((LOW_MEM_END - LINUX_CMDLINE_ADDR - 1) as usize);
    if cmdline.len() > max {
        return Err(LinuxBootError::CmdlineTooLong { len: cmdline.len(), max });
    }

    // The initrd: page aligned, as high as allowed.
    let initrd_range = match initrd {
        Some(data) if !data.is_empty() => {
            let size = data.len() as u64;
            let lowest = align_up(kernel_end, PAGE);
            let highest = ram_end.min(u64::from(hdr.initrd_addr_max) + 1);
            let fits = highest >= size && ((highest - size) & !(PAGE - 1)) >= lowest;
            if !fits {
                return Err(LinuxBootError::InitrdDoesNotFit { size, lowest, highest });
            }
            Some(((highest - size) & !(PAGE - 1), size))
        }
        _ => None,
    };

    // Everything checked: write.
    ram.write(LINUX_KERNEL_ADDR, kernel_file)?;
    if let (Some((addr, _)), Some(data)) = (initrd_range, initrd) {
        ram.write(addr, data)?;
    }
    let mut cl = Vec::with_capacity(cmdline.len() + 1);
    cl.extend_from_slice(cmdline.as_bytes());
    cl.push(0);
    ram.write(LINUX_CMDLINE_ADDR, &cl)?;

    // Boot GDT: null, null, code 0x10, data 0x18 (flat, 4 KiB granular, 32-bit).
    let mut gdt = [0u8; 32];
    gdt[16..24].copy_from_slice(&0x00cf_9a00_0000_ffffu64.to_le_bytes());
    gdt[24..32].copy_from_slice(&0x00cf_9200_0000_ffffu64.to_le_bytes());
    ram.write(LINUX_GDT_ADDR, &gdt)?;

    // BIOS data area: EBDA segment and base memory size, as a PC BIOS leaves them.
    ram.write(0x40e, &((LOW_MEM_END >> 4) as u16).to_le_bytes())?;
    ram.write(0x413, &((LOW_MEM_END >> 10) as u16).to_le_bytes())?;

    ram.write(LINUX_ZERO_PAGE_ADDR, &build_zero_page(bzimage, &hdr, ram.end(), initrd_range))?;

    Ok(LinuxBootEntry {
        entry: BootEntry { eip: LINUX_KERNEL_ADDR as u32, eax: 0, ebx: 0, esi: LINUX_ZERO_PAGE_ADDR as u32 },
        gdt_base: LINUX_GDT_ADDR as u32,
        gdt_limit: LINUX_GDT_LIMIT,
        cs: LINUX_BOOT_CS,
        ds: LINUX_BOOT_DS,
        zero_page: LINUX_ZERO_PAGE_ADDR as u32,
        cmdline: LINUX_CMDLINE_ADDR as u32,
        initrd: initrd_range.map(|(a, s)| (a as u32, s as u32)),
        kernel_end,
        header: hdr,
    })
}

/// The e820 map given to the kernel for RAM ending at `ram_end`.
pub fn linux_e820_map(ram_end: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, LOW_MEM_END, E820_RAM),
        (LOW_MEM_END, HOLE_START - LOW_MEM_END, E820_RESERVED),
        (ACPI_AREA_START, HIGH_MEM_START - ACPI_AREA_START, E820_RESERVED),
    ];
    if ram_end > HIGH_MEM_START {
        map.push((HIGH_MEM_START, ram_end - HIGH_MEM_START, E820_RAM));
    }
    map
}

fn build_zero_page(bzimage: &[u8], hdr: &SetupHeader, ram_end: u64, initrd: Option<(u64, u64)>) -> Vec<u8> {
    let mut zp = vec![0u8; PAGE as usize];
    // screen_info stays zero (no VGA: orig_video_isVGA = 0, no lines/columns) except ext_mem_k.
    let ext_k = ram_end.saturating_sub(HIGH_MEM_START) / 1024;
    wr16(&mut zp, 0x002, ext_k.min(0xfc00) as u16);
    wr32(&mut zp, BOOT_PARAMS_ALT_MEM_K as usize, ext_k.min(u64::from(u32::MAX)) as u32);

    // The setup header, copied from the image, then the loader's fields.
    zp[OFF_SETUP_SECTS..hdr.header_end].copy_from_slice(&bzimage[OFF_SETUP_SECTS..hdr.header_end]);
    zp[OFF_SETUP_SECTS] = hdr.setup_sects;
    zp[OFF_TYPE_OF_LOADER] = LINUX_TYPE_OF_LOADER;
    zp[OFF_LOADFLAGS] = hdr.loadflags | LOADFLAG_CAN_USE_HEAP;
    wr32(&mut zp, OFF_CODE32_START, LINUX_KERNEL_ADDR as u32);
    let (rd_addr, rd_size) = initrd.unwrap_or((0, 0));
    wr32(&mut zp, OFF_RAMDISK_IMAGE, rd_addr as u32);
    wr32(&mut zp, OFF_RAMDISK_SIZE, rd_size as u32);
    wr16(&mut zp, OFF_HEAP_END_PTR, HEAP_END_PTR);
    zp[OFF_EXT_LOADER_VER] = 0;
    zp[OFF_EXT_LOADER_TYPE] = 0;
    wr32(&mut zp, OFF_CMD_LINE_PTR, LINUX_CMDLINE_ADDR as u32);
    if hdr.header_end >= OFF_HARDWARE_SUBARCH + 4 {
        wr32(&mut zp, OFF_HARDWARE_SUBARCH, 0); // X86_SUBARCH_PC
        wr64(&mut zp, OFF_HARDWARE_SUBARCH + 4, 0);
    }
    if hdr.header_end >= OFF_SETUP_DATA + 8 {
        wr64(&mut zp, OFF_SETUP_DATA, 0);
    }

    let map = linux_e820_map(ram_end);
    zp[BOOT_PARAMS_E820_ENTRIES as usize] = map.len() as u8;
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let e = BOOT_PARAMS_E820_TABLE as usize + 20 * i;
        wr64(&mut zp, e, *addr);
        wr64(&mut zp, e + 8, *size);
        wr32(&mut zp, e + 16, *kind);
    }
    zp
}

/// Store the RSDP address in `boot_params.acpi_rsdp_addr` of the zero page at `zero_page`, so the
/// kernel need not scan for it (optional: [`build_acpi_tables`](crate::build_acpi_tables) puts the
/// RSDP where the scan finds it).
pub fn set_boot_params_rsdp(ram: &mut GuestRam, zero_page: u32, rsdp: u64) -> Result<(), RamError> {
    ram.write_u64(u64::from(zero_page) + BOOT_PARAMS_ACPI_RSDP_ADDR, rsdp)
}

#[cfg(test)]
mod tests;
