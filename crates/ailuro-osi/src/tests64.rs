//! x86_64 guests on a synthetic kernel (the committed 6.1.0-50-amd64 profile's layout): the
//! running task through GS.base / IA32_KERNEL_GS_BASE, reads through the kernel's own page
//! tables under page-table isolation, KASLR with independent virtual and physical slides, the
//! 64-bit maple tree, and system calls by `syscall` (x86_64 table) and from 32-bit processes
//! (`int $0x80` through `int80_emulation`, `sysenter`: i386 table).

use crate::linux::Candidate;
use crate::maple::build;
use crate::testguest64::*;
use crate::*;

struct World64 {
    g: Guest64,
    sh: u64,
    prog: u64,
    sh_asid: u64,
    prog_asid: u64,
}

/// swapper/0 (0) ← init (1) ← sh (42) ← prog (43, running); kthreadd (2) a kernel thread.
/// prog maps /bin/prog and a stack (a two-level 64-bit maple tree) and has /etc/hosts open as 3.
fn world64(slides: Slides) -> World64 {
    let mut g = Guest64::with_slides(slides);
    let swapper = g.sym("init_task");
    let (init_mm, _) = g.mm();
    let (sh_mm, sh_asid) = g.mm();
    let (prog_mm, prog_asid) = g.mm();
    let init = g.task(1, "init", swapper, init_mm);
    g.task(2, "kthreadd", swapper, 0);
    let sh = g.task(42, "sh", init, sh_mm);
    let prog = g.task(43, "prog", sh, prog_mm);
    g.set_current(prog);
    let bin = g.path("/bin/prog");
    let f_bin = g.file(bin);
    let text = g.vma(0x40_0000, 0x41_0000, 0x5, f_bin);
    let stack = g.vma(USER_STACK.0, USER_STACK.0 + USER_STACK.2, 0x3, 0);
    g.w64(prog_mm + g.off("mm_struct", "start_stack"), USER_STACK.0 + 0x20000);
    let leaf1 = build::range_node64(&[(0x3f_ffff, 0), (0x40_ffff, text), (0xffff_ffff, 0)], 0xffff_ffff);
    let top = USER_STACK.0 + USER_STACK.2 - 1;
    let leaf2 = build::range_node64(&[(USER_STACK.0 - 1, 0), (top, stack), (u64::MAX, 0)], u64::MAX);
    let (n1, n2) = (g.node(&leaf1), g.node(&leaf2));
    let root = g.node(&build::arange_node64(&[(0xffff_ffff, build::enode(n1, 1)), (u64::MAX, build::enode(n2, 1))]));
    g.set_maple_root(prog_mm, build::root(build::enode(root, 3)));
    let hosts = g.path("/etc/hosts");
    let f_hosts = g.file(hosts);
    let fds = g.files(prog, 8);
    g.w64(fds + 3 * 8, f_hosts);
    World64 { g, sh, prog, sh_asid, prog_asid }
}

fn osi64() -> OsiLinux {
    OsiLinux::new(Candidate::embedded("x86_64"), true, "x86_64")
}

