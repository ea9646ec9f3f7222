//! Multiboot v1 loader (ELF32 kernels and the a.out kludge), modelled on QEMU's `-kernel` loader.
//!
//! Memory layout produced by [`load_multiboot`] (all guest-physical, RAM starts at 0):
//!
//! * the kernel image at the addresses it asks for (ELF: `p_paddr` of each `PT_LOAD` segment, bss
//!   zero-filled; a.out kludge: `load_addr..load_end_addr` from the file, zero up to `bss_end_addr`);
//! * each module's data, page aligned, one after the other after the end of the kernel image
//!   (modules are always page aligned, which satisfies header flag bit 0);
//! * one page-aligned block after the last module holding the multiboot information structure, the
//!   module list, the memory map and the strings (command line, boot loader name, module names).
//!
//! Nothing is placed in the legacy hole `0x9fc00..0x100000` (EBDA, VGA, option and system ROM);
//! kernel segments that touch `0xa0000..0x100000` are rejected because that range is not RAM on a PC.
//! QEMU puts the information structure at a fixed low address instead; kernels only see the pointer in
//! EBX, so the difference is invisible to a correct kernel.

use ailuro_bus::{GuestRam, RamError};

/// Magic value at the start of the multiboot header in the kernel image.
pub const MULTIBOOT_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Value in EAX at kernel entry telling the kernel it was loaded by a multiboot loader.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The multiboot header must lie entirely within this many bytes at the start of the image.
pub const MULTIBOOT_SEARCH_LEN: usize = 8192;
/// The `boot_loader_name` string given to the kernel.
pub const BOOTLOADER_NAME: &str = "ailuro";

/// Header flag bit 0: align modules on page (4 KiB) boundaries.
const HDR_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag bit 1: provide memory information.
const HDR_MEMORY_INFO: u32 = 1 << 1;
/// Header flag bit 2: provide video mode information (ignored, like QEMU does).
const HDR_VIDEO_MODE: u32 = 1 << 2;
/// Header flag bit 16: the address fields of the header are valid (the "a.out kludge").
const HDR_AOUT_KLUDGE: u32 = 1 << 16;
/// Required-feature bits (low 16) that this loader can satisfy or safely ignore.
const HDR_SUPPORTED_REQUIRED: u32 = HDR_PAGE_ALIGN | HDR_MEMORY_INFO | HDR_VIDEO_MODE;

/// Info flag: `mem_lower`/`mem_upper` valid.
const MBI_MEMORY: u32 = 1 << 0;
/// Info flag: `boot_device` valid.
const MBI_BOOT_DEVICE: u32 = 1 << 1;
/// Info flag: `cmdline` valid.
const MBI_CMDLINE: u32 = 1 << 2;
/// Info flag: `mods_count`/`mods_addr` valid.
const MBI_MODS: u32 = 1 << 3;
/// Info flag: `mmap_length`/`mmap_addr` valid.
const MBI_MMAP: u32 = 1 << 6;
/// Info flag: `boot_loader_name` valid.
const MBI_LOADER_NAME: u32 = 1 << 9;

/// Size reserved for the multiboot information structure (the v1 structure is 116 bytes).
const MBI_SIZE: u64 = 0x80;
/// Size of one module list entry (`mod_start`, `mod_end`, `string`, reserved).
const MOD_ENTRY_SIZE: u64 = 16;
/// Size of one memory map entry including its leading `size` field.
const MMAP_ENTRY_SIZE: u64 = 24;

const PAGE: u64 = 4096;
/// End of conventional memory usable by the loader (start of the EBDA).
const LOW_MEM_END: u64 = 0x9_fc00;
/// Start of the legacy hole (VGA memory, option ROMs, system BIOS) that is not RAM on a PC.
const HOLE_START: u64 = 0xa_0000;
/// Start of extended memory.
const HIGH_MEM_START: u64 = 0x10_0000;
/// Multiboot v1 addresses are 32 bits.
const FOUR_GIB: u64 = 1 << 32;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS32: u8 = 1;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const ELF32_EHDR_SIZE: usize = 52;
const ELF32_PHDR_SIZE: usize = 32;

