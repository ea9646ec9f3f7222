//! The committed profiles: they parse, validate, hold the known layout of the guest kernel, round
//! trip, and their banner check tells the right kernel from the wrong one.

use ailuro_kprofile::{bundled_profiles_dir, Addr, Arch, BannerCheck, KernelProfile, LookupError, ProfileError};

fn i386() -> KernelProfile {
    KernelProfile::load(bundled_profiles_dir().join("linux-6.1.0-50-686.toml")).unwrap()
}

fn amd64() -> KernelProfile {
    KernelProfile::load(bundled_profiles_dir().join("linux-6.1.0-50-amd64.toml")).unwrap()
}

#[test]
fn i386_profile_is_complete_and_has_the_known_layout() {
    let p = i386();
    let v = p.validate();
    assert!(v.is_ok(), "{v}");
    assert!(v.warnings.is_empty(), "{v}");
    assert_eq!(p.arch(), Arch::I386);
    assert_eq!(p.pointer_size(), 4);
    assert_eq!(p.kernel.release, "6.1.0-50-686");
    assert!(p.kernel.version.starts_with("#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 "));
    assert!(p.kernel.banner.starts_with("Linux version 6.1.0-50-686 (debian-kernel@lists.debian.org)"));
    assert!(p.kernel.banner.ends_with('\n'));
    assert_eq!(p.kernel.image_virt_to_phys, Some(Addr(0xc000_0000)));
    assert_eq!(p.kernel.paging.as_deref(), Some("x86-2level"));
    // symbols (checked against readelf -s)
    assert_eq!(p.symbol("init_task").unwrap(), 0xc1c4_44c0);
    assert_eq!(p.symbol("linux_banner").unwrap(), 0xc1a1_6740);
    assert_eq!(p.symbol("current_task").unwrap(), 0xc1e5_e6e8);
    assert_eq!(p.symbol("sys_call_table").unwrap(), 0xc191_c300);
    assert_eq!(p.symbol("swapper_pg_dir").unwrap(), 0xc1e7_4000);
    for s in ["entry_INT80_32", "entry_SYSENTER_32", "do_int80_syscall_32", "do_fast_syscall_32", "__per_cpu_offset"] {
        assert!(p.symbol(s).is_ok(), "{s}");
    }
    // 6.1 has no pcpu_hot: the per-cpu variable is current_task itself
    assert_eq!(p.per_cpu.current_task_symbol, "current_task");
    assert_eq!(p.per_cpu.current_task_offset, 0);
    assert_eq!(p.current_task_slot(0x3000_0000).unwrap(), 0xc1e5_e6e8 + 0x3000_0000);
    // struct layouts (checked against pahole)
    assert_eq!(p.struct_size("task_struct").unwrap(), 6528);
    let off = |s: &str, m: &str| p.offset(s, m).unwrap();
    assert_eq!(off("task_struct", "stack"), 20);
    assert_eq!(off("task_struct", "tasks"), 968);
    assert_eq!(off("task_struct", "mm"), 1008);
    assert_eq!(off("task_struct", "pid"), 1108);
    assert_eq!(off("task_struct", "tgid"), 1112);
    assert_eq!(off("task_struct", "comm"), 1412);
    assert_eq!(p.member("task_struct", "comm").unwrap().count, Some(16));
    assert_eq!(off("mm_struct", "mm_mt"), 0);
    assert_eq!(off("mm_struct", "pgd"), 28);
    assert_eq!(off("mm_struct", "exe_file"), 492);
    assert_eq!(off("maple_tree", "ma_root"), 4);
    assert_eq!(off("maple_node", "slot"), 4);
    assert_eq!(off("maple_range_64", "slot"), 128);
    assert_eq!(off("maple_arange_64", "gap"), 168);
    assert_eq!(off("qstr", "len"), 4);
    assert_eq!(off("qstr", "name"), 8);
    assert_eq!(off("dentry", "d_iname"), 36);
    assert_eq!(off("file", "f_path"), 8);
    assert_eq!(off("mount", "mnt"), 16);
    assert_eq!(off("module", "list"), 4);
    assert_eq!(off("module", "core_layout.base"), 256);
    assert_eq!(off("pt_regs", "orig_ax"), 44);
    assert_eq!(p.struct_size("pt_regs").unwrap(), 68);
    assert_eq!(p.first_member("mm_struct", &["mm_mt", "mmap"]).unwrap().0, "mm_mt");
    // constants and enums
    assert_eq!(p.constant("THREAD_SIZE").unwrap(), 8192);
    assert_eq!(p.constant("TOP_OF_KERNEL_STACK_PADDING").unwrap(), 8);
    assert_eq!(p.constant("MAPLE_NODE_MASK").unwrap(), 255);
    assert_eq!(p.constant("MAPLE_RANGE64_SLOTS").unwrap(), 32);
    assert_eq!(p.enum_value("maple_type", "maple_arange_64").unwrap(), 3);
    assert_eq!(p.pt_regs_offset_in_stack().unwrap(), 8192 - 8 - 68);
}

