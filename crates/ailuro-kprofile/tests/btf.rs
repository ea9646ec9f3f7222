//! BTF: a hand-built `.BTF` blob exercises the reader; the real Debian amd64 bzImage (when the
//! guest kernel is cached) must give exactly the layouts that DWARF gave.

use std::path::PathBuf;

use ailuro_kprofile::btf::Btf;
use ailuro_kprofile::{bundled_profiles_dir, derive_from_btf, KernelProfile, TypeGraph};

/// A minimal BTF writer for the test.
#[derive(Default)]
struct Blob {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Blob {
    fn new() -> Blob {
        Blob { types: Vec::new(), strings: vec![0], next_id: 1 }
    }
    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }
    fn w(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }
    fn head(&mut self, name: &str, kind: u32, vlen: u32, flag: bool, size_type: u32) -> u32 {
        let n = self.s(name);
        self.w(n);
        self.w((kind << 24) | vlen | (u32::from(flag) << 31));
        self.w(size_type);
        let id = self.next_id;
        self.next_id += 1;
        id
    }
    fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.head(name, 1, 0, false, size);
        self.w(size * 8);
        id
    }
    fn ptr(&mut self, to: u32) -> u32 {
        self.head("", 2, 0, false, to)
    }
    fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", 3, 0, false, 0);
        self.w(elem);
        self.w(index);
        self.w(n);
        id
    }
    /// members: (name, type, bit offset, bitfield size)
    fn composite(&mut self, name: &str, union: bool, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
        let flag = members.iter().any(|m| m.3 != 0);
        let id = self.head(name, if union { 5 } else { 4 }, members.len() as u32, flag, size);
        for (n, t, off, bits) in members {
            let n = self.s(n);
            self.w(n);
            self.w(*t);
            self.w(if flag { (bits << 24) | off } else { *off });
        }
        id
    }
    fn finish(self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        for v in [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

#[test]
fn hand_built_btf() {
    let mut b = Blob::new();
    let int = b.int("int", 4);
    let long = b.int("long int", 8);
    let uint = b.int("unsigned int", 4);
    let chr = b.int("char", 1);
    let inner_s = b.composite("", false, 4, &[("b", int, 0, 0)]);
    let anon_u = b.composite("", true, 8, &[("", inner_s, 0, 0), ("c", long, 0, 0)]);
    let row = b.array(chr, int, 2);
    let grid = b.array(row, int, 4);
    let fwd_ptr = b.ptr(0); // void *
                            // struct outer { int a; union { struct { int b; }; long c; }; unsigned x:3, y:5; char name[4][2]; void *p; }
    b.composite(
        "outer",
        false,
        40,
        &[
            ("a", int, 0, 0),
            ("", anon_u, 64, 0),
            ("x", uint, 128, 3),
            ("y", uint, 131, 5),
            ("name", grid, 160, 0),
            ("p", fwd_ptr, 256, 0),
        ],
    );
    let mut btf = Btf::parse(&b.finish(), 8).unwrap();
    assert_eq!(btf.struct_size("outer").unwrap(), 40);
    let m = btf.member("outer", "b").unwrap();
    assert_eq!((m.offset, m.size, m.type_name.as_str()), (8, Some(4), "int"));
    assert_eq!(btf.member("outer", "c").unwrap().offset, 8);
    let y = btf.member("outer", "y").unwrap();
    assert_eq!((y.offset, y.bit_offset, y.bit_size, y.size), (16, Some(131), Some(5), None));
    let name = btf.member("outer", "name").unwrap();
    assert_eq!((name.offset, name.size, name.count, name.type_name.as_str()), (20, Some(8), Some(4), "char[4][2]"));
    let p = btf.member("outer", "p").unwrap();
    assert_eq!((p.offset, p.size, p.type_name.as_str()), (32, Some(8), "void *"));
    assert_eq!(btf.member("outer", "zz").unwrap_err().to_string(), "outer.zz: struct outer has no member `zz`");
    assert!(Btf::parse(b"\x9f\xeb\x01\x00", 8).is_err());
}

fn cached_vmlinuz(arch: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("AILURO_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ailuro")))?;
    let p = cache.join("linux").join(arch).join("vmlinuz");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("note: skipping: {} not present (run scripts/fetch-linux-guest.sh {arch})", p.display());
        None
    }
}

/// The amd64 guest kernel carries BTF: with the symbol addresses supplied as a System.map, the
/// BTF-derived profile is the DWARF-derived one (committed), down to the banner.
#[test]
fn amd64_bzimage_btf_agrees_with_dwarf() {
    let Some(vmlinuz) = cached_vmlinuz("amd64") else { return };
    let image = std::fs::read(vmlinuz).unwrap();
    let dwarf = KernelProfile::load(bundled_profiles_dir().join("linux-6.1.0-50-amd64.toml")).unwrap();
    // the addresses, as a user would capture /proc/kallsyms in the guest
    let map: String = dwarf.symbols.iter().map(|(n, a)| format!("{:016x} T {n}\n", a.0)).collect();
    let d = derive_from_btf(&image, Some(&map)).unwrap();
    assert!(d.errors.is_empty(), "{:#?}", d.errors);
    let mut btf = d.profile;
    assert_eq!(btf.kernel.source.as_deref(), Some("btf"));
    btf.kernel.source = dwarf.kernel.source.clone();
    assert_eq!(btf.structs, dwarf.structs, "struct layouts from BTF and DWARF differ");
    assert_eq!(btf.enums, dwarf.enums);
    assert_eq!(btf.constants, dwarf.constants);
    assert_eq!(btf, dwarf);

    // without symbols: layouts and banner still come out; the missing symbols are named
    let d = derive_from_btf(&image, None).unwrap();
    assert_eq!(d.profile.structs, dwarf.structs);
    assert_eq!(d.profile.kernel.banner, dwarf.kernel.banner);
    assert_eq!(d.profile.symbol("linux_banner").unwrap(), dwarf.symbol("linux_banner").unwrap());
    assert!(d.errors.iter().any(|e| e == "symbol init_task: not in the symbol table"), "{:#?}", d.errors);
}

#[test]
fn i386_bzimage_has_no_btf() {
    let Some(vmlinuz) = cached_vmlinuz("i386") else { return };
    let image = std::fs::read(vmlinuz).unwrap();
    let e = derive_from_btf(&image, None).unwrap_err();
    assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{e}");
}