/// A multiboot module: a blob placed in guest RAM and listed in the information structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's string (its "command line"); conventionally the file name plus arguments.
    pub name: String,
    /// The module's contents.
    pub data: Vec<u8>,
}

/// Register state at kernel entry. The CPU starts in flat 32-bit protected mode, paging off,
/// interrupts off, at `eip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// Entry point (physical address).
    pub eip: u32,
    /// EAX: [`MULTIBOOT_BOOTLOADER_MAGIC`] for multiboot.
    pub eax: u32,
    /// EBX: physical address of the multiboot information structure.
    pub ebx: u32,
    /// ESI: unused by multiboot (0); the Linux boot protocol passes `boot_params` here.
    pub esi: u32,
}

/// Why a kernel could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// Guest RAM does not start at physical address 0.
    #[error("multiboot needs RAM at physical address 0, but RAM starts at {base:#x}")]
    RamBase {
        /// RAM base address.
        base: u64,
    },
    /// Guest RAM does not extend beyond 1 MiB.
    #[error("multiboot needs RAM above 1 MiB, but RAM ends at {end:#x}")]
    RamTooSmall {
        /// RAM end address (exclusive).
        end: u64,
    },
    /// No multiboot header magic in the first 8 KiB of the image.
    #[error("no multiboot header (magic 0x1badb002) in the first {searched} bytes of the kernel image")]
    NoHeader {
        /// Number of bytes searched.
        searched: usize,
    },
    /// A multiboot header magic was found but no header with a valid checksum.
    #[error(
        "bad multiboot header checksum at offset {offset:#x}: magic {magic:#x} + flags {flags:#x} + checksum \
         {checksum:#x} != 0"
    )]
    BadChecksum {
        /// File offset of the (first) header found.
        offset: usize,
        /// Magic field.
        magic: u32,
        /// Flags field.
        flags: u32,
        /// Checksum field.
        checksum: u32,
    },
    /// The header requires features (low 16 flag bits) this loader cannot provide.
    #[error("multiboot header flags {flags:#x} require unsupported features (bits {unsupported:#x})")]
    UnsupportedFlags {
        /// All header flags.
        flags: u32,
        /// The unsupported required bits.
        unsupported: u32,
    },
    /// The a.out-kludge address fields run past the end of the file.
    #[error(
        "multiboot header at offset {offset:#x} has flag bit 16 set but its address fields run past the end of \
         the file"
    )]
    HeaderTruncated {
        /// File offset of the header.
        offset: usize,
    },
    /// The a.out-kludge address fields are inconsistent.
    #[error("invalid multiboot a.out-kludge addresses: {reason}")]
    BadAoutLayout {
        /// What is wrong.
        reason: String,
    },
    /// Flag bit 16 is clear and the image is not ELF.
    #[error("kernel image is not an ELF file and its multiboot header does not set flag bit 16 (a.out kludge)")]
    NotElf,
    /// The ELF file is not 32-bit little-endian.
    #[error("ELF kernel is not a 32-bit little-endian image (EI_CLASS {class}, EI_DATA {data})")]
    ElfNot32 {
        /// `e_ident[EI_CLASS]`.
        class: u8,
        /// `e_ident[EI_DATA]`.
        data: u8,
    },
    /// The ELF machine is not i386.
    #[error("ELF kernel is for machine {machine} (e_machine), not i386 (3)")]
    ElfNotI386 {
        /// `e_machine`.
        machine: u16,
    },
    /// The ELF type is not `ET_EXEC`.
    #[error("ELF kernel is of type {elf_type} (e_type), not an executable (ET_EXEC = 2)")]
    ElfNotExecutable {
        /// `e_type`.
        elf_type: u16,
    },
    /// A structure or segment lies (partly) beyond the end of the file.
    #[error(
        "kernel image is truncated: {what} at file offset {offset:#x}+{len:#x} is beyond the file end ({file_len:#x})"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// File offset.
        offset: u64,
        /// Length.
        len: u64,
        /// File length.
        file_len: usize,
    },
    /// A program header is malformed.
    #[error("ELF program header {index}: {reason}")]
    BadSegment {
        /// Program header index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The image has nothing to load.
    #[error("kernel image has no loadable segments")]
    NoLoadableSegments,
    /// A segment does not lie inside RAM.
    #[error("kernel segment {index} at {paddr:#x}+{size:#x} lies outside RAM (0..{ram_end:#x})")]
    SegmentOutsideRam {
        /// Segment index (program header index; 0 for the a.out kludge).
        index: usize,
        /// Physical load address.
        paddr: u64,
        /// Size in memory.
        size: u64,
        /// RAM end (exclusive, capped at 4 GiB).
        ram_end: u64,
    },
    /// A segment lies in the PC legacy hole.
    #[error("kernel segment {index} at {paddr:#x}+{size:#x} overlaps the legacy hole 0xa0000..0x100000 (not RAM)")]
    SegmentInHole {
        /// Segment index.
        index: usize,
        /// Physical load address.
        paddr: u64,
        /// Size in memory.
        size: u64,
    },
    /// Two segments overlap in physical memory.
    #[error(
        "kernel segments {first} ({first_addr:#x}+{first_size:#x}) and {second} ({second_addr:#x}+{second_size:#x}) \
         overlap"
    )]
    SegmentsOverlap {
        /// Index of the lower segment.
        first: usize,
        /// Its address.
        first_addr: u64,
        /// Its size.
        first_size: u64,
        /// Index of the higher segment.
        second: usize,
        /// Its address.
        second_addr: u64,
        /// Its size.
        second_size: u64,
    },
    /// The entry point is not inside RAM.
    #[error("kernel entry point {entry:#x} is outside RAM (0..{ram_end:#x})")]
    EntryOutsideRam {
        /// Entry point.
        entry: u64,
        /// RAM end (exclusive, capped at 4 GiB).
        ram_end: u64,
    },
    /// A module or the boot information does not fit in RAM after the kernel.
    #[error("{what} ({len:#x} bytes) does not fit in RAM after the kernel image (RAM ends at {ram_end:#x})")]
    DoesNotFit {
        /// What did not fit.
        what: String,
        /// Its size.
        len: u64,
        /// RAM end (exclusive, capped at 4 GiB).
        ram_end: u64,
    },
    /// A RAM access failed (internal consistency error; the loader checks bounds first).
    #[error("guest RAM access failed: {0}")]
    Ram(#[from] RamError),
}

