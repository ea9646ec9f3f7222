//! Deriving a [`KernelProfile`] from a kernel image with debug information.

use std::collections::BTreeMap;
use std::path::Path;

use crate::elf::ElfImage;
use crate::error::DeriveError;
use crate::profile::{banner_release, Addr, Arch, KernelInfo, KernelProfile, Member, PerCpu, StructLayout, FORMAT};
use crate::spec::{self, Need};
use crate::types::TypeGraph;

/// A derived profile and what derive had to say about it.
#[derive(Debug)]
pub struct Derived {
    pub profile: KernelProfile,
    /// Required items that are missing (the profile is incomplete if this is not empty).
    pub errors: Vec<String>,
    /// Optional items that are missing, and cross-check remarks.
    pub notes: Vec<String>,
}

/// Derive from a vmlinux (or any ELF file with DWARF) on disk.
pub fn derive_from_path(path: &Path) -> Result<Derived, DeriveError> {
    let data = std::fs::read(path).map_err(|source| DeriveError::Io { path: path.to_path_buf(), source })?;
    derive_from_elf(&data)
}

/// Derive from the bytes of an ELF file with DWARF (a `-dbg` vmlinux).
pub fn derive_from_elf(data: &[u8]) -> Result<Derived, DeriveError> {
    derive_from_image(&ElfImage::parse(data)?)
}

/// Derive from a parsed ELF file with DWARF (symbols may have been added with
/// [`ElfImage::add_symbol_map`]).
pub fn derive_from_image(image: &ElfImage<'_>) -> Result<Derived, DeriveError> {
    let sections = image.debug_sections()?;
    if !sections.has_debug_info() {
        return Err(DeriveError::Missing(
            ".debug_info section (use the vmlinux of the -dbg package: scripts/fetch-kernel-dbg.sh)".into(),
        ));
    }
    let mut types = sections.types()?;
    derive_with(image, &mut types, "dwarf")
}

/// Derive from BTF: `image` is a bzImage (or an ELF kernel with a `.BTF` section), `symbol_map`
/// optional `System.map`/`/proc/kallsyms` text for the symbol addresses, which BTF lacks
/// (without it, the profile has layouts but is incomplete; `linux_banner` is found by scanning).
pub fn derive_from_btf(image: &[u8], symbol_map: Option<&str>) -> Result<Derived, DeriveError> {
    let elf = if image.starts_with(b"\x7fELF") {
        std::borrow::Cow::Borrowed(image)
    } else {
        std::borrow::Cow::Owned(crate::btf::vmlinux_from_bzimage(image)?)
    };
    let mut image = ElfImage::parse(&elf)?;
    if let Some(map) = symbol_map {
        image.add_symbol_map(map)?;
    }
    let data = image.section_data(".BTF").ok_or_else(|| {
        DeriveError::Missing(
            ".BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF, e.g. Debian's 686 flavour)".into(),
        )
    })?;
    let mut btf = crate::btf::Btf::parse(&data, image.pointer_size)?;
    derive_with(&image, &mut btf, "btf")
}

