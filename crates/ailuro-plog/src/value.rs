//! Field values and records: the self-describing data model of a plog, and its JSON rendering.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// Value type tags in the encoding (docs/PLOG.md, "Values"). Never reused or renumbered.
pub(crate) mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const U64: u8 = 3;
    pub const I64: u8 = 4;
    pub const F64: u8 = 5;
    pub const STR: u8 = 6;
    pub const BYTES: u8 = 7;
    pub const LIST: u8 = 8;
    pub const MAP: u8 = 9;
}

/// Field names a record may not use: they are the record's own columns in the JSON view.
pub const RESERVED_KEYS: [&str; 5] = ["icount", "pc", "asid", "plugin", "kind"];

/// Whether `key` is one of [`RESERVED_KEYS`] (cheap: dispatches on the length first).
#[inline]
pub(crate) fn is_reserved(key: &str) -> bool {
    match key.len() {
        2 => key == "pc",
        4 => key == "asid" || key == "kind",
        6 => key == "icount" || key == "plugin",
        _ => false,
    }
}

/// An owned field value. Maps keep their entries in order; their keys are unique and non-empty.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (also what `None` becomes).
    Null,
    /// A boolean.
    Bool(bool),
    /// An unsigned integer (addresses, counts, sizes).
    U64(u64),
    /// A signed integer (return values, offsets).
    I64(i64),
    /// An IEEE-754 double, stored bit-exactly (NaN payloads included).
    F64(f64),
    /// UTF-8 text. Data that may not be UTF-8 (guest strings, buffers) belongs in [`Self::Bytes`].
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A sequence of values (may mix types).
    List(Vec<Value>),
    /// Named values, in order; keys are unique and non-empty (at most [`crate::MAX_NAME_LEN`] bytes).
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A borrowed view, as the writer takes it.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Bool(b) => ValueRef::Bool(*b),
            Self::U64(v) => ValueRef::U64(*v),
            Self::I64(v) => ValueRef::I64(*v),
            Self::F64(v) => ValueRef::F64(*v),
            Self::Str(s) => ValueRef::Str(s),
            Self::Bytes(b) => ValueRef::Bytes(b),
            Self::List(l) => ValueRef::List(l),
            Self::Map(m) => ValueRef::Map(m),
        }
    }

    /// Name of the variant ("null", "bool", "u64", "i64", "f64", "str", "bytes", "list", "map").
    pub fn type_name(&self) -> &'static str {
        self.as_value_ref().type_name()
    }

    /// The number, if this is a `U64` (or a non-negative `I64`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U64(v) => Some(v),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The number, if this is an `I64` (or a `U64` that fits).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I64(v) => Some(v),
            Self::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The number, if this is an `F64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The text, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is a `List`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Self::List(l) => Some(l),
            _ => None,
        }
    }

    /// The value under `key`, if this is a `Map` that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A borrowed field value: what [`crate::RecordBuilder::field`] takes, so that writing a record
/// needs no allocation. Built with `.into()` from integers, floats, `bool`, `&str`, `&String`,
/// `&[u8]` / `&Vec<u8>` / `&[u8; N]` (bytes), `&Value`, `&[Value]` (list) and `Option<T>`
/// (`None` is `Null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// See [`Value::Null`].
    Null,
    /// See [`Value::Bool`].
    Bool(bool),
    /// See [`Value::U64`].
    U64(u64),
    /// See [`Value::I64`].
    I64(i64),
    /// See [`Value::F64`].
    F64(f64),
    /// See [`Value::Str`].
    Str(&'a str),
    /// See [`Value::Bytes`].
    Bytes(&'a [u8]),
    /// See [`Value::List`].
    List(&'a [Value]),
    /// See [`Value::Map`].
    Map(&'a [(String, Value)]),
}

impl ValueRef<'_> {
    /// An owned copy.
    pub fn to_value(&self) -> Value {
        match *self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(b),
            Self::U64(v) => Value::U64(v),
            Self::I64(v) => Value::I64(v),
            Self::F64(v) => Value::F64(v),
            Self::Str(s) => Value::Str(s.to_owned()),
            Self::Bytes(b) => Value::Bytes(b.to_vec()),
            Self::List(l) => Value::List(l.to_vec()),
            Self::Map(m) => Value::Map(m.to_vec()),
        }
    }

    /// Name of the variant, as [`Value::type_name`].
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F64(_) => "f64",
            Self::Str(_) => "str",
            Self::Bytes(_) => "bytes",
            Self::List(_) => "list",
            Self::Map(_) => "map",
        }
    }
}

