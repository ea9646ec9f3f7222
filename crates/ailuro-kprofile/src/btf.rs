//! Types from BTF (the kernel's compact type format, section `.BTF`), and getting at it from a
//! bzImage without any debug package.
//!
//! Kernels built with `CONFIG_DEBUG_INFO_BTF` (Debian's amd64 kernels; not its 686 ones) carry
//! BTF in the image itself. A bzImage holds the kernel as a compressed ELF (`vmlinux.bin`,
//! stripped of symbols but with its sections); [`vmlinux_from_bzimage`] unpacks it and
//! [`Btf::parse`] reads the section. BTF has struct layouts but no symbol addresses: those come
//! from a `System.map`-format file (e.g. `/proc/kallsyms` captured in the guest), see
//! `docs/KERNEL-PROFILES.md`.

use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

use crate::error::DeriveError;
use crate::types::{CompositeKind, Field, Type, TypeGraph, TypeId};

const BTF_MAGIC: u16 = 0xeb9f;

// BTF_KIND_*
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

fn btf_err(msg: impl Into<String>) -> DeriveError {
    DeriveError::Btf(msg.into())
}

/// One raw BTF type record.
struct Raw {
    name: Option<String>,
    kind: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_type: u32,
    /// Array: (element type, count).
    array: Option<(u32, u32)>,
    members: Vec<(Option<String>, u32, u32)>,
    enumerators: Vec<(String, i64)>,
}