/// Derive with symbols and data from `image` and layouts from `types`.
pub fn derive_with(image: &ElfImage<'_>, types: &mut dyn TypeGraph, source: &str) -> Result<Derived, DeriveError> {
    let arch = image.arch;
    let mut errors = Vec::new();
    let mut notes = Vec::new();

    // symbols
    let mut symbols = BTreeMap::new();
    for g in spec::symbol_groups(arch) {
        for n in &g.names {
            if let Some(s) = image.symbol(n) {
                symbols.insert(n.to_string(), Addr(s.address));
            }
        }
        if !g.names.iter().any(|n| symbols.contains_key(*n)) {
            let msg = format!("symbol {}: not in the symbol table", g.names.join(" | "));
            match g.need {
                Need::Required => errors.push(msg),
                Need::Optional => notes.push(msg),
                Need::IfPresent => {}
            }
        }
    }

    // banner
    let banner_sym = match image.symbol("linux_banner") {
        Some(s) => s,
        None => {
            let address = image.find_banner().ok_or_else(|| DeriveError::Missing("symbol linux_banner".into()))?;
            notes.push(format!("linux_banner: no symbol; found the banner string at 0x{address:x}"));
            symbols.insert("linux_banner".to_string(), Addr(address));
            errors.retain(|e| e != "symbol linux_banner: not in the symbol table");
            crate::elf::Symbol { address, size: 0, global: true }
        }
    };
    let max = if banner_sym.size > 0 { banner_sym.size } else { 1024 };
    let banner_bytes = image
        .read_cstr(banner_sym.address, max)
        .ok_or_else(|| DeriveError::Missing(format!("data at linux_banner (0x{:x})", banner_sym.address)))?;
    let banner =
        String::from_utf8(banner_bytes.to_vec()).map_err(|_| DeriveError::Elf("linux_banner is not UTF-8".into()))?;

    // structs
    let (structs, uses_maple) = layouts(types, arch, &mut errors, &mut notes);

    // release and version: from init_uts_ns when the layout is known, else from the banner
    let uts = |field: &str, types: &mut dyn TypeGraph| -> Option<String> {
        let base = image.symbol("init_uts_ns")?.address;
        let name = types.member("uts_namespace", "name").ok()?.offset;
        let f = types.member("new_utsname", field).ok()?;
        let s = image.read_cstr(base + name + f.offset, f.size.unwrap_or(65))?;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    let release = uts("release", types).or_else(|| banner_release(banner.as_bytes())).unwrap_or_default();
    let version = uts("version", types).or_else(|| version_from_banner(&banner)).unwrap_or_default();

    // the current task
    let per_cpu = if let (Some(_), Ok(m)) = (image.symbol("pcpu_hot"), types.member("pcpu_hot", "current_task")) {
        PerCpu {
            offsets_symbol: "__per_cpu_offset".into(),
            current_task_symbol: "pcpu_hot".into(),
            current_task_offset: m.offset,
        }
    } else {
        if image.symbol("current_task").is_none() {
            errors.push("per-cpu current task: neither current_task nor pcpu_hot".into());
        }
        PerCpu {
            offsets_symbol: "__per_cpu_offset".into(),
            current_task_symbol: "current_task".into(),
            current_task_offset: 0,
        }
    };

    // constants
    let mut constants = BTreeMap::new();
    for c in spec::constant_specs(arch) {
        if spec::is_maple_constant(c.name) && !uses_maple {
            continue;
        }
        let mut value = c.value;
        if let Some((s, m, adj)) = c.from_dwarf_count {
            match types.member(s, m).map(|i| i.count) {
                Ok(Some(n)) => {
                    let n = n as i64 + adj;
                    if n != value {
                        notes.push(format!(
                            "constant {}: the 6.1 table says {value}, DWARF ({s}.{m}) says {n}; using {n}",
                            c.name
                        ));
                        value = n;
                    }
                }
                _ => notes.push(format!("constant {}: could not check against {s}.{m}", c.name)),
            }
        }
        constants.insert(c.name.to_string(), value);
    }
    if !release.starts_with("6.1.") {
        notes.push(format!("the documented constants are those of the 6.1 line; check them for {release}"));
    }

    // enums
    let mut enums = BTreeMap::new();
    for (e, need) in spec::enum_specs() {
        match types.enum_values(e).ok().flatten() {
            Some(vals) => {
                enums.insert(e.to_string(), vals.into_iter().collect());
            }
            None => {
                let msg = format!("enum {e}: not found");
                if *need == Need::Required || (uses_maple && e.starts_with("maple")) {
                    errors.push(msg)
                } else {
                    notes.push(msg)
                }
            }
        }
    }

    let paging = match arch {
        Arch::I386 => match types.typedef_size("pte_t").ok().flatten() {
            Some(4) => Some("x86-2level".to_string()),
            Some(8) => Some("x86-pae".to_string()),
            _ => None,
        },
        Arch::X86_64 => Some("x86_64-4level".to_string()),
    };

    let profile = KernelProfile {
        format: FORMAT,
        kernel: KernelInfo {
            release,
            version,
            banner,
            arch,
            pointer_size: image.pointer_size,
            image_virt_to_phys: image.image_virt_to_phys().map(Addr),
            paging,
            source: Some(source.to_string()),
        },
        symbols,
        per_cpu,
        constants,
        enums,
        structs,
    };
    // consistency problems that only validate checks (what is missing, derive said already)
    for e in profile.validate().errors {
        let missing = e.ends_with(": missing") || e.ends_with(" present") || e.starts_with("per_cpu.");
        if !missing && !errors.contains(&e) {
            errors.push(e);
        }
    }
    Ok(Derived { profile, errors, notes })
}

/// Record every struct and member of the spec that `types` has. Returns the layouts and whether
/// the kernel keeps VMAs in a maple tree (`mm_struct.mm_mt`).
pub fn layouts(
    types: &mut dyn TypeGraph,
    arch: Arch,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> (BTreeMap<String, StructLayout>, bool) {
    let uses_maple = types.member("mm_struct", "mm_mt").is_ok();
    let mut out = BTreeMap::new();
    for s in spec::struct_specs(arch) {
        let struct_need = if uses_maple && s.name.starts_with("maple_") { Need::Required } else { s.need };
        let size = match types.struct_size(s.name) {
            Ok(sz) => sz,
            Err(e) => {
                match struct_need {
                    Need::Required => errors.push(e.to_string()),
                    Need::Optional => notes.push(e.to_string()),
                    Need::IfPresent => {}
                }
                continue;
            }
        };
        let mut layout = StructLayout { size, members: BTreeMap::new() };
        for g in &s.groups {
            let mut failures = Vec::new();
            for n in &g.names {
                if layout.members.contains_key(*n) {
                    continue;
                }
                match types.member(s.name, n) {
                    Ok(m) => {
                        layout.members.insert(
                            n.to_string(),
                            Member {
                                offset: m.offset,
                                size: m.size,
                                type_name: Some(m.type_name),
                                count: m.count,
                                bit_offset: m.bit_offset,
                                bit_size: m.bit_size,
                            },
                        );
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if !g.names.iter().any(|n| layout.members.contains_key(*n)) {
                let msg =
                    if failures.len() == 1 { failures.remove(0) } else { format!("none of: {}", failures.join("; ")) };
                match (struct_need, g.need) {
                    (Need::Required, Need::Required) => errors.push(msg),
                    (Need::IfPresent, _) | (_, Need::IfPresent) => {}
                    _ => notes.push(msg),
                }
            }
        }
        out.insert(s.name.to_string(), layout);
    }
    (out, uses_maple)
}

/// `uname -v` from a banner: what follows the compiler's closing parenthesis.
fn version_from_banner(banner: &str) -> Option<String> {
    let i = banner.find(") #")?;
    Some(banner[i + 2..].trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::version_from_banner;

    #[test]
    fn version_from_a_debian_banner() {
        let b = "Linux version 6.1.0-50-686 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) \
                 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)\n";
        assert_eq!(version_from_banner(b).as_deref(), Some("#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)"));
        assert_eq!(version_from_banner("Linux version 1.0"), None);
    }
}