macro_rules! from_num {
    ($variant:ident, $as:ty: $($t:ty),*) => {$(
        impl From<$t> for ValueRef<'_> {
            #[inline]
            fn from(v: $t) -> Self {
                ValueRef::$variant(v as $as)
            }
        }
        impl From<$t> for Value {
            #[inline]
            fn from(v: $t) -> Self {
                Value::$variant(v as $as)
            }
        }
    )*};
}
from_num!(U64, u64: u8, u16, u32, u64, usize);
from_num!(I64, i64: i8, i16, i32, i64, isize);
from_num!(F64, f64: f32, f64);

impl From<bool> for ValueRef<'_> {
    fn from(v: bool) -> Self {
        ValueRef::Bool(v)
    }
}
impl<'a> From<&'a str> for ValueRef<'a> {
    fn from(v: &'a str) -> Self {
        ValueRef::Str(v)
    }
}
impl<'a> From<&'a String> for ValueRef<'a> {
    fn from(v: &'a String) -> Self {
        ValueRef::Str(v)
    }
}
impl<'a> From<&'a [u8]> for ValueRef<'a> {
    fn from(v: &'a [u8]) -> Self {
        ValueRef::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for ValueRef<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        ValueRef::Bytes(v)
    }
}
impl<'a, const N: usize> From<&'a [u8; N]> for ValueRef<'a> {
    fn from(v: &'a [u8; N]) -> Self {
        ValueRef::Bytes(v)
    }
}
impl<'a> From<&'a [Value]> for ValueRef<'a> {
    fn from(v: &'a [Value]) -> Self {
        ValueRef::List(v)
    }
}
impl<'a> From<&'a Vec<Value>> for ValueRef<'a> {
    fn from(v: &'a Vec<Value>) -> Self {
        ValueRef::List(v)
    }
}
impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        v.as_value_ref()
    }
}
impl<'a, T: Into<ValueRef<'a>>> From<Option<T>> for ValueRef<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(ValueRef::Null, Into::into)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}
impl From<Vec<(String, Value)>> for Value {
    fn from(v: Vec<(String, Value)>) -> Self {
        Value::Map(v)
    }
}
impl From<ValueRef<'_>> for Value {
    fn from(v: ValueRef<'_>) -> Self {
        v.to_value()
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One record as read back from a plog.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRecord {
    /// Instruction count (program point) at which the plugin emitted the record.
    pub icount: u64,
    /// Guest program counter at that point.
    pub pc: u64,
    /// Address-space identifier (CR3/TTBR), if the plugin gave one.
    pub asid: Option<u64>,
    /// Name of the emitting plugin.
    pub plugin: String,
    /// Record kind within the plugin ("syscall", "string_hit", ...).
    pub kind: String,
    /// The fields, in the order written; keys are unique, non-empty and not [`RESERVED_KEYS`].
    pub fields: Vec<(String, Value)>,
}

impl OwnedRecord {
    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The record as one line of JSON (no newline), as `ailuro-plog dump` prints it.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (all map keys are strings).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Lowercase hexadecimal, two digits per byte.
pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[usize::from(x >> 4)] as char);
        s.push(D[usize::from(x & 15)] as char);
    }
    s
}

/// JSON rendering (docs/PLOG.md, "JSON view"): `U64`/`I64` as JSON integers (exact, even above
/// 2^53), finite `F64` as numbers and non-finite ones as the strings `"NaN"`, `"Infinity"`,
/// `"-Infinity"`, `Bytes` as a lowercase hex string, `List` as an array, `Map` as an object.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::U64(v) => s.serialize_u64(*v),
            Self::I64(v) => s.serialize_i64(*v),
            Self::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Self::F64(v) if v.is_nan() => s.serialize_str("NaN"),
            Self::F64(v) => s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" }),
            Self::Str(t) => s.serialize_str(t),
            Self::Bytes(b) => s.serialize_str(&hex(b)),
            Self::List(l) => {
                let mut q = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    q.serialize_element(v)?;
                }
                q.end()
            }
            Self::Map(m) => {
                let mut q = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    q.serialize_entry(k, v)?;
                }
                q.end()
            }
        }
    }
}

