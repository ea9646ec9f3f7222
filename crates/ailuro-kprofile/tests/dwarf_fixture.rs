//! DWARF reading against layouts computed by the C compiler itself: the fixture
//! `fixtures/layout.c` is compiled with gcc (several DWARF versions, 64- and 32-bit, relocatable
//! and linked) and its `expect_table` (offsetof/sizeof values) is compared with what
//! `DwarfTypes` resolves. Also: deriving a whole profile from a tiny fake kernel with missing
//! members. Skipped (with a note) when gcc is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use ailuro_kprofile::{derive_from_elf, ElfImage, LookupError, TypeGraph};
use object::{Object, ObjectSection, ObjectSymbol};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Run gcc; `None` (with a note) if gcc is missing or cannot build this variant.
fn gcc(dir: &Path, out: &str, args: &[&str]) -> Option<PathBuf> {
    let out = dir.join(out);
    let r = Command::new("gcc").args(args).arg("-o").arg(&out).output();
    match r {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!(
                "note: skipping variant {args:?}: gcc failed: {}",
                String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
            );
            None
        }
        Err(e) => {
            eprintln!("note: skipping: gcc not available ({e})");
            None
        }
    }
}

struct Expect {
    st: String,
    path: String,
    off: u64,
    size: u64,
}

/// Read `expect_table` (records of char[24], char[24], u32 offset, u32 size) from the file.
fn expect_table(data: &[u8]) -> Vec<Expect> {
    let file = object::File::parse(data).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok("expect_table")).expect("expect_table symbol");
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let sdata = section.data().unwrap();
    let start = (sym.address() - section.address()) as usize;
    let bytes = &sdata[start..start + sym.size() as usize];
    let cstr = |b: &[u8]| {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..n].to_vec()).unwrap()
    };
    bytes
        .chunks_exact(56)
        .map(|r| Expect {
            st: cstr(&r[0..24]),
            path: cstr(&r[24..48]),
            off: u64::from(u32::from_le_bytes(r[48..52].try_into().unwrap())),
            size: u64::from(u32::from_le_bytes(r[52..56].try_into().unwrap())),
        })
        .collect()
}

fn check_layout(file: &Path) {
    let data = std::fs::read(file).unwrap();
    let expect = expect_table(&data);
    assert!(expect.len() > 30, "{}: expect_table too short", file.display());
    let image = ElfImage::parse(&data).unwrap();
    let sections = image.debug_sections().unwrap();
    let mut types = sections.types().unwrap();
    for e in &expect {
        if e.path.is_empty() {
            assert_eq!(types.struct_size(&e.st).unwrap(), e.size, "{}: sizeof(struct {})", file.display(), e.st);
            continue;
        }
        let m =
            types.member(&e.st, &e.path).unwrap_or_else(|err| panic!("{}: {}.{}: {err}", file.display(), e.st, e.path));
        assert_eq!(m.offset, e.off, "{}: offsetof(struct {}, {})", file.display(), e.st, e.path);
        let want_size = if e.path == "flex" { None } else { Some(e.size) };
        assert_eq!(m.size, want_size, "{}: sizeof {}.{}", file.display(), e.st, e.path);
    }
    // types, arrays
    let comm = types.member("outer", "comm").unwrap();
    assert_eq!((comm.type_name.as_str(), comm.count), ("char[16]", Some(16)));
    assert_eq!(types.member("outer", "parent").unwrap().type_name, "const struct outer *");
    assert_eq!(types.member("outer", "tasks").unwrap().type_name, "struct list_head");
    assert_eq!(types.member("outer", "flex").unwrap().type_name, "long unsigned int[]");
    // bit fields: packed into the unsigned int right before after_bits, from bit 0 up (x86)
    let after = expect.iter().find(|e| e.path == "after_bits").unwrap().off;
    let storage_bit = (after - 4) * 8;
    for (name, bit, width) in [("bits_a", 0, 3), ("bits_b", 3, 5), ("bits_c", 8, 12)] {
        let m = types.member("outer", name).unwrap();
        assert_eq!(m.bit_offset, Some(storage_bit + bit), "{}: {name} bit offset", file.display());
        assert_eq!(m.bit_size, Some(width), "{}: {name} width", file.display());
        assert_eq!(m.offset, (storage_bit + bit) / 8);
    }
    // errors name struct.member
    let err = types.member("outer", "core_layout.nope").unwrap_err();
    assert_eq!(err.to_string(), "outer.core_layout.nope: struct outer has no member `nope`");
    assert!(matches!(err, LookupError::NoMember { .. }));
    let err = types.member("outer", "comm.x").unwrap_err();
    assert_eq!(err.to_string(), "outer.comm: not a struct or union, cannot look inside it");
    let err = types.member("no_such_struct", "x").unwrap_err();
    assert_eq!(err.to_string(), "struct no_such_struct: not defined");
}