#[test]
fn amd64_profile_is_complete() {
    let p = amd64();
    let v = p.validate();
    assert!(v.is_ok(), "{v}");
    assert_eq!(p.arch(), Arch::X86_64);
    assert_eq!(p.pointer_size(), 8);
    assert_eq!(p.kernel.release, "6.1.0-50-amd64");
    // addresses above i64::MAX survive the TOML round trip
    assert_eq!(p.symbol("init_task").unwrap(), 0xffff_ffff_82a1_aa40);
    assert!(p.symbol("init_top_pgt").is_ok());
    assert!(p.symbol("swapper_pg_dir").is_err());
    assert_eq!(p.offset("task_struct", "pid").unwrap(), 2416);
    assert_eq!(p.offset("pt_regs", "r15").unwrap(), 0);
    assert_eq!(p.constant("THREAD_SIZE").unwrap(), 16384);
    assert_eq!(p.constant("MAPLE_RANGE64_SLOTS").unwrap(), 16);
    assert_eq!(p.pt_regs_offset_in_stack().unwrap(), 16384 - 168);
}

#[test]
fn profiles_round_trip_byte_for_byte() {
    for name in ["linux-6.1.0-50-686.toml", "linux-6.1.0-50-amd64.toml"] {
        let path = bundled_profiles_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let p = KernelProfile::from_toml(&text).unwrap();
        assert_eq!(p.to_toml(), text, "{name}: writing the loaded profile changes it");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(name);
        p.save(&out).unwrap();
        assert_eq!(KernelProfile::load(&out).unwrap(), p);
    }
}

#[test]
fn banner_check() {
    let p = i386();
    let banner = p.kernel.banner.clone().into_bytes();
    // exactly the banner, or followed by its NUL and whatever comes next in memory
    assert_eq!(p.check_banner(&banner), BannerCheck::Match);
    let mut with_nul = banner.clone();
    with_nul.extend_from_slice(b"\0\x12\x34garbage");
    assert!(p.check_banner(&with_nul).is_match());
    // another build of the same release: differs in the version string
    let mut other = banner.clone();
    let n = other.len();
    other[n - 3] = b'9';
    match p.check_banner(&other) {
        BannerCheck::Mismatch { expected_release, found_release, .. } => {
            assert_eq!(expected_release, "6.1.0-50-686");
            assert_eq!(found_release.as_deref(), Some("6.1.0-50-686"));
        }
        r => panic!("{r:?}"),
    }
    // the banner continues where the profile's ends
    let mut longer = banner.clone();
    longer.extend_from_slice(b"more\0");
    assert!(!p.check_banner(&longer).is_match());
    // another kernel
    let amd = amd64().kernel.banner.into_bytes();
    let r = p.check_banner(&amd);
    assert!(!r.is_match());
    assert!(r.to_string().contains("the guest runs kernel 6.1.0-50-amd64, the profile is for 6.1.0-50-686"), "{r}");
    // no banner at all (KASLR, wrong profile, memory not mapped yet)
    let r = p.check_banner(&[0u8; 300]);
    assert!(matches!(&r, BannerCheck::Mismatch { found_release: None, .. }), "{r:?}");
    assert!(r.to_string().contains("KASLR"));
    // too little read
    assert_eq!(p.check_banner(&banner[..10]), BannerCheck::TooShort { needed: banner.len(), got: 10 });
    assert!(!p.check_banner(&[]).is_match());
}

