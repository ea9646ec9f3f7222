//! A small reader of C type layouts from DWARF (`.debug_info`), built on `gimli`.
//!
//! [`DwarfTypes::index`] scans the top level of every compilation unit once and remembers the first
//! complete definition of each named `struct`, `union`, `enum` and `typedef`. Types are then read
//! on demand and cached. [`DwarfTypes::member`] resolves a dotted member path (`f_path.dentry`)
//! through anonymous structs and unions, adding up the offsets on the way, as C does.

use std::collections::HashMap;
use std::rc::Rc;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};

use crate::error::DeriveError;
use crate::types::{CompositeKind, Field, Type, TypeGraph, TypeId};

type R<'a> = EndianSlice<'a, RunTimeEndian>;

struct UnitEntry<'a> {
    start: usize,
    end: usize,
    header: gimli::UnitHeader<R<'a>>,
}

/// Type information of one ELF file's DWARF.
pub struct DwarfTypes<'a> {
    dwarf: gimli::Dwarf<R<'a>>,
    address_size: u8,
    units: Vec<UnitEntry<'a>>,
    parsed_units: HashMap<usize, Rc<gimli::Unit<R<'a>>>>,
    structs: HashMap<String, TypeId>,
    unions: HashMap<String, TypeId>,
    enums: HashMap<String, TypeId>,
    typedefs: HashMap<String, TypeId>,
    cache: HashMap<TypeId, Rc<Type>>,
}

/// The DWARF sections of a file, owned or borrowed (relocated copies for relocatable objects).
pub struct DebugSections<'a> {
    pub(crate) sections: gimli::DwarfSections<std::borrow::Cow<'a, [u8]>>,
    pub(crate) endian: RunTimeEndian,
    pub(crate) address_size: u8,
    pub(crate) has_info: bool,
}

impl<'a> DebugSections<'a> {
    /// Index the types. Takes a few seconds on a distribution kernel's vmlinux.
    pub fn types(&self) -> Result<DwarfTypes<'_>, DeriveError> {
        let dwarf = self.sections.borrow(|s| EndianSlice::new(s.as_ref(), self.endian));
        DwarfTypes::index(dwarf, self.address_size)
    }

    /// Whether there is any `.debug_info` at all.
    pub fn has_debug_info(&self) -> bool {
        self.has_info
    }
}

fn dwarf_err(e: gimli::Error) -> DeriveError {
    DeriveError::Dwarf(e.to_string())
}

impl<'a> DwarfTypes<'a> {
    fn index(dwarf: gimli::Dwarf<R<'a>>, address_size: u8) -> Result<Self, DeriveError> {
        let mut me = DwarfTypes {
            dwarf,
            address_size,
            units: Vec::new(),
            parsed_units: HashMap::new(),
            structs: HashMap::new(),
            unions: HashMap::new(),
            enums: HashMap::new(),
            typedefs: HashMap::new(),
            cache: HashMap::new(),
        };
        let mut iter = me.dwarf.units();
        while let Some(header) = iter.next().map_err(dwarf_err)? {
            let Some(start) = header.debug_info_offset() else {
                continue;
            };
            let start = start.0;
            let end = start + header.length_including_self();
            me.units.push(UnitEntry { start, end, header });
        }
        for i in 0..me.units.len() {
            me.index_unit(i)?;
        }
        Ok(me)
    }

