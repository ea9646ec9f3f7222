//! Deriving from the real Debian debug vmlinux reproduces the committed profiles exactly.
//! The vmlinux (from the ~0.8 GB -dbg package) is not fetched by tests: each test is skipped,
//! with a note, unless `scripts/fetch-kernel-dbg.sh ARCH` has put it into the cache.

use std::path::PathBuf;

use ailuro_kprofile::{bundled_profiles_dir, derive_from_path, KernelProfile};

/// `${AILURO_CACHE:-$HOME/.cache/ailuro}/kdbg/ARCH/vmlinux-KVER`, if it exists.
pub fn cached_vmlinux(arch: &str, kver: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("AILURO_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ailuro")))?;
    let p = cache.join("kdbg").join(arch).join(format!("vmlinux-{kver}"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("note: skipping: {} not present (run scripts/fetch-kernel-dbg.sh {arch})", p.display());
        None
    }
}

fn check(arch: &str, kver: &str) {
    let Some(vmlinux) = cached_vmlinux(arch, kver) else { return };
    let d = derive_from_path(&vmlinux).unwrap();
    assert!(d.errors.is_empty(), "{:#?}", d.errors);
    let committed = KernelProfile::load(bundled_profiles_dir().join(format!("linux-{kver}.toml"))).unwrap();
    assert_eq!(d.profile, committed, "derived profile differs from the committed one: regenerate it");
    assert_eq!(
        d.profile.to_toml(),
        std::fs::read_to_string(bundled_profiles_dir().join(format!("linux-{kver}.toml"))).unwrap()
    );
}

#[test]
fn i386_profile_is_reproducible() {
    check("i386", "6.1.0-50-686");
}

#[test]
fn amd64_profile_is_reproducible() {
    check("amd64", "6.1.0-50-amd64");
}