/// A multiboot v1 header found in a kernel image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the header.
    pub offset: usize,
    /// Header flags.
    pub flags: u32,
    /// a.out-kludge fields (`header_addr`, `load_addr`, `load_end_addr`, `bss_end_addr`,
    /// `entry_addr`) if flag bit 16 is set.
    pub aout: Option<[u32; 5]>,
}

/// Whether `bytes` starts with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4] == ELF_MAGIC
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Find the multiboot v1 header: the first 4-byte-aligned magic with a valid checksum that lies
/// entirely within the first [`MULTIBOOT_SEARCH_LEN`] bytes. Does not validate the flags.
pub fn find_multiboot_header(kernel: &[u8]) -> Result<MultibootHeader, BootError> {
    let window = kernel.len().min(MULTIBOOT_SEARCH_LEN);
    let mut first_bad = None;
    let mut off = 0;
    while off + 12 <= window {
        let magic = le32(kernel, off);
        if magic == MULTIBOOT_HEADER_MAGIC {
            let flags = le32(kernel, off + 4);
            let checksum = le32(kernel, off + 8);
            if magic.wrapping_add(flags).wrapping_add(checksum) == 0 {
                let aout = if flags & HDR_AOUT_KLUDGE != 0 {
                    if off + 32 > kernel.len() {
                        return Err(BootError::HeaderTruncated { offset: off });
                    }
                    let f = |i: usize| le32(kernel, off + 12 + 4 * i);
                    Some([f(0), f(1), f(2), f(3), f(4)])
                } else {
                    None
                };
                return Ok(MultibootHeader { offset: off, flags, aout });
            }
            first_bad.get_or_insert(BootError::BadChecksum { offset: off, magic, flags, checksum });
        }
        off += 4;
    }
    Err(first_bad.unwrap_or(BootError::NoHeader { searched: window }))
}