#[test]
fn layouts_match_the_compiler() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("layout.c");
    let src = src.to_str().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("rel64.o", &["-g", "-O0", "-c"]),
        ("rel64-dwarf4.o", &["-gdwarf-4", "-O0", "-c"]),
        ("rel64-dwarf2.o", &["-gdwarf-2", "-gstrict-dwarf", "-O0", "-c"]),
        ("rel32.o", &["-m32", "-g", "-O0", "-c"]),
        ("rel32-dwarf4.o", &["-m32", "-gdwarf-4", "-O0", "-c"]),
        ("linked64.so", &["-g", "-O0", "-shared", "-fPIC"]),
    ];
    let mut checked = 0;
    for (out, flags) in variants {
        let mut args: Vec<&str> = flags.to_vec();
        args.push(src);
        let Some(obj) = gcc(dir.path(), out, &args) else { continue };
        check_layout(&obj);
        checked += 1;
    }
    if checked == 0 {
        eprintln!("note: no fixture variant could be built; DWARF fixture test skipped");
    } else {
        eprintln!("checked {checked} fixture variants");
    }
}

#[test]
fn derive_reports_missing_members_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("fake_kernel.c");
    let Some(exe) = gcc(dir.path(), "fake", &["-g", "-O0", src.to_str().unwrap()]) else { return };
    let data = std::fs::read(exe).unwrap();
    let d = derive_from_elf(&data).expect("derive must not fail on an incomplete kernel");
    let p = &d.profile;
    assert_eq!(p.kernel.release, "9.9.9-fixture");
    assert_eq!(p.kernel.version, "#1 SMP Fixture 2000");
    assert_eq!(p.kernel.banner, "Linux version 9.9.9-fixture (nobody@example) (gcc) #1 SMP Fixture 2000\n");
    assert_eq!(p.per_cpu.current_task_symbol, "current_task");
    // present members, one inside an anonymous union inside an anonymous struct
    let ts = p.layout("task_struct").unwrap();
    let tasks = ts.members["tasks"].offset;
    assert_eq!(ts.members["pid"].offset, tasks + 16);
    assert_eq!(ts.members["comm"].count, Some(16));
    // missing ones are named, not panicked over
    let has = |s: &str| d.errors.iter().any(|e| e == s);
    assert!(has("task_struct.exit_state: struct task_struct has no member `exit_state`"), "{:#?}", d.errors);
    assert!(has("task_struct.real_parent: struct task_struct has no member `real_parent`"), "{:#?}", d.errors);
    assert!(has("struct mm_struct: not defined"), "{:#?}", d.errors);
    assert!(
        d.errors.iter().any(|e| e.starts_with("none of: task_struct.thread_group: ")),
        "alternatives are reported together: {:#?}",
        d.errors
    );
    assert!(has("symbol entry_INT80_32: not in the symbol table") || p.kernel.arch.name() == "x86_64");
    // the profile still serialises and parses, and validate agrees that it is incomplete
    let back = ailuro_kprofile::KernelProfile::from_toml(&p.to_toml()).unwrap();
    assert_eq!(&back, p);
    let v = back.validate();
    assert!(!v.is_ok());
    assert!(v.errors.iter().any(|e| e == "task_struct.exit_state: missing"), "{v}");
    assert!(v.errors.iter().any(|e| e == "struct mm_struct: missing"), "{v}");
}