/// All types of one `.BTF` section.
pub struct Btf {
    types: Vec<Rc<Type>>,
    structs: HashMap<String, TypeId>,
    unions: HashMap<String, TypeId>,
    enums: HashMap<String, TypeId>,
    typedefs: HashMap<String, TypeId>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    little: bool,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, DeriveError> {
        let b = self.data.get(self.pos..self.pos + 4).ok_or_else(|| btf_err("type section ends inside a record"))?;
        self.pos += 4;
        let b: [u8; 4] = b.try_into().expect("4 bytes");
        Ok(if self.little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }
}

impl Btf {
    /// Parse the contents of a `.BTF` section. BTF pointers carry no size: `pointer_size` is
    /// the target's.
    pub fn parse(data: &[u8], pointer_size: u8) -> Result<Btf, DeriveError> {
        if data.len() < 24 {
            return Err(btf_err("section too short for a header"));
        }
        let little = match u16::from_le_bytes([data[0], data[1]]) {
            BTF_MAGIC => true,
            _ if u16::from_be_bytes([data[0], data[1]]) == BTF_MAGIC => false,
            m => return Err(btf_err(format!("bad magic 0x{m:04x}"))),
        };
        let mut h = Cursor { data, pos: 4, little };
        let hdr_len = h.u32()? as usize;
        let (type_off, type_len) = (h.u32()? as usize, h.u32()? as usize);
        let (str_off, str_len) = (h.u32()? as usize, h.u32()? as usize);
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| btf_err("type section outside the data"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| btf_err("string section outside the data"))?;
        let string = |off: u32| -> Option<String> {
            if off == 0 {
                return None;
            }
            let s = strings.get(off as usize..)?;
            let n = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            Some(String::from_utf8_lossy(&s[..n]).into_owned())
        };

        // raw records; id 0 is void
        let mut raws: Vec<Raw> = Vec::new();
        let mut c = Cursor { data: types, pos: 0, little };
        while c.pos < types.len() {
            let name = string(c.u32()?);
            let info = c.u32()?;
            let size_type = c.u32()?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut r =
                Raw { name, kind, kind_flag, size_type, array: None, members: Vec::new(), enumerators: Vec::new() };
            match kind {
                INT | VAR | DECL_TAG => {
                    c.u32()?;
                }
                ARRAY => {
                    let elem = c.u32()?;
                    let _index = c.u32()?;
                    let n = c.u32()?;
                    r.array = Some((elem, n));
                }
                STRUCT | UNION => {
                    for _ in 0..vlen {
                        let n = string(c.u32()?);
                        let t = c.u32()?;
                        let off = c.u32()?;
                        r.members.push((n, t, off));
                    }
                }
                ENUM => {
                    for _ in 0..vlen {
                        let n = string(c.u32()?).unwrap_or_default();
                        let v = c.u32()?;
                        let v = if kind_flag { i64::from(v) } else { i64::from(v as i32) };
                        r.enumerators.push((n, v));
                    }
                }
                ENUM64 => {
                    for _ in 0..vlen {
                        let n = string(c.u32()?).unwrap_or_default();
                        let lo = u64::from(c.u32()?);
                        let hi = u64::from(c.u32()?);
                        r.enumerators.push((n, ((hi << 32) | lo) as i64));
                    }
                }
                FUNC_PROTO => {
                    for _ in 0..vlen {
                        c.u32()?;
                        c.u32()?;
                    }
                }
                DATASEC => {
                    for _ in 0..vlen {
                        c.u32()?;
                        c.u32()?;
                        c.u32()?;
                    }
                }
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => {}
                k => return Err(btf_err(format!("unknown BTF kind {k} (type {})", raws.len() + 1))),
            }
            raws.push(r);
        }

        let get = |id: u32| -> Option<&Raw> {
            if id == 0 {
                None
            } else {
                raws.get(id as usize - 1)
            }
        };
        // follow TYPE_TAGs (e.g. __rcu, __user when built with clang): they are transparent
        let target = |mut id: u32| -> Option<TypeId> {
            for _ in 0..16 {
                match get(id) {
                    Some(r) if r.kind == TYPE_TAG => id = r.size_type,
                    _ => break,
                }
            }
            (id != 0).then_some(id as TypeId)
        };
        let mut out: Vec<Rc<Type>> = vec![Rc::new(Type::Other { tag: "void".into() })];
        let mut btf = Btf {
            types: Vec::new(),
            structs: HashMap::new(),
            unions: HashMap::new(),
            enums: HashMap::new(),
            typedefs: HashMap::new(),
        };
        for (i, r) in raws.iter().enumerate() {
            let id = i + 1;
            let t = match r.kind {
                INT | FLOAT => Type::Base { name: r.name.clone().unwrap_or_default(), size: u64::from(r.size_type) },
                PTR => Type::Pointer { target: target(r.size_type), size: u64::from(pointer_size) },
                ARRAY => {
                    // a C multi-dimensional array is an array of arrays in BTF: flatten it
                    let (mut elem, n) = r.array.expect("set for arrays");
                    let mut dims = vec![Some(u64::from(n))];
                    while let Some(Raw { kind: ARRAY, array: Some((e, n)), .. }) = get(elem) {
                        dims.push(Some(u64::from(*n)));
                        elem = *e;
                    }
                    if dims == [Some(0)] {
                        dims = vec![None]; // flexible array member
                    }
                    Type::Array { elem: target(elem), dims }
                }
                STRUCT | UNION => {
                    let kind = if r.kind == UNION { CompositeKind::Union } else { CompositeKind::Struct };
                    let fields = r
                        .members
                        .iter()
                        .map(|(n, t, off)| {
                            let (bits, bit_off) = if r.kind_flag { (off >> 24, off & 0xff_ffff) } else { (0, *off) };
                            let bitfield = bits != 0 || bit_off % 8 != 0;
                            Field {
                                name: n.clone(),
                                offset: u64::from(bit_off / 8),
                                bit_offset: bitfield.then_some(u64::from(bit_off)),
                                bit_size: bitfield.then_some(u64::from(bits)),
                                ty: target(*t),
                            }
                        })
                        .collect();
                    if let Some(n) = &r.name {
                        let map = if kind == CompositeKind::Union { &mut btf.unions } else { &mut btf.structs };
                        map.entry(n.clone()).or_insert(id);
                    }
                    Type::Composite { kind, name: r.name.clone(), size: Some(u64::from(r.size_type)), fields }
                }
                ENUM | ENUM64 => {
                    if let Some(n) = &r.name {
                        btf.enums.entry(n.clone()).or_insert(id);
                    }
                    Type::Enum { name: r.name.clone(), size: u64::from(r.size_type), values: r.enumerators.clone() }
                }
                FWD => Type::Composite {
                    kind: if r.kind_flag { CompositeKind::Union } else { CompositeKind::Struct },
                    name: r.name.clone(),
                    size: None,
                    fields: Vec::new(),
                },
                TYPEDEF => {
                    let n = r.name.clone().unwrap_or_default();
                    btf.typedefs.entry(n.clone()).or_insert(id);
                    Type::Typedef { name: n, target: target(r.size_type) }
                }
                VOLATILE => Type::Qualified { qualifier: "volatile", target: target(r.size_type) },
                CONST => Type::Qualified { qualifier: "const", target: target(r.size_type) },
                RESTRICT => Type::Qualified { qualifier: "restrict", target: target(r.size_type) },
                TYPE_TAG => Type::Qualified { qualifier: "", target: target(r.size_type) },
                FUNC_PROTO => Type::Function,
                _ => Type::Other { tag: format!("btf kind {}", r.kind) },
            };
            out.push(Rc::new(t));
        }
        btf.types = out;
        Ok(btf)
    }