#[test]
fn x86_64_current_task_via_gs_bases_and_reads_under_page_table_isolation() {
    let mut w = world64(Slides::default());
    // __per_cpu_offset[0] wrong: the GS bases must be what finds the per-cpu area.
    let pcpu = w.g.percpu;
    w.g.w64(w.g.sym("__per_cpu_offset"), 0x1000);
    let ram = &w.g.ram;
    let o = osi64();
    let mut cpu = FakeCpu64::new(w.prog_asid, pcpu, Slides::default());
    assert_eq!(
        o.check_with(&cpu, ram),
        Status::Ready { release: "6.1.0-50-amd64".into(), source: "linux-6.1.0-50-amd64.toml".into() }
    );
    assert_eq!(o.kaslr_slide(), Some(0));
    let list = o.processes_with(&cpu, ram);
    let names: Vec<(u32, u32, &str, bool)> =
        list.iter().map(|p| (p.pid, p.ppid, p.comm.as_str(), p.kernel_thread)).collect();
    assert_eq!(
        names,
        [
            (0, 0, "swapper/0", true),
            (1, 0, "init", false),
            (2, 0, "kthreadd", true),
            (42, 1, "sh", false),
            (43, 42, "prog", false)
        ]
    );
    let prog = list.iter().find(|p| p.pid == 43).unwrap().clone();
    assert_eq!((prog.task, prog.asid), (w.prog, w.prog_asid));
    assert!(prog.task >= KMAP, "a direct-map task_struct");
    // In the kernel: GS.base.
    assert_eq!(o.current_process_with(&cpu, ram).map(|p| p.pid), Some(43));
    // In user mode (and at entry_SYSCALL_64, before SWAPGS): IA32_KERNEL_GS_BASE.
    cpu.enter_user(USER_TEXT.0, 64);
    cpu.icount = 1;
    assert_eq!((cpu.regs[GS_BASE], cpu.regs[KERNEL_GS_BASE]), (0, pcpu));
    assert_eq!(o.current_process_with(&cpu, ram).map(|p| p.pid), Some(43));
    // Page-table isolation: the user-mode CR3 is the PGD's second page and maps no kernel
    // memory; reads go through init_top_pgt.
    cpu.pti_user = true;
    cpu.asid = w.prog_asid | 0x1000;
    cpu.icount = 2;
    assert_eq!(o.current_process_with(&cpu, ram).map(|p| p.pid), Some(43));
    assert_eq!(o.processes_with(&cpu, ram).len(), 5);
    assert!(o.asid_matches(prog.asid, cpu.asid));
    assert!(!o.asid_matches(w.sh_asid, cpu.asid));
    let maps = o.mappings_with(&cpu, ram, &prog);
    let shown: Vec<(u64, u64, String, &str)> = maps.iter().map(|m| (m.start, m.end, m.perms(), m.name())).collect();
    assert_eq!(
        shown,
        [
            (0x40_0000, 0x41_0000, "r-xp".to_string(), "/bin/prog"),
            (USER_STACK.0, USER_STACK.0 + USER_STACK.2, "rw-p".to_string(), "[stack]")
        ]
    );
    let listing = o.process_listing_with(&cpu, ram);
    assert!(listing.contains(" prog ") && listing.contains(&format!("{:#x}", w.prog)), "{listing}");
    // A view without GS registers set: CPU 0's __per_cpu_offset[0].
    w.g.w64(w.g.sym("__per_cpu_offset"), pcpu);
    cpu.regs[KERNEL_GS_BASE] = 0;
    cpu.icount = 3;
    assert_eq!(o.current_process_with(&cpu, &w.g.ram).map(|p| p.pid), Some(43));
}

#[test]
fn x86_64_kaslr_slides_virtual_and_physical_independently() {
    let slides = Slides { virt: 0x0360_0000, phys: 0x0100_0000 };
    let w = world64(slides);
    let ram = &w.g.ram;
    // Paging on but still in the decompressor (low addresses, long mode): not decided yet.
    let o = osi64();
    let mut cpu = FakeCpu64::new(0x0070_0000, 0, slides);
    cpu.pc = 0x0100_0200;
    assert_eq!(o.check_with(&cpu, ram), Status::Pending);
    // In user mode under PTI: found by the banner, the virtual slide from the kernel's own
    // (physically slid) page tables.
    let o = osi64();
    let mut cpu = FakeCpu64::new(w.prog_asid | 0x1000, 0, slides);
    cpu.regs[KERNEL_GS_BASE] = w.g.percpu;
    cpu.enter_user(USER_TEXT.0, 64);
    cpu.pti_user = true;
    assert!(matches!(o.check_with(&cpu, ram), Status::Ready { .. }), "{:?}", o.status());
    assert_eq!(o.kaslr_slide(), Some(0x0360_0000));
    assert_eq!(o.kaslr_phys_slide(), Some(0x0100_0000));
    assert_eq!(o.current_process_with(&cpu, ram).map(|p| p.comm), Some("prog".to_string()));
    let listing = o.process_listing_with(&cpu, ram);
    assert!(listing.starts_with("kernel moved by KASLR: slide +0x3600000 (physical +0x1000000)\n"), "{listing}");
    // The entry points moved with the image; current_task (a per-cpu offset) did not.
    let p = ailuro_kprofile::KernelProfile::from_toml(crate::linux::shipped_profile_text(PROFILE64).unwrap()).unwrap();
    let l = crate::linux::Layout::new(&p).unwrap().slid(0x0360_0000, 0x0100_0000);
    assert_eq!(l.entry_syscall64, Some(p.symbol("entry_SYSCALL_64").unwrap() + 0x0360_0000));
    assert_eq!(l.int80_emulation, Some(p.symbol("int80_emulation").unwrap() + 0x0360_0000));
}

/// `syscall` from 64-bit user code at `pc` (returns to `pc + 2`): number and arguments.
fn syscall64(set: &mut ailuro_plugin::PluginSet, cpu: &mut FakeCpu64, g: &Guest64, icount: u64, nr: u64, a: [u64; 6]) {
    cpu.regs[RAX] = nr;
    [cpu.regs[RDI], cpu.regs[RSI], cpu.regs[RDX], cpu.regs[R10], cpu.regs[R8], cpu.regs[R9]] = a;
    cpu.regs[RCX] = cpu.pc + 2;
    cpu.kernel = true;
    let entry = g.sym("entry_SYSCALL_64");
    block64(set, cpu, &g.ram, icount, entry);
    block64(set, cpu, &g.ram, icount + 5, entry + 0x40);
}