#[test]
fn validate_names_what_is_missing() {
    let mut p = i386();
    p.structs.get_mut("task_struct").unwrap().members.remove("comm");
    p.structs.get_mut("mm_struct").unwrap().members.remove("mm_mt");
    p.structs.remove("pt_regs");
    p.symbols.remove("init_task");
    p.constants.remove("THREAD_SIZE");
    p.per_cpu.current_task_symbol = "pcpu_hot".into();
    p.structs.get_mut("qstr").unwrap().members.get_mut("name").unwrap().offset = 100;
    let v = p.validate();
    for want in [
        "task_struct.comm: missing",
        "mm_struct: none of the members mm_mt, mmap present",
        "struct pt_regs: missing",
        "symbol init_task: missing",
        "constant THREAD_SIZE: missing",
        "per_cpu.current_task_symbol pcpu_hot: not in [symbols]",
        "qstr.name: offset 100 + size 4 lies outside sizeof(struct qstr) = 12",
    ] {
        assert!(v.errors.iter().any(|e| e == want), "expected {want:?} in\n{v}");
    }
    assert_eq!(v.errors.len(), 7, "{v}");
    // accessors say the same, by name
    assert_eq!(
        p.offset("task_struct", "comm").unwrap_err().to_string(),
        "task_struct.comm: struct task_struct has no member `comm`"
    );
    assert_eq!(p.symbol("init_task").unwrap_err(), LookupError::NoSymbol("init_task".into()));
    assert_eq!(p.struct_size("pt_regs").unwrap_err().to_string(), "struct pt_regs: not defined");
}

#[test]
fn hand_written_minimal_profile() {
    // what a user might write from pahole output: integers for addresses are accepted too
    let text = r##"
format = 1
[kernel]
release = "5.10.0-custom"
version = "#1 SMP"
banner = "Linux version 5.10.0-custom (me@host) (gcc) #1 SMP\n"
arch = "i386"
pointer_size = 4
source = "manual"
[symbols]
init_task = "0xc1800000"
linux_banner = 3229614080
[per_cpu]
current_task_symbol = "current_task"
[structs.task_struct]
size = 4000
[structs.task_struct.members]
pid = { offset = 800 }
"##;
    let p = KernelProfile::from_toml(text).unwrap();
    assert_eq!(p.symbol("linux_banner").unwrap(), 0xc080_0000);
    assert_eq!(p.per_cpu.offsets_symbol, "__per_cpu_offset");
    assert_eq!(p.offset("task_struct", "pid").unwrap(), 800);
    let v = p.validate();
    assert!(!v.is_ok());
    // 5.10 keeps VMAs in a list: maple-tree items are not demanded
    assert!(
        v.errors.iter().any(|e| e == "mm_struct: none of the members mm_mt, mmap present")
            || v.errors.iter().any(|e| e == "struct mm_struct: missing")
    );
    assert!(!v.errors.iter().any(|e| e.contains("maple")), "{v}");
    assert!(v.errors.iter().any(|e| e == "task_struct.tasks: missing"), "{v}");
    assert!(p.check_banner(b"Linux version 5.10.0-custom (me@host) (gcc) #1 SMP\n\0").is_match());
}

#[test]
fn load_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = KernelProfile::load(&missing).unwrap_err();
    assert!(matches!(e, ProfileError::Io { .. }));
    assert!(e.to_string().contains("nope.toml"));

    let future = dir.path().join("future.toml");
    std::fs::write(&future, "format = 2\n").unwrap();
    let e = KernelProfile::load(&future).unwrap_err();
    assert!(matches!(e, ProfileError::Format { found: 2, supported: 1 }), "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "format = 1\n[kernel]\nrelease = 3\n").unwrap();
    let e = KernelProfile::load(&bad).unwrap_err();
    assert!(matches!(e, ProfileError::Parse { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("{}: not a valid kernel profile", bad.display())), "{e}");

    let typo = i386().to_toml().replace("[per_cpu]\n", "[per_cpu]\ncurent_task_offset = 4\n");
    let e = KernelProfile::from_toml(&typo).unwrap_err();
    assert!(e.to_string().contains("curent_task_offset"), "unknown keys are rejected: {e}");

    let neg = i386().to_toml().replace("init_task           = \"0xc1c444c0\"", "init_task = -5");
    assert!(KernelProfile::from_toml(&neg).unwrap_err().to_string().contains("negative"));
}