/// One contiguous piece of the kernel image in physical memory.
struct Segment {
    index: usize,
    paddr: u64,
    file_offset: u64,
    filesz: u64,
    memsz: u64,
}

fn check_file_range(kernel: &[u8], what: impl FnOnce() -> String, offset: u64, len: u64) -> Result<(), BootError> {
    if offset.checked_add(len).is_none_or(|end| end > kernel.len() as u64) {
        return Err(BootError::Truncated { what: what(), offset, len, file_len: kernel.len() });
    }
    Ok(())
}

/// Parse an ELF32 i386 executable: its loadable segments and its (physical) entry point.
fn parse_elf(kernel: &[u8]) -> Result<(Vec<Segment>, u64), BootError> {
    if !is_elf(kernel) {
        return Err(BootError::NotElf);
    }
    check_file_range(kernel, || "ELF header".into(), 0, ELF32_EHDR_SIZE as u64)?;
    let (class, data) = (kernel[4], kernel[5]);
    if class != ELFCLASS32 || data != ELFDATA2LSB {
        return Err(BootError::ElfNot32 { class, data });
    }
    let elf_type = le16(kernel, 16);
    let machine = le16(kernel, 18);
    if machine != EM_386 {
        return Err(BootError::ElfNotI386 { machine });
    }
    if elf_type != ET_EXEC {
        return Err(BootError::ElfNotExecutable { elf_type });
    }
    let e_entry = u64::from(le32(kernel, 24));
    let phoff = u64::from(le32(kernel, 28));
    let phentsize = usize::from(le16(kernel, 42));
    let phnum = usize::from(le16(kernel, 44));
    if phnum > 0 && phentsize < ELF32_PHDR_SIZE {
        return Err(BootError::BadSegment {
            index: 0,
            reason: format!("program header entry size {phentsize} is smaller than {ELF32_PHDR_SIZE}"),
        });
    }
    check_file_range(kernel, || "program header table".into(), phoff, (phentsize * phnum) as u64)?;

    let mut segments = Vec::new();
    let mut entry = e_entry;
    for index in 0..phnum {
        let ph = phoff as usize + index * phentsize;
        let p_type = le32(kernel, ph);
        if p_type != PT_LOAD {
            continue;
        }
        let offset = u64::from(le32(kernel, ph + 4));
        let vaddr = u64::from(le32(kernel, ph + 8));
        let paddr = u64::from(le32(kernel, ph + 12));
        let filesz = u64::from(le32(kernel, ph + 16));
        let memsz = u64::from(le32(kernel, ph + 20));
        let flags = le32(kernel, ph + 24);
        if filesz > memsz {
            return Err(BootError::BadSegment {
                index,
                reason: format!("file size {filesz:#x} is larger than memory size {memsz:#x}"),
            });
        }
        if memsz == 0 {
            continue;
        }
        check_file_range(kernel, || format!("segment {index}"), offset, filesz)?;
        // Like QEMU: an entry point given as a virtual address inside an executable segment whose
        // virtual and physical addresses differ is translated to the physical address.
        if vaddr != paddr && flags & PF_X != 0 && e_entry >= vaddr && e_entry < vaddr + filesz {
            entry = e_entry - vaddr + paddr;
        }
        segments.push(Segment { index, paddr, file_offset: offset, filesz, memsz });
    }
    Ok((segments, entry))
}

