//! The profile file: its Rust model, loading, writing, accessors, validation, banner check.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LookupError, ProfileError};
use crate::spec::{self, Need};

/// The profile format this crate reads and writes.
pub const FORMAT: u32 = 1;

/// Guest architecture of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "i386")]
    I386,
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::I386 => "i386",
            Arch::X86_64 => "x86_64",
        }
    }
    pub fn pointer_size(self) -> u8 {
        match self {
            Arch::I386 => 4,
            Arch::X86_64 => 8,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A guest virtual address. Written as a hex string (`"0xc1c444c0"`) because TOML integers are
/// signed 64-bit and x86_64 kernel addresses do not fit; an integer is accepted on input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub u64);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{:x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) if i >= 0 => Ok(Addr(i as u64)),
            Raw::Int(i) => {
                Err(serde::de::Error::custom(format!("address {i} is negative; write addresses as \"0x...\" strings")))
            }
            Raw::Str(s) => parse_u64(&s)
                .map(Addr)
                .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an address (want \"0x...\")"))),
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let t = s.trim().replace('_', "");
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// What kernel the profile belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// `uname -r`, e.g. `6.1.0-50-686`.
    pub release: String,
    /// `uname -v`, e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-06-28)`.
    pub version: String,
    /// The exact bytes of `linux_banner` without its terminating NUL (ends in `\n`).
    pub banner: String,
    pub arch: Arch,
    /// 4 or 8.
    pub pointer_size: u8,
    /// For addresses inside the kernel image: physical = virtual - this (when the kernel runs
    /// where it was linked, i.e. no KASLR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_virt_to_phys: Option<Addr>,
    /// Page-table format: `x86-2level`, `x86-pae` or `x86_64-4level` (5-level is a boot-time
    /// choice on x86_64: look at CR4.LA57).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<String>,
    /// Where the profile came from: `dwarf`, `btf` or `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Where the running task lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerCpu {
    /// The array of per-cpu base offsets (`unsigned long[NR_CPUS]`), normally `__per_cpu_offset`.
    #[serde(default = "default_offsets_symbol")]
    pub offsets_symbol: String,
    /// The per-cpu variable that holds the current task: `current_task` (a `struct task_struct *`)
    /// or `pcpu_hot` (a struct with a `current_task` member).
    pub current_task_symbol: String,
    /// Offset of the task pointer inside that variable (0 for `current_task`).
    #[serde(default)]
    pub current_task_offset: u64,
}

fn default_offsets_symbol() -> String {
    "__per_cpu_offset".into()
}

/// One member of a struct: where it is and (optionally) what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Byte offset from the start of the struct (anonymous unions/structs already added in).
    pub offset: u64,
    /// Size in bytes; absent for bit fields and flexible arrays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// C type, informational.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Element count, for arrays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// For bit fields: bit offset from the start of the struct, and width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_size: Option<u64>,
}

/// Size and members of one struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructLayout {
    pub size: u64,
    /// Keyed by member path: `pid`, or `core_layout.base` for a member of a member.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
}

/// Everything OS introspection needs to know about one kernel build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelProfile {
    pub format: u32,
    pub kernel: KernelInfo,
    #[serde(default)]
    pub symbols: BTreeMap<String, Addr>,
    pub per_cpu: PerCpu,
    /// Values that are `#define`s in the kernel (not in DWARF); see `docs/KERNEL-PROFILES.md`.
    #[serde(default)]
    pub constants: BTreeMap<String, i64>,
    #[serde(default)]
    pub enums: BTreeMap<String, BTreeMap<String, i64>>,
    #[serde(default)]
    pub structs: BTreeMap<String, StructLayout>,
}

/// Result of comparing the banner in guest memory with the profile's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BannerCheck {
    /// The bytes are the profile's banner (followed by a NUL or by the end of the buffer).
    Match,
    /// Something else is there. `found` is what was read, up to the first NUL (lossy UTF-8,
    /// at most 256 bytes); `found_release` the release parsed from it if it looks like a banner.
    Mismatch { expected_release: String, found: String, found_release: Option<String> },
    /// Fewer bytes than the banner's length were supplied, and they match so far.
    TooShort { needed: usize, got: usize },
}

impl BannerCheck {
    pub fn is_match(&self) -> bool {
        matches!(self, BannerCheck::Match)
    }
}