    /// Number of types (for diagnostics).
    pub fn len(&self) -> usize {
        self.types.len() - 1
    }

    /// Whether there are no types.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TypeGraph for Btf {
    fn ty(&mut self, id: TypeId) -> Result<Rc<Type>, DeriveError> {
        self.types.get(id).cloned().ok_or_else(|| btf_err(format!("no type {id}")))
    }
    fn composite_by_name(&self, name: &str) -> Option<TypeId> {
        self.structs.get(name).or_else(|| self.unions.get(name)).copied()
    }
    fn typedef_by_name(&self, name: &str) -> Option<TypeId> {
        self.typedefs.get(name).copied()
    }
    fn enum_by_name(&self, name: &str) -> Option<TypeId> {
        self.enums.get(name).copied()
    }
}

/// Unpack the kernel ELF (`vmlinux.bin`) from an x86 bzImage. The payload must be xz- or
/// zstd-compressed (Debian uses xz).
pub fn vmlinux_from_bzimage(image: &[u8]) -> Result<Vec<u8>, DeriveError> {
    if image.len() < 0x250 || &image[0x202..0x206] != b"HdrS" {
        return Err(btf_err("not a bzImage (no HdrS setup header)"));
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x208 {
        return Err(btf_err(format!("boot protocol {version:#x} has no payload fields (need 2.08+)")));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm_start = (setup_sects + 1) * 512;
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().expect("4 bytes")) as usize;
    let (offset, length) = (u32_at(0x248), u32_at(0x24c));
    let payload = image
        .get(pm_start + offset..pm_start + offset + length)
        .ok_or_else(|| btf_err("payload lies outside the file"))?;
    let mut out = Vec::new();
    if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // the kernel appends the uncompressed size (4 bytes) after the stream's "YZ" footer
        let stream = match payload.len().checked_sub(6) {
            Some(i) if &payload[i..i + 2] == b"YZ" => &payload[..i + 2],
            _ => payload,
        };
        xz2::read::XzDecoder::new(stream).read_to_end(&mut out).map_err(|e| btf_err(format!("xz payload: {e}")))?;
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut d = zstd::stream::read::Decoder::new(payload).map_err(|e| btf_err(format!("zstd payload: {e}")))?;
        // the kernel appends the uncompressed size after the frame: read one frame only
        d = d.single_frame();
        d.read_to_end(&mut out).map_err(|e| btf_err(format!("zstd payload: {e}")))?;
    } else {
        return Err(btf_err(format!(
            "payload compression not supported (magic {:02x?}); xz and zstd are",
            &payload[..payload.len().min(6)]
        )));
    }
    if !out.starts_with(b"\x7fELF") {
        return Err(btf_err("the unpacked payload is not an ELF file"));
    }
    Ok(out)
}