/// Interpret the a.out-kludge address fields: one segment plus the entry point.
fn parse_aout(kernel: &[u8], header_offset: usize, fields: [u32; 5]) -> Result<(Vec<Segment>, u64), BootError> {
    let [header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr] = fields.map(u64::from);
    let bad = |reason: String| Err(BootError::BadAoutLayout { reason });
    if load_addr > header_addr {
        return bad(format!("load_addr {load_addr:#x} is above header_addr {header_addr:#x}"));
    }
    let before_header = header_addr - load_addr;
    if before_header > header_offset as u64 {
        return bad(format!(
            "header_addr - load_addr = {before_header:#x} is more than the header's file offset {header_offset:#x}"
        ));
    }
    let file_offset = header_offset as u64 - before_header;
    let load_end = if load_end_addr == 0 { load_addr + (kernel.len() as u64 - file_offset) } else { load_end_addr };
    if load_end < load_addr {
        return bad(format!("load_end_addr {load_end:#x} is below load_addr {load_addr:#x}"));
    }
    let filesz = load_end - load_addr;
    check_file_range(kernel, || "a.out-kludge load range".into(), file_offset, filesz)?;
    let bss_end = if bss_end_addr == 0 { load_end } else { bss_end_addr };
    if bss_end < load_end {
        return bad(format!("bss_end_addr {bss_end:#x} is below load_end_addr {load_end:#x}"));
    }
    let memsz = bss_end - load_addr;
    if memsz == 0 {
        return Err(BootError::NoLoadableSegments);
    }
    Ok((vec![Segment { index: 0, paddr: load_addr, file_offset, filesz, memsz }], entry_addr))
}

/// Bump allocator for loader data above the kernel, skipping the legacy hole.
struct Placer {
    cursor: u64,
    limit: u64,
}

impl Placer {
    fn place(&mut self, len: u64, what: impl FnOnce() -> String) -> Result<u64, BootError> {
        let mut addr = align_up(self.cursor, PAGE);
        if addr < HIGH_MEM_START && addr + len > LOW_MEM_END {
            addr = HIGH_MEM_START;
        }
        if addr + len > self.limit {
            return Err(BootError::DoesNotFit { what: what(), len, ram_end: self.limit });
        }
        self.cursor = addr + len;
        Ok(addr)
    }
}