impl fmt::Display for BannerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BannerCheck::Match => f.write_str("the kernel banner matches the profile"),
            BannerCheck::Mismatch { expected_release, found, found_release } => match found_release {
                Some(r) => write!(
                    f,
                    "the guest runs kernel {r}, the profile is for {expected_release} \
                     (banner in guest memory: {found:?})"
                ),
                None => write!(
                    f,
                    "no kernel banner of {expected_release} at the profile's linux_banner address \
                     (found {found:?}): a different kernel, or KASLR moved it"
                ),
            },
            BannerCheck::TooShort { needed, got } => {
                write!(f, "read {got} bytes of the banner, {needed} are needed to compare")
            }
        }
    }
}

/// The release in a `Linux version RELEASE (...` banner.
pub fn banner_release(banner: &[u8]) -> Option<String> {
    let rest = banner.strip_prefix(b"Linux version ")?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0 || b == b'\n').unwrap_or(rest.len());
    (end > 0).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Things `validate` found wrong or missing, one line each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validation {
    /// Missing or inconsistent required items (the profile is not usable for them).
    pub errors: Vec<String>,
    /// Missing optional items and oddities.
    pub warnings: Vec<String>,
}

impl Validation {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

impl KernelProfile {
    /// Read and parse a profile file (does not validate: call [`KernelProfile::validate`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ProfileError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ProfileError::Io { path: path.to_path_buf(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ProfileError::Parse { message, .. } => ProfileError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parse profile text.
    pub fn from_toml(text: &str) -> Result<Self, ProfileError> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<u32>,
        }
        let parse_err = |message: String| ProfileError::Parse { path: "<string>".into(), message };
        let head: Head = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        match head.format {
            Some(FORMAT) => {}
            Some(found) => return Err(ProfileError::Format { found, supported: FORMAT }),
            None => return Err(parse_err("no `format = 1` line".into())),
        }
        toml::from_str(text).map_err(|e| parse_err(e.to_string()))
    }

    /// Write the profile (as [`KernelProfile::to_toml`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ProfileError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_toml()).map_err(|source| ProfileError::Io { path: path.to_path_buf(), source })
    }

    // ----- accessors -----

    pub fn arch(&self) -> Arch {
        self.kernel.arch
    }

    pub fn pointer_size(&self) -> u8 {
        self.kernel.pointer_size
    }

    /// Address of a kernel symbol.
    pub fn symbol(&self, name: &str) -> Result<u64, LookupError> {
        self.symbols.get(name).map(|a| a.0).ok_or_else(|| LookupError::NoSymbol(name.to_string()))
    }

    /// The layout of `struct NAME`.
    pub fn layout(&self, struct_name: &str) -> Result<&StructLayout, LookupError> {
        self.structs.get(struct_name).ok_or_else(|| LookupError::NoStruct(struct_name.to_string()))
    }

    /// `sizeof(struct NAME)`.
    pub fn struct_size(&self, struct_name: &str) -> Result<u64, LookupError> {
        Ok(self.layout(struct_name)?.size)
    }

    /// A member by path (`"pid"`, `"core_layout.base"`).
    pub fn member(&self, struct_name: &str, path: &str) -> Result<&Member, LookupError> {
        let l = self.layout(struct_name)?;
        l.members.get(path).ok_or_else(|| LookupError::NoMember {
            struct_name: struct_name.to_string(),
            path: path.to_string(),
            missing: path.to_string(),
        })
    }

    /// `offsetof(struct NAME, path)`.
    pub fn offset(&self, struct_name: &str, path: &str) -> Result<u64, LookupError> {
        Ok(self.member(struct_name, path)?.offset)
    }

    /// The first member of `paths` that the profile has, with its path (for members that were
    /// renamed between kernel lines, e.g. `["mm_mt", "mmap"]`).
    pub fn first_member<'p>(&self, struct_name: &str, paths: &[&'p str]) -> Result<(&'p str, &Member), LookupError> {
        let l = self.layout(struct_name)?;
        for p in paths {
            if let Some(m) = l.members.get(*p) {
                return Ok((p, m));
            }
        }
        Err(LookupError::NoMember {
            struct_name: struct_name.to_string(),
            path: paths.join("|"),
            missing: paths.join("|"),
        })
    }

    /// A documented constant (`THREAD_SIZE`, `MAPLE_NODE_MASK`, ...).
    pub fn constant(&self, name: &str) -> Result<i64, LookupError> {
        self.constants.get(name).copied().ok_or_else(|| LookupError::NoConstant(name.to_string()))
    }

    /// An enumerator's value (`maple_type`, `maple_arange_64`).
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<i64, LookupError> {
        let e = self.enums.get(enum_name).ok_or_else(|| LookupError::NoEnum(enum_name.to_string()))?;
        e.get(enumerator)
            .copied()
            .ok_or_else(|| LookupError::NoEnumerator(enum_name.to_string(), enumerator.to_string()))
    }

    /// Address of the running task pointer of the CPU whose per-cpu base is `per_cpu_base`
    /// (`__per_cpu_offset[cpu]`; on x86 also the FS (i386) / GS (x86_64) base in kernel mode).
    pub fn current_task_slot(&self, per_cpu_base: u64) -> Result<u64, LookupError> {
        let sym = self.symbol(&self.per_cpu.current_task_symbol)?;
        Ok(sym.wrapping_add(per_cpu_base).wrapping_add(self.per_cpu.current_task_offset))
    }

    /// Offset from a task's `stack` pointer to its user-mode `struct pt_regs`:
    /// `THREAD_SIZE - TOP_OF_KERNEL_STACK_PADDING - sizeof(struct pt_regs)` (`task_pt_regs()`).
    pub fn pt_regs_offset_in_stack(&self) -> Result<u64, LookupError> {
        let thread_size = self.constant("THREAD_SIZE")? as u64;
        let pad = self.constant("TOP_OF_KERNEL_STACK_PADDING")? as u64;
        let regs = self.struct_size("pt_regs")?;
        Ok(thread_size - pad - regs)
    }

    /// Compare bytes read from guest memory at `linux_banner` with the profile's banner.
    /// Pass at least `banner.len()` bytes; a trailing NUL (or anything after it) is allowed.
    pub fn check_banner(&self, guest: &[u8]) -> BannerCheck {
        let want = self.kernel.banner.as_bytes();
        let cmp = guest.len().min(want.len());
        let matches_prefix = guest[..cmp] == want[..cmp];
        if matches_prefix && guest.len() < want.len() {
            return BannerCheck::TooShort { needed: want.len(), got: guest.len() };
        }
        if matches_prefix && guest.get(want.len()).is_none_or(|&b| b == 0) {
            return BannerCheck::Match;
        }
        let end = guest.iter().position(|&b| b == 0).unwrap_or(guest.len()).min(256);
        BannerCheck::Mismatch {
            expected_release: self.kernel.release.clone(),
            found: String::from_utf8_lossy(&guest[..end]).into_owned(),
            found_release: banner_release(&guest[..end]),
        }
    }

    /// Check the profile against what the runtime needs for its architecture: every required
    /// symbol, struct, member and constant, and that members lie inside their structs.
    pub fn validate(&self) -> Validation {
        let mut v = Validation::default();
        if self.format != FORMAT {
            v.errors.push(format!("format {} (expected {FORMAT})", self.format));
        }
        let k = &self.kernel;
        if k.pointer_size != k.arch.pointer_size() {
            v.errors.push(format!("kernel.pointer_size {} does not fit arch {}", k.pointer_size, k.arch));
        }
        if !k.banner.starts_with("Linux version ") {
            v.errors.push("kernel.banner does not start with \"Linux version \"".into());
        }
        match banner_release(k.banner.as_bytes()) {
            Some(r) if r == k.release => {}
            Some(r) => v.errors.push(format!("kernel.release {:?} differs from the banner's release {r:?}", k.release)),
            None => {}
        }
        for group in spec::symbol_groups(k.arch) {
            let present: Vec<_> = group.names.iter().filter(|n| self.symbols.contains_key(**n)).collect();
            if present.is_empty() {
                let msg = if group.names.len() == 1 {
                    format!("symbol {}: missing", group.names[0])
                } else {
                    format!("symbols: none of {} present", group.names.join(", "))
                };
                match group.need {
                    Need::Required => v.errors.push(msg),
                    Need::Optional => v.warnings.push(msg),
                    Need::IfPresent => {}
                }
            }
        }
        if !self.symbols.contains_key(&self.per_cpu.current_task_symbol) {
            v.errors
                .push(format!("per_cpu.current_task_symbol {}: not in [symbols]", self.per_cpu.current_task_symbol));
        }
        if !self.symbols.contains_key(&self.per_cpu.offsets_symbol) {
            v.errors.push(format!("per_cpu.offsets_symbol {}: not in [symbols]", self.per_cpu.offsets_symbol));
        }
        let uses_maple = self.structs.get("mm_struct").is_some_and(|l| l.members.contains_key("mm_mt"));
        for s in spec::struct_specs(k.arch) {
            let struct_need = if uses_maple && s.name.starts_with("maple_") { Need::Required } else { s.need };
            let Some(layout) = self.structs.get(s.name) else {
                let msg = format!("struct {}: missing", s.name);
                match struct_need {
                    Need::Required => v.errors.push(msg),
                    Need::Optional => v.warnings.push(msg),
                    Need::IfPresent => {}
                }
                continue;
            };
            for g in &s.groups {
                if !g.names.iter().any(|n| layout.members.contains_key(*n)) {
                    let msg = if g.names.len() == 1 {
                        format!("{}.{}: missing", s.name, g.names[0])
                    } else {
                        format!("{}: none of the members {} present", s.name, g.names.join(", "))
                    };
                    match (struct_need, g.need) {
                        (Need::Required, Need::Required) => v.errors.push(msg),
                        (Need::IfPresent, _) | (_, Need::IfPresent) => {}
                        _ => v.warnings.push(msg),
                    }
                }
            }
        }
        for (sname, layout) in &self.structs {
            for (path, m) in &layout.members {
                let end = m.offset + m.size.unwrap_or(0);
                if end > layout.size && layout.size != 0 {
                    v.errors.push(format!(
                        "{sname}.{path}: offset {} + size {} lies outside sizeof(struct {sname}) = {}",
                        m.offset,
                        m.size.unwrap_or(0),
                        layout.size
                    ));
                }
            }
        }
        for c in spec::constant_specs(k.arch) {
            if spec::is_maple_constant(c.name) && !uses_maple {
                continue;
            }
            if !self.constants.contains_key(c.name) {
                let msg = format!("constant {}: missing", c.name);
                match c.need {
                    Need::Required => v.errors.push(msg),
                    Need::Optional => v.warnings.push(msg),
                    Need::IfPresent => {}
                }
            }
        }
        for (e, need) in spec::enum_specs() {
            if !self.enums.contains_key(*e) {
                let msg = format!("enum {e}: missing");
                let need = if uses_maple && e.starts_with("maple") { Need::Required } else { *need };
                match need {
                    Need::Required => v.errors.push(msg),
                    Need::Optional => v.warnings.push(msg),
                    Need::IfPresent => {}
                }
            }
        }
        v
    }

    /// The profile as commented TOML (the format `load` reads). Deterministic: same profile,
    /// same bytes.
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        let k = &self.kernel;
        o.push_str("# Ailuro kernel profile: what OS introspection needs to know about one kernel build.\n");
        o.push_str("# Format and regeneration: docs/KERNEL-PROFILES.md. Offsets and sizes are in bytes (decimal);\n");
        o.push_str("# addresses are hex strings.\n");
        if k.source.as_deref() == Some("dwarf") || k.source.as_deref() == Some("btf") {
            let _ = writeln!(
                o,
                "# Generated by `ailuro-kprofile derive` ({}) from the kernel's debug information.",
                k.source.as_deref().unwrap_or("")
            );
        }
        o.push_str("\nformat = 1\n\n[kernel]\n");
        let _ = writeln!(o, "release = {}", q(&k.release));
        let _ = writeln!(o, "version = {}", q(&k.version));
        o.push_str("# exact bytes of linux_banner (without the NUL): compared with guest memory at that address\n");
        let _ = writeln!(o, "banner = {}", q(&k.banner));
        let _ = writeln!(o, "arch = {}", q(k.arch.name()));
        let _ = writeln!(o, "pointer_size = {}", k.pointer_size);
        if let Some(a) = k.image_virt_to_phys {
            o.push_str("# kernel image addresses: physical = virtual - image_virt_to_phys (no KASLR)\n");
            let _ = writeln!(o, "image_virt_to_phys = \"0x{:x}\"", a.0);
        }
        if let Some(p) = &k.paging {
            let _ = writeln!(o, "paging = {}", q(p));
        }
        if let Some(s) = &k.source {
            let _ = writeln!(o, "source = {}", q(s));
        }

        o.push_str("\n[symbols]\n");
        let w = self.symbols.keys().map(|n| key(n).len()).max().unwrap_or(0);
        for (n, a) in &self.symbols {
            let _ = writeln!(o, "{:<w$} = \"0x{:x}\"", key(n), a.0);
        }

        o.push_str("\n# The running task: *(task_struct **)(current_task_symbol + __per_cpu_offset[cpu]\n");
        o.push_str("#                                    + current_task_offset)\n");
        o.push_str("[per_cpu]\n");
        let _ = writeln!(o, "offsets_symbol = {}", q(&self.per_cpu.offsets_symbol));
        let _ = writeln!(o, "current_task_symbol = {}", q(&self.per_cpu.current_task_symbol));
        let _ = writeln!(o, "current_task_offset = {}", self.per_cpu.current_task_offset);

        o.push_str("\n# #defines of this kernel line (not in DWARF); see docs/KERNEL-PROFILES.md\n");
        o.push_str("[constants]\n");
        // in the order of the spec (related constants stay together), then any others
        let specs = spec::constant_specs(k.arch);
        let mut order: Vec<(&str, &str)> =
            specs.iter().filter(|c| self.constants.contains_key(c.name)).map(|c| (c.name, c.doc)).collect();
        for n in self.constants.keys() {
            if !specs.iter().any(|c| c.name == n.as_str()) {
                order.push((n.as_str(), ""));
            }
        }
        for (n, doc) in order {
            let val = self.constants[n];
            for line in doc.lines() {
                let _ = writeln!(o, "# {line}");
            }
            if val > 9 && is_mask_like(n) {
                let _ = writeln!(o, "{} = 0x{:x}", key(n), val);
            } else {
                let _ = writeln!(o, "{} = {}", key(n), val);
            }
        }

        for (e, vals) in &self.enums {
            let _ = writeln!(o, "\n[enums.{}]", key(e));
            let mut sorted: Vec<_> = vals.iter().collect();
            sorted.sort_by_key(|(n, v)| (**v, (*n).clone()));
            for (n, v) in sorted {
                let _ = writeln!(o, "{} = {}", key(n), v);
            }
        }

        for (s, l) in &self.structs {
            let _ = writeln!(o, "\n[structs.{}]", key(s));
            let _ = writeln!(o, "size = {}", l.size);
            let _ = writeln!(o, "[structs.{}.members]", key(s));
            let w = l.members.keys().map(|n| key(n).len()).max().unwrap_or(0);
            let mut sorted: Vec<_> = l.members.iter().collect();
            sorted.sort_by_key(|(n, m)| (m.offset, m.bit_offset, (*n).clone()));
            for (n, m) in sorted {
                let mut fields = vec![format!("offset = {}", m.offset)];
                if let Some(sz) = m.size {
                    fields.push(format!("size = {sz}"));
                }
                if let Some(c) = m.count {
                    fields.push(format!("count = {c}"));
                }
                if let Some(b) = m.bit_offset {
                    fields.push(format!("bit_offset = {b}"));
                }
                if let Some(b) = m.bit_size {
                    fields.push(format!("bit_size = {b}"));
                }
                if let Some(t) = &m.type_name {
                    fields.push(format!("type = {}", q(t)));
                }
                let _ = writeln!(o, "{:<w$} = {{ {} }}", key(n), fields.join(", "));
            }
        }
        o
    }
}