/// JSON rendering of a record: one flat object, `icount` (number), `pc` and `asid` (hex strings
/// `"0x..."`; `asid` omitted when absent), `plugin`, `kind`, then the fields in order.
impl Serialize for OwnedRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4 + usize::from(self.asid.is_some()) + self.fields.len()))?;
        m.serialize_entry("icount", &self.icount)?;
        m.serialize_entry("pc", &format!("{:#x}", self.pc))?;
        if let Some(a) = self.asid {
            m.serialize_entry("asid", &format!("{a:#x}"))?;
        }
        m.serialize_entry("plugin", &self.plugin)?;
        m.serialize_entry("kind", &self.kind)?;
        for (k, v) in &self.fields {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys_are_recognised() {
        for k in RESERVED_KEYS {
            assert!(is_reserved(k));
        }
        for k in ["", "p", "pcs", "Kind", "icounts", "name", "fd"] {
            assert!(!is_reserved(k), "{k}");
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(ValueRef::from(3u8), ValueRef::U64(3));
        assert_eq!(ValueRef::from(-3i32), ValueRef::I64(-3));
        assert_eq!(ValueRef::from(None::<u32>), ValueRef::Null);
        assert_eq!(ValueRef::from(Some("x")), ValueRef::Str("x"));
        assert_eq!(ValueRef::from(&[1u8, 2]), ValueRef::Bytes(&[1, 2]));
        let v = Value::Map(vec![("a".into(), Value::from(vec![Value::from(1u64), Value::Null]))]);
        assert_eq!(ValueRef::from(&v).to_value(), v);
        assert_eq!(v.get("a").and_then(|l| l.as_list()).map(<[Value]>::len), Some(2));
        assert_eq!(Value::I64(5).as_u64(), Some(5));
        assert_eq!(Value::I64(-5).as_u64(), None);
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::from(Some(2.5f64)).as_f64(), Some(2.5));
        assert_eq!(Value::from(b"ab".as_slice()).type_name(), "bytes");
    }

    #[test]
    fn json_rendering() {
        let r = OwnedRecord {
            icount: 123,
            pc: 0xc100_0000,
            asid: Some(0x123_4000),
            plugin: "syscalls".into(),
            kind: "syscall".into(),
            fields: vec![
                ("name".into(), "openat\n\"x\"\u{1}".into()),
                ("fd".into(), Value::U64(3)),
                ("big".into(), Value::U64(u64::MAX)),
                ("neg".into(), Value::I64(i64::MIN)),
                ("buf".into(), Value::Bytes(vec![0, 0xab, 0x7f])),
                ("f".into(), Value::F64(1.5)),
                ("nan".into(), Value::F64(f64::NAN)),
                ("inf".into(), Value::F64(f64::NEG_INFINITY)),
                ("l".into(), Value::List(vec![Value::Null, Value::Bool(true)])),
                ("m".into(), Value::Map(vec![("z".into(), Value::U64(1)), ("a".into(), Value::U64(2))])),
            ],
        };
        assert_eq!(
            r.to_json(),
            r#"{"icount":123,"pc":"0xc1000000","asid":"0x1234000","plugin":"syscalls","kind":"syscall","#.to_owned()
                + r#""name":"openat\n\"x\"\u0001","fd":3,"big":18446744073709551615,"neg":-9223372036854775808,"#
                + r#""buf":"00ab7f","f":1.5,"nan":"NaN","inf":"-Infinity","l":[null,true],"m":{"z":1,"a":2}}"#
        );
        let r2 = OwnedRecord { asid: None, fields: vec![], ..r };
        assert_eq!(r2.to_json(), r#"{"icount":123,"pc":"0xc1000000","plugin":"syscalls","kind":"syscall"}"#);
    }
}