/// Load a multiboot v1 kernel image into `ram`, place `modules` after it and build the multiboot
/// information structure (memory sizes, command line `cmdline`, modules, e820-style memory map,
/// boot loader name "ailuro"), as QEMU's `-kernel` multiboot loader does.
///
/// `cmdline` and each module's `name` are passed to the guest as given: to match QEMU the caller
/// makes `cmdline` "KERNEL_PATH APPEND" and a module's name its whole "FILE args" spec.
///
/// Returns the entry state: EIP = kernel entry, EAX = [`MULTIBOOT_BOOTLOADER_MAGIC`], EBX = address
/// of the information structure, ESI = 0. Never panics on malformed input; every problem is a
/// [`BootError`]. On error RAM may have been partly written.
pub fn load_multiboot(
    ram: &mut GuestRam,
    kernel: &[u8],
    cmdline: &str,
    modules: &[Module],
) -> Result<BootEntry, BootError> {
    if ram.base() != 0 {
        return Err(BootError::RamBase { base: ram.base() });
    }
    if ram.end() <= HIGH_MEM_START {
        return Err(BootError::RamTooSmall { end: ram.end() });
    }
    let limit = ram.end().min(FOUR_GIB);

    let header = find_multiboot_header(kernel)?;
    let unsupported = header.flags & 0xffff & !HDR_SUPPORTED_REQUIRED;
    if unsupported != 0 {
        return Err(BootError::UnsupportedFlags { flags: header.flags, unsupported });
    }
    let (mut segments, entry) = match header.aout {
        Some(fields) => parse_aout(kernel, header.offset, fields)?,
        None => parse_elf(kernel)?,
    };
    if segments.is_empty() {
        return Err(BootError::NoLoadableSegments);
    }

    // Placement checks: inside RAM, not in the hole, no overlaps.
    for s in &segments {
        if s.paddr + s.memsz > limit {
            return Err(BootError::SegmentOutsideRam { index: s.index, paddr: s.paddr, size: s.memsz, ram_end: limit });
        }
        if s.paddr < HIGH_MEM_START && s.paddr + s.memsz > HOLE_START {
            return Err(BootError::SegmentInHole { index: s.index, paddr: s.paddr, size: s.memsz });
        }
    }
    segments.sort_by_key(|s| s.paddr);
    for pair in segments.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.paddr + a.memsz > b.paddr {
            return Err(BootError::SegmentsOverlap {
                first: a.index,
                first_addr: a.paddr,
                first_size: a.memsz,
                second: b.index,
                second_addr: b.paddr,
                second_size: b.memsz,
            });
        }
    }
    if entry >= limit {
        return Err(BootError::EntryOutsideRam { entry, ram_end: limit });
    }

    // Copy the image and zero the bss.
    for s in &segments {
        let file = &kernel[s.file_offset as usize..(s.file_offset + s.filesz) as usize];
        ram.write(s.paddr, file)?;
        let start = (s.paddr + s.filesz) as usize;
        let end = (s.paddr + s.memsz) as usize;
        ram.as_mut_slice()[start..end].fill(0);
    }
    let kernel_end = segments.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(0);

    // Modules, page aligned after the kernel.
    let mut placer = Placer { cursor: kernel_end, limit };
    let mut module_ranges = Vec::with_capacity(modules.len());
    for (i, m) in modules.iter().enumerate() {
        let len = m.data.len() as u64;
        let addr = placer.place(len, || format!("module {i} ({})", m.name))?;
        ram.write(addr, &m.data)?;
        module_ranges.push((addr, addr + len));
    }

    // The information block: info structure, module list, memory map, strings.
    let mods_off = MBI_SIZE;
    let mmap_off = mods_off + MOD_ENTRY_SIZE * modules.len() as u64;
    let mmap: [(u64, u64, u32); 4] = [
        (0, LOW_MEM_END, 1),
        (LOW_MEM_END, HOLE_START - LOW_MEM_END, 2),
        (0xf_0000, HIGH_MEM_START - 0xf_0000, 2),
        (HIGH_MEM_START, ram.end() - HIGH_MEM_START, 1),
    ];
    let strings_off = mmap_off + MMAP_ENTRY_SIZE * mmap.len() as u64;
    let mut strings = Vec::new();
    let mut add_string = |s: &str| {
        let off = strings_off + strings.len() as u64;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let cmdline_off = add_string(cmdline);
    let loader_off = add_string(BOOTLOADER_NAME);
    let name_offs: Vec<u64> = modules.iter().map(|m| add_string(&m.name)).collect();
    let block_len = strings_off + strings.len() as u64;
    let base = placer.place(block_len, || "multiboot information".into())?;

    let mut block = vec![0u8; block_len as usize];
    let mut put = |off: u64, v: u32| block[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
    let a32 = |off: u64| (base + off) as u32;
    let mem_upper = ((limit - HIGH_MEM_START) / 1024) as u32;
    put(0, MBI_MEMORY | MBI_BOOT_DEVICE | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME);
    put(4, (LOW_MEM_END / 1024) as u32);
    put(8, mem_upper);
    put(12, 0x8000_ffff); // boot_device: like QEMU, "first BIOS disk, no partition"
    put(16, a32(cmdline_off));
    put(20, modules.len() as u32);
    put(24, a32(mods_off));
    put(44, (MMAP_ENTRY_SIZE * mmap.len() as u64) as u32);
    put(48, a32(mmap_off));
    put(64, a32(loader_off));
    for (i, ((start, end), name_off)) in module_ranges.iter().zip(&name_offs).enumerate() {
        let e = mods_off + MOD_ENTRY_SIZE * i as u64;
        put(e, *start as u32);
        put(e + 4, *end as u32);
        put(e + 8, a32(*name_off));
    }
    for (i, (addr, len, kind)) in mmap.iter().enumerate() {
        let e = mmap_off + MMAP_ENTRY_SIZE * i as u64;
        put(e, 20);
        put(e + 4, *addr as u32);
        put(e + 8, (*addr >> 32) as u32);
        put(e + 12, *len as u32);
        put(e + 16, (*len >> 32) as u32);
        put(e + 20, *kind);
    }
    block[strings_off as usize..].copy_from_slice(&strings);
    ram.write(base, &block)?;

    Ok(BootEntry { eip: entry as u32, eax: MULTIBOOT_BOOTLOADER_MAGIC, ebx: base as u32, esi: 0 })
}

#[cfg(test)]
mod tests;
