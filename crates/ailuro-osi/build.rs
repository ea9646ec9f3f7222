//! Embeds every kernel profile shipped in `crates/ailuro-kprofile/profiles/` (`*.toml`), so that
//! `osi_linux` can pick the one matching the guest's banner without being told a path. A profile
//! added to that directory is picked up by the next build.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../ailuro-kprofile/profiles");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    names.sort();
    let mut out = String::from("/// (file name, text) of each shipped profile, sorted by name.\n");
    out.push_str("pub(crate) static EMBEDDED: &[(&str, &str)] = &[\n");
    for p in &names {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let _ = writeln!(out, "    ({name:?}, include_str!({:?})),", abs.display().to_string());
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("profiles.rs");
    std::fs::write(dest, out).expect("write profiles.rs");
}
