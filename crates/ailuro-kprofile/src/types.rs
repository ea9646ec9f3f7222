//! The C type model shared by the DWARF and BTF readers, and member resolution on top of it.
//!
//! [`TypeGraph::member`] resolves a dotted member path (`f_path.dentry`) through anonymous
//! structs and unions, adding up the offsets on the way, as C does.

use std::rc::Rc;

use crate::error::{DeriveError, LookupError};

/// A type, named by its DWARF DIE offset in `.debug_info` or by its BTF type id.
pub type TypeId = usize;

/// Which C aggregate a composite type is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompositeKind {
    Struct,
    Union,
}

impl CompositeKind {
    pub fn keyword(self) -> &'static str {
        match self {
            CompositeKind::Struct => "struct",
            CompositeKind::Union => "union",
        }
    }
}

/// One member of a struct or union as DWARF describes it.
#[derive(Clone, Debug)]
pub struct Field {
    /// `None` for an anonymous struct/union member.
    pub name: Option<String>,
    /// Byte offset inside the containing type (for a bit field: of its storage unit).
    pub offset: u64,
    /// Bit offset from the start of the containing type, for bit fields.
    pub bit_offset: Option<u64>,
    /// Width in bits, for bit fields.
    pub bit_size: Option<u64>,
    pub ty: Option<TypeId>,
}

/// A type as far as layouts need it.
#[derive(Clone, Debug)]
pub enum Type {
    Base {
        name: String,
        size: u64,
    },
    Pointer {
        target: Option<TypeId>,
        size: u64,
    },
    Composite {
        kind: CompositeKind,
        name: Option<String>,
        size: Option<u64>,
        fields: Vec<Field>,
    },
    Enum {
        name: Option<String>,
        size: u64,
        values: Vec<(String, i64)>,
    },
    Array {
        elem: Option<TypeId>,
        /// Element count of each dimension (`None`: flexible/unknown).
        dims: Vec<Option<u64>>,
    },
    Typedef {
        name: String,
        target: Option<TypeId>,
    },
    Qualified {
        qualifier: &'static str,
        target: Option<TypeId>,
    },
    Function,
    Other {
        tag: String,
    },
}

/// A resolved member: where it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Byte offset from the start of the outermost struct (all anonymous levels added up).
    pub offset: u64,
    /// Size in bytes (`None` for a flexible array or an incomplete type).
    pub size: Option<u64>,
    /// C spelling of the type, e.g. `struct list_head`, `char[16]`, `struct mm_struct *`.
    pub type_name: String,
    /// Element count of an array member (first dimension).
    pub count: Option<u64>,
    /// Bit offset inside the outermost struct and width, for bit fields.
    pub bit_offset: Option<u64>,
    pub bit_size: Option<u64>,
}

/// A source of C types: DWARF ([`crate::dwarf::DwarfTypes`]) or BTF ([`crate::btf::Btf`]).
/// Implementors provide the lookups; layout computations come with the trait.
pub trait TypeGraph {
    /// Read the type `id`.
    fn ty(&mut self, id: TypeId) -> Result<Rc<Type>, DeriveError>;
    /// The first complete definition of `struct NAME` (or `union NAME` if there is no such struct).
    fn composite_by_name(&self, name: &str) -> Option<TypeId>;
    /// `typedef NAME`.
    fn typedef_by_name(&self, name: &str) -> Option<TypeId>;
    /// `enum NAME`.
    fn enum_by_name(&self, name: &str) -> Option<TypeId>;

    /// The enumerators of `enum NAME`.
    fn enum_values(&mut self, name: &str) -> Result<Option<Vec<(String, i64)>>, DeriveError> {
        let Some(id) = self.enum_by_name(name) else {
            return Ok(None);
        };
        match &*self.ty(id)? {
            Type::Enum { values, .. } => Ok(Some(values.clone())),
            _ => Ok(None),
        }
    }

    /// Follow typedefs and qualifiers to the type that has a layout.
    fn strip(&mut self, mut id: TypeId) -> Result<(TypeId, Rc<Type>), DeriveError> {
        for _ in 0..64 {
            let t = self.ty(id)?;
            match &*t {
                Type::Typedef { target: Some(next), .. } | Type::Qualified { target: Some(next), .. } => id = *next,
                _ => return Ok((id, t)),
            }
        }
        Err(DeriveError::Dwarf(format!("type chain too long at 0x{id:x}")))
    }

    /// Size in bytes of a type (`None` if incomplete, e.g. a flexible array or `void`).
    fn size_of(&mut self, id: TypeId) -> Result<Option<u64>, DeriveError> {
        let (_, t) = self.strip(id)?;
        Ok(match &*t {
            Type::Base { size, .. } | Type::Pointer { size, .. } | Type::Enum { size, .. } => Some(*size),
            Type::Composite { size, .. } => *size,
            Type::Array { elem, dims } => {
                let Some(elem) = elem else { return Ok(None) };
                let mut n = 1u64;
                for d in dims {
                    match d {
                        Some(d) => n = n.saturating_mul(*d),
                        None => return Ok(None),
                    }
                }
                self.size_of(*elem)?.map(|s| s * n)
            }
            _ => None,
        })
    }