/// Back in user mode at `pc` with RAX = `ret`.
fn sysret(set: &mut ailuro_plugin::PluginSet, cpu: &mut FakeCpu64, g: &Guest64, icount: u64, pc: u64, ret: i64) {
    cpu.regs[RAX] = ret as u64;
    cpu.kernel = false;
    block64(set, cpu, &g.ram, icount, pc);
    block64(set, cpu, &g.ram, icount + 2, pc + 0x10);
}

#[test]
fn x86_64_syscall_and_compat_entries_use_their_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world64(Slides::default());
    let hosts = w.g.ustr("/etc/hosts");
    let buf = w.g.ualloc(100);
    w.g.wbytes(buf, b"hello");
    let ls = w.g.ustr("/bin/ls");
    let argv = w.g.uargv(&["ls", "-l"]);
    let envp = w.g.uargv(&["PATH=/bin"]);
    let motd = w.g.ustr("/etc/motd");
    let hi = w.g.ustr("hi\n");
    let spec = format!("syscalls:file={};proc_events", dir.path().join("sys.txt").display());
    let mut set = load64(&spec).unwrap();
    assert_eq!(set.names(), vec!["osi_linux", "syscalls", "proc_events"]);
    let mut cpu = FakeCpu64::new(w.prog_asid, w.g.percpu, Slides::default());
    start64(&mut set, &cpu, &w.g.ram);
    cpu.enter_user(USER_TEXT.0 + 0x100, 64);
    cpu.regs[RSP] = USER_STACK.0 + 0x1f000;
    block64(&mut set, &mut cpu, &w.g.ram, 10, USER_TEXT.0 + 0x100);

    // openat(AT_FDCWD, "/etc/hosts", O_RDONLY) = 3; read(3, buf, 100) = 5
    let at = cpu.pc;
    syscall64(&mut set, &mut cpu, &w.g, 20, 257, [(-100i64) as u64, hosts, 0, 0, 0, 0]);
    sysret(&mut set, &mut cpu, &w.g, 40, at + 2, 3);
    let at = cpu.pc;
    syscall64(&mut set, &mut cpu, &w.g, 60, 0, [3, buf, 100, 0, 0, 0]);
    // A signal handler's block on another stack is not the return.
    cpu.kernel = false;
    let rsp = cpu.regs[RSP];
    cpu.regs[RSP] = USER_STACK.0 + 0x8000;
    block64(&mut set, &mut cpu, &w.g.ram, 70, USER_TEXT.0 + 0x800);
    cpu.regs[RSP] = rsp;
    cpu.kernel = true;
    block64(&mut set, &mut cpu, &w.g.ram, 75, w.g.sym("entry_SYSCALL_64") + 0x80);
    sysret(&mut set, &mut cpu, &w.g, 80, at + 2, 5);
    // execve("/bin/ls", ["ls", "-l"], envp) = 0: returns at the new program's entry.
    syscall64(&mut set, &mut cpu, &w.g, 100, 59, [ls, argv, envp, 0, 0, 0]);
    w.g.set_comm(w.prog, "ls");
    sysret(&mut set, &mut cpu, &w.g, 140, USER_TEXT.0 + 0x4000, 0);

    // A 32-bit process: int $0x80 reaches int80_emulation with the saved registers in RDI.
    cpu.enter_user(USER_TEXT.0 + 0x200, 32);
    block64(&mut set, &mut cpu, &w.g.ram, 200, USER_TEXT.0 + 0x200);
    let regs = w.g.pt_regs([5, motd, 0, 0, 0, 0, 0], USER_TEXT.0 + 0x202, 0xffff_d000);
    cpu.kernel = true;
    cpu.bits = 64;
    cpu.regs[RDI] = regs;
    cpu.regs[RAX] = 0xdead; // not the caller's
    block64(&mut set, &mut cpu, &w.g.ram, 210, w.g.sym("int80_emulation"));
    cpu.kernel = false;
    cpu.bits = 32;
    cpu.regs[RSP] = 0xffff_d000;
    sysret(&mut set, &mut cpu, &w.g, 230, USER_TEXT.0 + 0x202, 4);
    // sysenter from the vDSO: write(1, "hi\n", 3); argument 6 at [EBP].
    let frame = w.g.ualloc(16);
    cpu.regs[RAX] = 4;
    [cpu.regs[RBX], cpu.regs[RCX], cpu.regs[RDX], cpu.regs[RBP]] = [1, hi, 3, frame];
    cpu.kernel = true;
    block64(&mut set, &mut cpu, &w.g.ram, 300, w.g.sym("entry_SYSENTER_compat"));
    cpu.regs[RSP] = frame;
    sysret(&mut set, &mut cpu, &w.g, 320, USER_TEXT.0 + 0x300, 3);
    // exit_group(0) from 64-bit code: reported at entry.
    cpu.enter_user(USER_TEXT.0 + 0x4100, 64);
    syscall64(&mut set, &mut cpu, &w.g, 400, 231, [0; 6]);

    let sc = set.get::<Syscalls>().unwrap();
    let ev: Vec<&SyscallEvent> = sc.events_since(0).collect();
    let calls: Vec<(String, Abi, Via, Option<i64>)> =
        ev.iter().map(|e| (e.name.clone(), e.abi, e.via, e.ret)).collect();
    assert_eq!(
        calls,
        [
            ("openat".to_string(), Abi::X86_64, Via::Syscall, Some(3)),
            ("read".to_string(), Abi::X86_64, Via::Syscall, Some(5)),
            ("execve".to_string(), Abi::X86_64, Via::Syscall, Some(0)),
            ("open".to_string(), Abi::I386, Via::Int80, Some(4)),
            ("write".to_string(), Abi::I386, Via::Sysenter, Some(3)),
            ("exit_group".to_string(), Abi::X86_64, Via::Syscall, None),
        ]
    );
    assert!(ev.iter().all(|e| e.pid == Some(43)));
    drop(ev);
    let lines = finish64(&mut set, &cpu, &w.g.ram);
    assert!(lines.iter().any(|l| l.contains("syscalls: 6 calls")), "{lines:?}");
    let text: Vec<String> =
        std::fs::read_to_string(dir.path().join("sys.txt")).unwrap().lines().skip(1).map(str::to_string).collect();
    assert_eq!(
        text,
        [
            "20 43 43 prog openat(AT_FDCWD, \"/etc/hosts\", O_RDONLY) = 3",
            "60 43 43 prog read(3, \"hello\", 100) = 5",
            &format!("100 43 43 prog execve(\"/bin/ls\", [\"ls\", \"-l\"], {envp:#x} /* 1 vars */) = 0"),
            "210 43 43 ls open(\"/etc/motd\", O_RDONLY) = 4",
            "300 43 43 ls write(1, \"hi\\n\", 3) = 3",
            "400 43 43 ls exit_group(0) = ?",
        ]
    );
    let pe = set.get::<ProcEvents>().unwrap();
    let kinds: Vec<ProcEventKind> = pe.events_since(0).map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds[..3],
        [
            ProcEventKind::FileOpen { fd: 3, path: "/etc/hosts".into(), flags: 0 },
            ProcEventKind::FileRead { fd: 3, path: "/etc/hosts".into(), count: 5, buf, vectored: false, offset: None },
            ProcEventKind::ProcStart {
                comm: "ls".into(),
                path: "/bin/ls".into(),
                argv: vec!["ls".into(), "-l".into()]
            },
        ]
    );
}

