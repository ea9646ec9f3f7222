//! Error types.

use std::path::PathBuf;

/// A member or type that could not be resolved (in DWARF, or in a loaded profile).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("struct {0}: not defined")]
    NoStruct(String),
    #[error("{struct_name}.{path}: struct {struct_name} has no member `{missing}`")]
    NoMember { struct_name: String, path: String, missing: String },
    #[error("{path}: not a struct or union, cannot look inside it")]
    NotComposite { path: String },
    #[error("symbol {0}: not in the profile")]
    NoSymbol(String),
    #[error("constant {0}: not in the profile")]
    NoConstant(String),
    #[error("enum {0}: not in the profile")]
    NoEnum(String),
    #[error("enum {0}: has no enumerator {1}")]
    NoEnumerator(String, String),
    #[error("DWARF: {0}")]
    Dwarf(String),
}

/// Failure to derive a profile from a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ELF: {0}")]
    Elf(String),
    #[error("DWARF: {0}")]
    Dwarf(String),
    #[error("BTF: {0}")]
    Btf(String),
    #[error("unsupported architecture {0} (supported: i386, x86_64)")]
    UnsupportedArch(String),
    #[error("the image has no {0}")]
    Missing(String),
}

/// Failure to load or use a profile file.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid kernel profile: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("kernel profile format {found} is not supported (this build reads format {supported})")]
    Format { found: u32, supported: u32 },
    #[error("{0}")]
    Lookup(#[from] LookupError),
}