fn is_mask_like(name: &str) -> bool {
    ["MASK", "PF_", "VM_", "PAGE_OFFSET", "FLAGS"].iter().any(|p| name.contains(p))
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A TOML key: bare when possible, quoted otherwise (e.g. `"core_layout.base"`).
fn key(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        s.to_string()
    } else {
        q(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_release_parsing() {
        assert_eq!(banner_release(b"Linux version 6.1.0-50-686 (x) #1\n").as_deref(), Some("6.1.0-50-686"));
        assert_eq!(banner_release(b"Linux version 5.4.0\0junk").as_deref(), Some("5.4.0"));
        assert_eq!(banner_release(b"Linux version "), None);
        assert_eq!(banner_release(b"\0\0\0"), None);
    }

    #[test]
    fn toml_keys_and_strings() {
        assert_eq!(key("pid"), "pid");
        assert_eq!(key("core_layout.base"), "\"core_layout.base\"");
        assert_eq!(q("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        let parsed: toml::Value = toml::from_str(&format!("x = {}", q("a\"b\\c\n\u{1}é"))).unwrap();
        assert_eq!(parsed["x"].as_str(), Some("a\"b\\c\n\u{1}é"));
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_u64("0xC000_0000"), Some(0xc000_0000));
        assert_eq!(parse_u64("1234"), Some(1234));
        assert_eq!(parse_u64("0xffffffff81000000"), Some(0xffff_ffff_8100_0000));
        assert_eq!(parse_u64("zz"), None);
    }
}