#[test]
fn x86_64_page_table_isolation_toggles_are_not_switches() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world64(Slides::default());
    let sh = w.sh;
    w.g.w32(sh + w.g.off("task_struct", "on_cpu"), 1);
    let spec = format!("asidstory:file={},svg=none", dir.path().join("a.txt").display());
    let mut set = load64(&spec).unwrap();
    let mut cpu = FakeCpu64::new(w.prog_asid, w.g.percpu, Slides::default());
    start64(&mut set, &cpu, &w.g.ram);
    // Kernel exit and entry under PTI, three times.
    for i in 0..3u64 {
        cr3(&mut set, &mut cpu, &w.g.ram, 10 + 10 * i, w.prog_asid | 0x1000);
        cr3(&mut set, &mut cpu, &w.g.ram, 15 + 10 * i, w.prog_asid);
    }
    let o = set.get::<OsiLinux>().unwrap();
    assert!(o.pti_seen());
    assert_eq!(o.switch_count(), 0);
    assert!(o.last_switch().is_none());
    assert!(o.same_address_space(w.prog_asid, w.prog_asid | 0x1000));
    // A real switch to sh.
    cr3(&mut set, &mut cpu, &w.g.ram, 100, w.sh_asid);
    let o = set.get::<OsiLinux>().unwrap();
    assert_eq!(o.switch_count(), 1);
    assert_eq!(o.last_switch().and_then(|s| s.process.as_ref()).map(|p| p.pid), Some(42));
    cpu.icount = 200;
    finish64(&mut set, &cpu, &w.g.ram);
    let text = std::fs::read_to_string(dir.path().join("a.txt")).unwrap();
    assert!(text.contains("1 address-space switches"), "{text}");
    assert!(text.contains("prog") && text.contains(" sh "), "{text}");
}
