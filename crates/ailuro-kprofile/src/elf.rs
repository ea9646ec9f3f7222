//! The ELF side of a kernel image: symbols, initialised data, load segments, DWARF sections.

use std::borrow::Cow;
use std::collections::HashMap;

use object::read::elf::{FileHeader, ProgramHeader};
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use crate::dwarf::DebugSections;
use crate::error::DeriveError;
use crate::profile::Arch;

/// A symbol from `.symtab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub address: u64,
    pub size: u64,
    pub global: bool,
}

/// A parsed ELF kernel image (vmlinux) or object file.
pub struct ElfImage<'a> {
    data: &'a [u8],
    file: object::File<'a>,
    pub arch: Arch,
    pub pointer_size: u8,
    pub little_endian: bool,
    symbols: HashMap<String, Symbol>,
}

fn elf_err(e: object::Error) -> DeriveError {
    DeriveError::Elf(e.to_string())
}

impl<'a> ElfImage<'a> {
    /// Parse `data`. Only i386 and x86_64 images are accepted.
    pub fn parse(data: &'a [u8]) -> Result<Self, DeriveError> {
        let file = object::File::parse(data).map_err(elf_err)?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(DeriveError::Elf("not an ELF file".into()));
        }
        let arch = match file.architecture() {
            object::Architecture::I386 => Arch::I386,
            object::Architecture::X86_64 => Arch::X86_64,
            other => return Err(DeriveError::UnsupportedArch(format!("{other:?}"))),
        };
        let pointer_size = if file.is_64() { 8 } else { 4 };
        let little_endian = file.is_little_endian();
        let mut symbols: HashMap<String, Symbol> = HashMap::new();
        for s in file.symbols() {
            if s.is_undefined() || matches!(s.kind(), SymbolKind::Section | SymbolKind::File) {
                continue;
            }
            let Ok(name) = s.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let sym = Symbol { address: s.address(), size: s.size(), global: s.is_global() };
            match symbols.get(name) {
                // keep the first global definition; a global one beats a local one
                Some(old) if old.global || !sym.global => {}
                _ => {
                    symbols.insert(name.to_string(), sym);
                }
            }
        }
        Ok(ElfImage { data, file, arch, pointer_size, little_endian, symbols })
    }

    /// The symbol `name` from the symbol table.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    /// Add (or replace) symbols from `System.map` / `/proc/kallsyms` text: lines of
    /// `ADDRESS TYPE NAME` (a fourth `[module]` column marks module symbols, which are skipped).
    /// Returns the number of symbols taken.
    pub fn add_symbol_map(&mut self, text: &str) -> Result<usize, DeriveError> {
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            if f.len() != 3 {
                if f.len() == 4 && f[3].starts_with('[') {
                    continue;
                }
                return Err(DeriveError::Elf(format!("symbol map line {}: not `ADDRESS TYPE NAME`: {line:?}", i + 1)));
            }
            let address = u64::from_str_radix(f[0], 16)
                .map_err(|_| DeriveError::Elf(format!("symbol map line {}: bad address {:?}", i + 1, f[0])))?;
            let global = f[1].chars().next().is_some_and(|c| c.is_ascii_uppercase());
            let sym = Symbol { address, size: 0, global };
            match self.symbols.get(f[2]) {
                Some(old) if old.global && !global => {}
                _ => {
                    self.symbols.insert(f[2].to_string(), sym);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Where `linux_banner` probably is when no symbol says so: the `Linux version ` strings in
    /// initialised data, preferring one with a build number (`#1`) and the last of those: 6.1
    /// also keeps a weak placeholder banner (`# SMP ...`) from init/version.c.
    pub fn find_banner(&self) -> Option<u64> {
        let pat = b"Linux version ";
        let mut best: Option<(bool, u64)> = None;
        for s in self.file.sections() {
            if s.address() == 0 || s.kind() == SectionKind::UninitializedData || s.kind() == SectionKind::Text {
                continue;
            }
            let Ok(d) = s.data() else { continue };
            let mut from = 0;
            while let Some(i) = d[from..].windows(pat.len()).position(|w| w == pat) {
                let at = from + i;
                let end = d[at..].iter().position(|&b| b == 0).map_or(d.len(), |n| at + n);
                let text = &d[at..end];
                let numbered = text.windows(2).any(|w| w[0] == b'#' && w[1].is_ascii_digit());
                let cand = (numbered, s.address() + at as u64);
                if best.is_none_or(|b| cand.0 >= b.0) {
                    best = Some(cand);
                }
                from = at + pat.len();
            }
        }
        best.map(|b| b.1)
    }

    /// Whether the file is a relocatable object (`gcc -c` output, a `.ko`).
    pub fn is_relocatable(&self) -> bool {
        self.file.kind() == ObjectKind::Relocatable
    }

    /// `len` bytes of initialised data at virtual address `addr`.
    pub fn read_virt(&self, addr: u64, len: u64) -> Option<&'a [u8]> {
        for s in self.file.sections() {
            if s.address() == 0 || s.kind() == SectionKind::UninitializedData {
                continue;
            }
            if let Ok(Some(d)) = s.data_range(addr, len) {
                return Some(d);
            }
        }
        None
    }

    /// The NUL-terminated string at `addr` (at most `max` bytes, without the NUL).
    pub fn read_cstr(&self, addr: u64, max: u64) -> Option<&'a [u8]> {
        for s in self.file.sections() {
            if s.address() == 0 || s.kind() == SectionKind::UninitializedData {
                continue;
            }
            let (start, size) = (s.address(), s.size());
            if addr < start || addr >= start + size {
                continue;
            }
            let avail = (start + size - addr).min(max);
            let d = s.data_range(addr, avail).ok().flatten()?;
            let n = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            return Some(&d[..n]);
        }
        None
    }

    /// `p_vaddr - p_paddr` of the load segment that holds the kernel text: for addresses in the
    /// kernel image, physical = virtual - this (PAGE_OFFSET on i386, __START_KERNEL_map on
    /// x86_64, both when the kernel runs where it was linked, i.e. without KASLR).
    pub fn image_virt_to_phys(&self) -> Option<u64> {
        let text = self.symbol("_text").or_else(|| self.symbol("_stext")).map(|s| s.address);
        if self.pointer_size == 4 {
            let h = object::elf::FileHeader32::<object::Endianness>::parse(self.data).ok()?;
            virt_to_phys(h, self.data, text)
        } else {
            let h = object::elf::FileHeader64::<object::Endianness>::parse(self.data).ok()?;
            virt_to_phys(h, self.data, text)
        }
    }

    /// The DWARF sections; for relocatable objects their relocations are applied to a copy.
    pub fn debug_sections(&self) -> Result<DebugSections<'a>, DeriveError> {
        let endian = if self.little_endian { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };
        let relocatable = self.is_relocatable();
        let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'a, [u8]>, DeriveError> {
            let Some(section) = self.file.section_by_name(id.name()) else {
                return Ok(Cow::Borrowed(&[][..]));
            };
            let data = section.uncompressed_data().map_err(elf_err)?;
            if !relocatable {
                return Ok(data);
            }
            let mut map = object::read::RelocationMap::default();
            let mut offsets = Vec::new();
            for (off, rel) in section.relocations() {
                let size = rel.size();
                if map.add(&self.file, off, rel).is_ok() {
                    offsets.push((off, size));
                }
            }
            if offsets.is_empty() {
                return Ok(data);
            }
            let mut buf = data.into_owned();
            for (off, bits) in offsets {
                let (off, n) = (off as usize, usize::from(bits / 8));
                if n == 0 || n > 8 || off + n > buf.len() {
                    continue;
                }
                let mut raw = [0u8; 8];
                if self.little_endian {
                    raw[..n].copy_from_slice(&buf[off..off + n]);
                } else {
                    raw[8 - n..].copy_from_slice(&buf[off..off + n]);
                }
                let old = if self.little_endian { u64::from_le_bytes(raw) } else { u64::from_be_bytes(raw) };
                let new = map.relocate(off as u64, old);
                let bytes = if self.little_endian { new.to_le_bytes() } else { new.to_be_bytes() };
                if self.little_endian {
                    buf[off..off + n].copy_from_slice(&bytes[..n]);
                } else {
                    buf[off..off + n].copy_from_slice(&bytes[8 - n..]);
                }
            }
            Ok(Cow::Owned(buf))
        })?;
        Ok(DebugSections {
            sections,
            endian,
            address_size: self.pointer_size,
            has_info: self.file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0),
        })
    }

    /// The named section's (uncompressed) contents.
    pub fn section_data(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.file.section_by_name(name)?.uncompressed_data().ok()
    }
}

fn virt_to_phys<H: FileHeader<Endian = object::Endianness>>(h: &H, data: &[u8], text: Option<u64>) -> Option<u64> {
    let endian = h.endian().ok()?;
    let phdrs = h.program_headers(endian, data).ok()?;
    let loads = phdrs.iter().filter(|p| p.p_type(endian) == object::elf::PT_LOAD);
    let mut fallback = None;
    for p in loads {
        let vaddr: u64 = p.p_vaddr(endian).into();
        let paddr: u64 = p.p_paddr(endian).into();
        let memsz: u64 = p.p_memsz(endian).into();
        if vaddr == 0 {
            continue; // x86_64's zero-based per-cpu segment
        }
        if let Some(t) = text {
            if t >= vaddr && t < vaddr + memsz {
                return Some(vaddr.wrapping_sub(paddr));
            }
        }
        fallback.get_or_insert(vaddr.wrapping_sub(paddr));
    }
    fallback
}