    /// C spelling of a type, as pahole would print it in a member declaration.
    fn type_name(&mut self, id: Option<TypeId>) -> Result<String, DeriveError> {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&mut self, id: Option<TypeId>, depth: u32) -> Result<String, DeriveError> {
        let Some(id) = id else {
            return Ok("void".into());
        };
        if depth > 16 {
            return Ok("...".into());
        }
        let t = self.ty(id)?;
        Ok(match &*t {
            Type::Base { name, .. } | Type::Typedef { name, .. } => name.clone(),
            Type::Pointer { target, .. } => {
                let inner = self.type_name_depth(*target, depth + 1)?;
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            Type::Composite { kind, name, .. } => match name {
                Some(n) => format!("{} {n}", kind.keyword()),
                None => format!("{} {{...}}", kind.keyword()),
            },
            Type::Enum { name, .. } => match name {
                Some(n) => format!("enum {n}"),
                None => "enum {...}".into(),
            },
            Type::Array { elem, dims } => {
                let mut s = self.type_name_depth(*elem, depth + 1)?;
                for d in dims {
                    match d {
                        Some(d) => s.push_str(&format!("[{d}]")),
                        None => s.push_str("[]"),
                    }
                }
                s
            }
            Type::Qualified { qualifier, target } => {
                format!("{qualifier} {}", self.type_name_depth(*target, depth + 1)?)
            }
            Type::Function => "fn".into(),
            Type::Other { tag } => tag.clone(),
        })
    }

    /// Size of `struct NAME` (or union).
    fn struct_size(&mut self, name: &str) -> Result<u64, LookupError> {
        let id = self.composite_by_name(name).ok_or_else(|| LookupError::NoStruct(name.to_string()))?;
        let t = self.ty(id).map_err(|e| LookupError::Dwarf(e.to_string()))?;
        match &*t {
            Type::Composite { size: Some(s), .. } => Ok(*s),
            _ => Err(LookupError::NoStruct(name.to_string())),
        }
    }

    /// Size of `typedef NAME` (e.g. `pte_t`).
    fn typedef_size(&mut self, name: &str) -> Result<Option<u64>, DeriveError> {
        match self.typedef_by_name(name) {
            Some(id) => self.size_of(id),
            None => Ok(None),
        }
    }

    /// Resolve `path` (member names joined by `.`) in `struct struct_name`. Anonymous structs and
    /// unions are searched transparently and their offsets added, so `mm_struct` + `mm_mt` works
    /// even though 6.1 puts `mm_mt` inside an anonymous struct.
    fn member(&mut self, struct_name: &str, path: &str) -> Result<MemberInfo, LookupError> {
        let id = self.composite_by_name(struct_name).ok_or_else(|| LookupError::NoStruct(struct_name.to_string()))?;
        self.member_in(id, struct_name, path)
    }

    /// Like [`DwarfTypes::member`], starting from the composite type DIE `id`.
    fn member_in(&mut self, id: TypeId, struct_name: &str, path: &str) -> Result<MemberInfo, LookupError> {
        let dw = |e: DeriveError| LookupError::Dwarf(e.to_string());
        let mut cur = id;
        let mut base = 0u64;
        let mut found: Option<Field> = None;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                let prev = found.as_ref().expect("set in the previous iteration");
                let Some(ty) = prev.ty else {
                    return Err(LookupError::NotComposite { path: format!("{struct_name}.{}", parts[..i].join(".")) });
                };
                let (sid, t) = self.strip(ty).map_err(dw)?;
                if !matches!(&*t, Type::Composite { .. }) {
                    return Err(LookupError::NotComposite { path: format!("{struct_name}.{}", parts[..i].join(".")) });
                }
                cur = sid;
            }
            match self.find_field(cur, part, 0).map_err(dw)? {
                Some((extra, f)) => {
                    base += extra + f.offset;
                    found = Some(f);
                }
                None => {
                    return Err(LookupError::NoMember {
                        struct_name: struct_name.to_string(),
                        path: path.to_string(),
                        missing: part.to_string(),
                    });
                }
            }
        }
        let f = found.expect("path has at least one part");
        let size = match f.ty {
            Some(t) => self.size_of(t).map_err(dw)?,
            None => None,
        };
        let type_name = self.type_name(f.ty).map_err(dw)?;
        let count = match f.ty {
            Some(t) => match &*self.strip(t).map_err(dw)?.1 {
                Type::Array { dims, .. } => dims.first().copied().flatten(),
                _ => None,
            },
            None => None,
        };
        // bit offsets are relative to the innermost containing type; make them absolute
        let bit_offset = f.bit_offset.map(|b| (base - f.offset) * 8 + b);
        Ok(MemberInfo {
            offset: base,
            size: if f.bit_size.is_some() { None } else { size },
            type_name,
            count,
            bit_offset,
            bit_size: f.bit_size,
        })
    }

    /// Find a named field in composite `id`, searching anonymous members depth-first.
    /// Returns the offset of the anonymous container(s) and the field itself.
    fn find_field(&mut self, id: TypeId, name: &str, depth: u32) -> Result<Option<(u64, Field)>, DeriveError> {
        if depth > 16 {
            return Ok(None);
        }
        let (_, t) = self.strip(id)?;
        let Type::Composite { fields, .. } = &*t else {
            return Ok(None);
        };
        if let Some(f) = fields.iter().find(|f| f.name.as_deref() == Some(name)) {
            return Ok(Some((0, f.clone())));
        }
        for f in fields.iter().filter(|f| f.name.is_none()) {
            if let Some(ty) = f.ty {
                if let Some((extra, inner)) = self.find_field(ty, name, depth + 1)? {
                    return Ok(Some((f.offset + extra, inner)));
                }
            }
        }
        Ok(None)
    }
}