    fn unit(&mut self, idx: usize) -> Result<Rc<gimli::Unit<R<'a>>>, DeriveError> {
        if let Some(u) = self.parsed_units.get(&idx) {
            return Ok(u.clone());
        }
        let unit = Rc::new(self.dwarf.unit(self.units[idx].header).map_err(dwarf_err)?);
        self.parsed_units.insert(idx, unit.clone());
        Ok(unit)
    }

    fn index_unit(&mut self, idx: usize) -> Result<(), DeriveError> {
        // Parsed here without the cache: most units are never looked at again.
        let unit = self.dwarf.unit(self.units[idx].header).map_err(dwarf_err)?;
        let start = self.units[idx].start;
        let mut cursor = unit.entries();
        // the unit's root, then its first child
        if !cursor.next_entry().map_err(dwarf_err)? {
            return Ok(());
        }
        match cursor.current() {
            Some(root) if root.has_children() => {}
            _ => return Ok(()),
        }
        cursor.next_entry().map_err(dwarf_err)?;
        while let Some(entry) = cursor.current() {
            let tag = entry.tag();
            let map = match tag {
                gimli::DW_TAG_structure_type => Some(&mut self.structs),
                gimli::DW_TAG_union_type => Some(&mut self.unions),
                gimli::DW_TAG_enumeration_type => Some(&mut self.enums),
                gimli::DW_TAG_typedef => Some(&mut self.typedefs),
                _ => None,
            };
            if let Some(map) = map {
                let declaration =
                    matches!(entry.attr_value(gimli::DW_AT_declaration), Some(AttributeValue::Flag(true)));
                if !declaration {
                    if let Some(name) = entry.attr_value(gimli::DW_AT_name) {
                        if let Ok(name) = self.dwarf.attr_string(&unit, name) {
                            let id = start + entry.offset().0;
                            map.entry(name.to_string_lossy().into_owned()).or_insert(id);
                        }
                    }
                }
            }
            cursor.next_sibling().map_err(dwarf_err)?;
        }
        Ok(())
    }

    fn unit_index_of(&self, id: TypeId) -> Option<usize> {
        let i = self.units.partition_point(|u| u.start <= id);
        (i > 0 && id < self.units[i - 1].end).then(|| i - 1)
    }

    /// Number of indexed named structs (for diagnostics).
    pub fn struct_count(&self) -> usize {
        self.structs.len()
    }

    fn read_type(&mut self, id: TypeId) -> Result<Type, DeriveError> {
        let uidx =
            self.unit_index_of(id).ok_or_else(|| DeriveError::Dwarf(format!("DIE 0x{id:x} is outside every unit")))?;
        let unit = self.unit(uidx)?;
        let ustart = self.units[uidx].start;
        let off = UnitOffset(id - ustart);
        let mut cursor = unit.entries_at_offset(off).map_err(dwarf_err)?;
        cursor.next_entry().map_err(dwarf_err)?;
        let entry = cursor.current().ok_or_else(|| DeriveError::Dwarf(format!("no DIE at 0x{id:x}")))?.clone();
        let name = self.name_of(&unit, &entry);
        let size = entry.attr(gimli::DW_AT_byte_size).and_then(|a| a.udata_value());
        let target = self.type_ref(ustart, &entry);
        let children = if entry.has_children() {
            let mut out = Vec::new();
            cursor.next_entry().map_err(dwarf_err)?;
            while let Some(child) = cursor.current() {
                out.push(child.clone());
                cursor.next_sibling().map_err(dwarf_err)?;
            }
            out
        } else {
            Vec::new()
        };
        let t = match entry.tag() {
            gimli::DW_TAG_base_type => Type::Base { name: name.unwrap_or_else(|| "?".into()), size: size.unwrap_or(0) },
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
                Type::Pointer { target, size: size.unwrap_or(u64::from(self.address_size)) }
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                let kind =
                    if entry.tag() == gimli::DW_TAG_union_type { CompositeKind::Union } else { CompositeKind::Struct };
                let mut fields = Vec::new();
                for c in children.iter().filter(|c| c.tag() == gimli::DW_TAG_member) {
                    fields.push(self.read_field(&unit, ustart, c, size)?);
                }
                Type::Composite { kind, name, size, fields }
            }
            gimli::DW_TAG_enumeration_type => {
                let mut values = Vec::new();
                for c in children.iter().filter(|c| c.tag() == gimli::DW_TAG_enumerator) {
                    let n = self.name_of(&unit, c).unwrap_or_default();
                    let v = match c.attr_value(gimli::DW_AT_const_value) {
                        Some(AttributeValue::Sdata(v)) => v,
                        Some(AttributeValue::Udata(v)) => v as i64,
                        Some(AttributeValue::Data1(v)) => i64::from(v),
                        Some(AttributeValue::Data2(v)) => i64::from(v),
                        Some(AttributeValue::Data4(v)) => i64::from(v),
                        Some(AttributeValue::Data8(v)) => v as i64,
                        _ => continue,
                    };
                    values.push((n, v));
                }
                Type::Enum { name, size: size.unwrap_or(4), values }
            }
            gimli::DW_TAG_array_type => {
                let mut dims = Vec::new();
                for c in children.iter().filter(|c| c.tag() == gimli::DW_TAG_subrange_type) {
                    let count = c.attr(gimli::DW_AT_count).and_then(|a| a.udata_value());
                    let upper = c.attr(gimli::DW_AT_upper_bound).and_then(|a| match a.value() {
                        AttributeValue::Sdata(v) if v >= 0 => Some(v as u64 + 1),
                        AttributeValue::Sdata(_) => Some(0),
                        _ => a.udata_value().map(|v| v.wrapping_add(1)),
                    });
                    dims.push(count.or(upper));
                }
                if dims.is_empty() {
                    dims.push(None);
                }
                Type::Array { elem: target, dims }
            }
            gimli::DW_TAG_typedef => Type::Typedef { name: name.unwrap_or_else(|| "?".into()), target },
            gimli::DW_TAG_const_type => Type::Qualified { qualifier: "const", target },
            gimli::DW_TAG_volatile_type => Type::Qualified { qualifier: "volatile", target },
            gimli::DW_TAG_restrict_type => Type::Qualified { qualifier: "restrict", target },
            gimli::DW_TAG_atomic_type => Type::Qualified { qualifier: "_Atomic", target },
            gimli::DW_TAG_subroutine_type => Type::Function,
            other => Type::Other { tag: other.to_string() },
        };
        Ok(t)
    }

    fn name_of(&self, unit: &gimli::Unit<R<'a>>, entry: &gimli::DebuggingInformationEntry<R<'a>>) -> Option<String> {
        let v = entry.attr_value(gimli::DW_AT_name)?;
        let s = self.dwarf.attr_string(unit, v).ok()?;
        Some(s.to_string_lossy().into_owned())
    }

    fn type_ref(&self, ustart: usize, entry: &gimli::DebuggingInformationEntry<R<'a>>) -> Option<TypeId> {
        match entry.attr_value(gimli::DW_AT_type)? {
            AttributeValue::UnitRef(o) => Some(ustart + o.0),
            AttributeValue::DebugInfoRef(o) => Some(o.0),
            _ => None,
        }
    }

    fn read_field(
        &mut self,
        unit: &gimli::Unit<R<'a>>,
        ustart: usize,
        e: &gimli::DebuggingInformationEntry<R<'a>>,
        parent_size: Option<u64>,
    ) -> Result<Field, DeriveError> {
        let name = self.name_of(unit, e);
        let ty = self.type_ref(ustart, e);
        let mut offset = match e.attr(gimli::DW_AT_data_member_location) {
            None => 0, // union members, or C's implicit 0
            Some(a) => match a.value() {
                AttributeValue::Exprloc(expr) => eval_member_location(expr, unit.encoding()).ok_or_else(|| {
                    DeriveError::Dwarf(format!(
                        "member {}: unsupported DW_AT_data_member_location expression",
                        name.as_deref().unwrap_or("<anonymous>")
                    ))
                })?,
                _ => a.udata_value().unwrap_or(0),
            },
        };
        let bit_size = e.attr(gimli::DW_AT_bit_size).and_then(|a| a.udata_value());
        let mut bit_offset = e.attr(gimli::DW_AT_data_bit_offset).and_then(|a| a.udata_value());
        if bit_offset.is_none() && bit_size.is_some() {
            // DWARF 2/3 style: DW_AT_bit_offset counts from the most significant bit of the
            // storage unit (DW_AT_byte_size) on little-endian targets.
            if let Some(old) = e.attr(gimli::DW_AT_bit_offset).and_then(|a| a.udata_value()) {
                let storage = e.attr(gimli::DW_AT_byte_size).and_then(|a| a.udata_value()).or(parent_size).unwrap_or(4);
                let bits = bit_size.unwrap_or(0);
                bit_offset = Some(offset * 8 + (storage * 8).saturating_sub(old + bits));
            }
        }
        if let Some(bo) = bit_offset {
            offset = bo / 8;
        }
        Ok(Field { name, offset, bit_offset, bit_size, ty })
    }
}

/// Evaluate the DWARF 2 form of `DW_AT_data_member_location`: `DW_OP_plus_uconst N` (or a
/// constant). Anything else is not a plain member offset.
fn eval_member_location(expr: gimli::Expression<R<'_>>, enc: gimli::Encoding) -> Option<u64> {
    let mut ops = expr.operations(enc);
    let mut acc = 0u64;
    while let Ok(Some(op)) = ops.next() {
        match op {
            gimli::Operation::PlusConstant { value } => acc = acc.wrapping_add(value),
            gimli::Operation::UnsignedConstant { value } => acc = value,
            gimli::Operation::SignedConstant { value } => acc = value as u64,
            _ => return None,
        }
    }
    Some(acc)
}

impl TypeGraph for DwarfTypes<'_> {
    /// Read (and cache) the type DIE `id`.
    fn ty(&mut self, id: TypeId) -> Result<Rc<Type>, DeriveError> {
        if let Some(t) = self.cache.get(&id) {
            return Ok(t.clone());
        }
        let t = Rc::new(self.read_type(id)?);
        self.cache.insert(id, t.clone());
        Ok(t)
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
