//! Tests on a synthetic guest (no real Linux needed): process list, memory maps, banner checks,
//! system calls via int $0x80 and sysenter, proc_events, asidstory.

use std::any::Any;
use std::cell::RefCell;

use ailuro_bus::GuestRam;
use ailuro_plugin::{Args, CpuObserver, Cx, LoadCx, Plugin, PluginSet};

use crate::maple::build;
use crate::testguest::*;
use crate::*;

/// The process world most tests use.
struct World {
    g: Guest,
    init: u64,
    kthreadd: u64,
    sh: u64,
    sh_thread: u64,
    cat: u64,
    init_asid: u64,
    sh_asid: u64,
    cat_asid: u64,
    cat_mm: u64,
}

/// swapper/0 (0) ← init (1) ← sh (42, with thread 44) ← cat (43); kthreadd (2) a kernel thread.
/// cat has /bin/busybox mapped, a heap, a file on a mounted fs and a stack; cat is running.
fn world() -> World {
    let mut g = Guest::new();
    let swapper = g.sym("init_task");
    let (init_mm, init_asid) = g.mm();
    let (sh_mm, sh_asid) = g.mm();
    let (cat_mm, cat_asid) = g.mm();
    let init = g.task(1, 1, "init", swapper, init_mm, None);
    let kthreadd = g.task(2, 2, "kthreadd", swapper, 0, None);
    let sh = g.task(42, 42, "sh", init, sh_mm, None);
    let sh_thread = g.task(44, 42, "sh-worker", init, sh_mm, Some(sh));
    let cat = g.task(43, 43, "cat", sh, cat_mm, None);
    g.set_current(cat);
    g.set_on_cpu(cat, true);

    // cat's memory map: a two-level maple tree.
    let busybox = g.path("/bin/busybox");
    let f_busybox = g.file(busybox, g.root_mnt);
    let mnt_dir = g.path("/mnt");
    let (data_mnt, data_root) = g.mount_on(mnt_dir);
    let data_file = g.dentry("data.bin", data_root);
    let f_data = g.file(data_file, data_mnt);
    let text = g.vma(cat_mm, 0x0804_8000, 0x0805_8000, 0x5, 0, f_busybox);
    let data = g.vma(cat_mm, 0x0805_8000, 0x0805_a000, 0x3, 0x10, f_busybox);
    let heap = g.vma(cat_mm, 0x0806_0000, 0x0808_1000, 0x3, 0, 0);
    let mapped = g.vma(cat_mm, 0xb7f0_0000, 0xb7f0_2000, 0x1, 2, f_data);
    let stack = g.vma(cat_mm, 0xbffd_f000, 0xc000_0000, 0x3, 0, 0);
    g.set_mm_field(cat_mm, "start_brk", 0x0806_0000);
    g.set_mm_field(cat_mm, "brk", 0x0808_0800);
    g.set_mm_field(cat_mm, "start_stack", 0xbfff_f000);
    let leaf1 = build::range_node(
        &[
            (0x0804_7fff, 0),
            (0x0805_7fff, text),
            (0x0805_9fff, data),
            (0x0805_ffff, 0),
            (0x0808_0fff, heap),
            (0x0fff_ffff, 0),
        ],
        0x0fff_ffff,
    );
    let leaf2 = build::range_node(
        &[(0xb7ef_ffff, 0), (0xb7f0_1fff, mapped), (0xbffd_efff, 0), (0xbfff_ffff, stack), (0xffff_ffff, 0)],
        0xffff_ffff,
    );
    let (n1, n2) = (g.node(&leaf1), g.node(&leaf2));
    let root = build::arange_node(&[(0x0fff_ffff, build::enode(n1, 1)), (0xffff_ffff, build::enode(n2, 1))]);
    let r = g.node(&root);
    g.set_maple_root(cat_mm, build::root(build::enode(r, 3)));

    World { g, init, kthreadd, sh, sh_thread, cat, init_asid, sh_asid, cat_asid, cat_mm }
}

fn osi(set: &PluginSet) -> &OsiLinux {
    set.get::<OsiLinux>().unwrap()
}

type Job = Box<dyn FnOnce(&OsiLinux, &Cx) -> Box<dyn Any>>;

/// Runs a job with osi_linux and a `Cx` at its `start` (the plugin API has no public `Cx`
/// constructor, so queries go through a plugin set).
struct Probe {
    job: Option<Job>,
    out: RefCell<Option<Box<dyn Any>>>,
}

impl Plugin for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        if let Some(j) = self.job.take() {
            let o = cx.plugin::<OsiLinux>().expect("osi_linux loaded");
            *self.out.borrow_mut() = Some(j(o, cx));
        }
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Load osi_linux (with `args`) on `ram`/`cpu` and run `f` on it.
fn query_with<T: 'static>(
    ram: &GuestRam,
    cpu: &FakeCpu,
    args: &[(&str, &str)],
    f: impl FnOnce(&OsiLinux, &Cx) -> T + 'static,
) -> T {
    let pairs: Vec<(String, String)> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lcx = LoadCx { arch: "i386".into(), ..LoadCx::default() };
    let osi = (linux::INFO.make)(&Args::new("osi_linux", &pairs), &lcx).unwrap();
    let job: Job = Box::new(move |o, cx| Box::new(f(o, cx)) as Box<dyn Any>);
    let probe = Probe { job: Some(job), out: RefCell::new(None) };
    let mut set = PluginSet::from_plugins(vec![osi, Box::new(probe)]);
    start(&mut set, cpu, ram);
    let out = set.get::<Probe>().unwrap().out.borrow_mut().take().unwrap();
    *out.downcast::<T>().unwrap()
}

fn query<T: 'static>(w: &World, f: impl FnOnce(&OsiLinux, &Cx) -> T + 'static) -> T {
    query_with(&w.g.ram, &FakeCpu::new(w.cat_asid), &[], f)
}

#[test]
fn process_list_names_pids_parents_and_address_spaces() {
    let w = world();
    let list = query(&w, |o, cx| o.processes(cx));
    let got: Vec<(u32, u32, u32, &str, bool)> =
        list.iter().map(|p| (p.pid, p.tgid, p.ppid, p.comm.as_str(), p.kernel_thread)).collect();
    assert_eq!(
        got,
        vec![
            (0, 0, 0, "swapper/0", true),
            (1, 1, 0, "init", false),
            (2, 2, 0, "kthreadd", true),
            (42, 42, 1, "sh", false),
            (43, 43, 42, "cat", false),
        ]
    );
    assert_eq!(list[1].task, w.init);
    assert_eq!(list[2].task, w.kthreadd);
    assert_eq!((list[1].asid, list[3].asid, list[4].asid), (w.init_asid, w.sh_asid, w.cat_asid));
    assert_eq!((list[0].asid, list[2].asid), (0, 0), "kernel threads have no address space");
    assert_eq!(list[4].start_time, 43_000_000_000);

    let cur = query(&w, |o, cx| (o.current_process(cx), o.current_task_addr(cx)));
    assert_eq!(cur.0.as_ref().map(|p| (p.pid, p.comm.as_str())), Some((43, "cat")));
    assert_eq!(cur.1, Some(w.cat));

    let sh = list[3].clone();
    let threads = query(&w, move |o, cx| o.threads(cx, &sh));
    let t: Vec<(u32, u32, &str)> = threads.iter().map(|p| (p.pid, p.tgid, p.comm.as_str())).collect();
    assert_eq!(t, vec![(42, 42, "sh"), (44, 42, "sh-worker")]);
    assert_eq!(threads[1].task, w.sh_thread);
    let all = query(&w, |o, cx| o.tasks(cx));
    assert_eq!(all.len(), 6);

    let text = format_process_list(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].contains("PID") && lines[0].contains("COMM"), "{text}");
    assert!(lines[3].contains("[kthreadd]"), "{text}");
    assert!(
        lines[5].contains("cat") && lines[5].contains("42") && lines[5].contains(&format!("{:#x}", w.cat_asid)),
        "{text}"
    );
    assert!(lines[5].trim_end().ends_with("43.000s"), "{text}");
    // sorted by pid whatever the input order
    let mut rev = list.clone();
    rev.reverse();
    assert_eq!(format_process_list(&rev), text);

    // Outside callbacks (the monitor's `info processes`): from a CPU view and RAM.
    let set = load("osi_linux", None).unwrap();
    let o = set.get::<OsiLinux>().unwrap();
    assert_eq!(o.status(), Status::Pending);
    let cpu = FakeCpu::new(w.cat_asid);
    assert_eq!(format_process_list(&o.processes_with(&cpu, &w.g.ram)), text);
    assert!(matches!(o.check_with(&cpu, &w.g.ram), Status::Ready { .. }));
    let cat = o.current_process_with(&cpu, &w.g.ram).unwrap();
    assert_eq!(cat.comm, "cat");
    assert_eq!(o.mappings_with(&cpu, &w.g.ram, &cat).len(), 5);
    assert_eq!(o.tasks_with(&cpu, &w.g.ram).len(), 6);
}

#[test]
fn memory_map_from_the_maple_tree_with_file_paths_through_mounts() {
    let w = world();
    let cat = w.cat;
    let maps = query(&w, move |o, cx| {
        let p = o.processes(cx).into_iter().find(|p| p.task == cat).unwrap();
        o.mappings(cx, &p)
    });
    let got: Vec<(u64, u64, String, u64, &str)> =
        maps.iter().map(|m| (m.start, m.end, m.perms(), m.pgoff, m.name())).collect();
    assert_eq!(
        got,
        vec![
            (0x0804_8000, 0x0805_8000, "r-xp".to_string(), 0, "/bin/busybox"),
            (0x0805_8000, 0x0805_a000, "rw-p".to_string(), 0x10, "/bin/busybox"),
            (0x0806_0000, 0x0808_1000, "rw-p".to_string(), 0, "[heap]"),
            (0xb7f0_0000, 0xb7f0_2000, "r--p".to_string(), 2, "/mnt/data.bin"),
            (0xbffd_f000, 0xc000_0000, "rw-p".to_string(), 0, "[stack]"),
        ]
    );
    // A kernel thread has none; a process whose tree root is a single leaf works too.
    let kt = w.kthreadd;
    let none = query(&w, move |o, cx| {
        let p = o.processes(cx).into_iter().find(|p| p.task == kt).unwrap();
        o.mappings(cx, &p)
    });
    assert!(none.is_empty());

    let mut w = w;
    let leaf = build::range_node(&[(0x0804_7fff, 0), (0x0804_8fff, 0), (0xffff_ffff, 0)], 0xffff_ffff);
    let vma = w.g.vma(w.cat_mm, 0x0804_8000, 0x0804_9000, 0x5, 0, 0);
    let mut leaf = leaf;
    leaf[128 + 4..128 + 8].copy_from_slice(&(vma as u32).to_le_bytes());
    let n = w.g.node(&leaf);
    w.g.set_maple_root(w.cat_mm, build::root(build::enode(n, 1)));
    let maps = query(&w, move |o, cx| {
        let p = o.current_process(cx).unwrap();
        o.mappings(cx, &p)
    });
    assert_eq!(maps.len(), 1);
    assert_eq!((maps[0].start, maps[0].end, maps[0].file.as_deref()), (0x0804_8000, 0x0804_9000, None));
    // A garbage root (not a node) gives nothing rather than garbage.
    w.g.set_maple_root(w.cat_mm, 0x1234);
    let maps = query(&w, move |o, cx| {
        let p = o.current_process(cx).unwrap();
        o.mappings(cx, &p)
    });
    assert!(maps.is_empty());
}

#[test]
fn fd_paths_from_the_kernel_file_table() {
    let mut w = world();
    let arr = w.g.files(w.cat, 8);
    let d = w.g.path("/etc/passwd");
    let f = w.g.file(d, w.g.root_mnt);
    w.g.w32(arr + 12, f as u32);
    // a pipe: its dentry is a root of its own on an internal mount (pipefs)
    let pipefs_root = w.g.dentry("/", 0);
    w.g.w32(pipefs_root + w.g.off("dentry", "d_parent"), pipefs_root as u32);
    let mount = w.g.alloc(168, 64);
    let mnt = mount + w.g.off("mount", "mnt");
    w.g.w32(mount + w.g.off("mount", "mnt_parent"), mount as u32);
    w.g.w32(mnt + w.g.off("vfsmount", "mnt_root"), pipefs_root as u32);
    let pipe = w.g.dentry("", 0);
    w.g.w32(pipe + w.g.off("dentry", "d_parent"), pipe as u32);
    let pf = w.g.file(pipe, mnt);
    w.g.w32(arr + 16, pf as u32);
    let cat = w.cat;
    let r = query(&w, move |o, cx| {
        (o.fd_path(cx, cat, 3), o.fd_path(cx, cat, 2), o.fd_path(cx, cat, 9), o.fd_path(cx, cat, 4))
    });
    assert_eq!(r, (Some("/etc/passwd".to_string()), None, None, None));
}

#[test]
fn the_banner_decides_and_another_kernel_disables_with_one_clear_message() {
    // The shipped profile matches: ready, also with paging off (read through the direct map).
    let w = world();
    let st = query_with(&w.g.ram, &FakeCpu::new(0), &[], |o, _| o.status());
    assert_eq!(st, Status::Ready { release: "6.1.0-50-686".into(), source: PROFILE.into() });

    // Another kernel's banner at linux_banner: disabled, naming the release found.
    let mut w = world();
    w.g.set_banner(b"Linux version 5.10.0-99-686 (debian-kernel@lists.debian.org) (gcc) #1 SMP Debian 5.10.999-1\n");
    let (st, procs, cur) = query(&w, |o, cx| (o.status(), o.processes(cx), o.current_process(cx)));
    let Status::Disabled(msg) = st else { panic!("not disabled: {st:?}") };
    assert!(msg.contains("Linux 5.10.0-99-686") && msg.contains("6.1.0-50-686"), "{msg}");
    assert!(msg.contains("docs/KERNEL-PROFILES.md") && msg.contains("profile=FILE"), "{msg}");
    assert!(procs.is_empty() && cur.is_none());

    // No banner at all while paging is off: undecided (the kernel may not be there yet) ...
    let mut w = world();
    w.g.set_banner(b"\0\0\0\0");
    let st = query_with(&w.g.ram, &FakeCpu::new(0), &[], |o, _| o.status());
    assert_eq!(st, Status::Pending);
    // ... once paging is on without a banner: disabled, explaining the possible causes.
    let st = query_with(&w.g.ram, &FakeCpu::new(w.cat_asid), &[], |o, _| o.status());
    let Status::Disabled(msg) = st else { panic!("{st:?}") };
    assert!(msg.contains("no Linux kernel banner") && msg.contains("KASLR"), "{msg}");
    // ... and a banner elsewhere in RAM (say the printk buffer) names the release.
    w.g.wbytes(KBASE + 0x0280_0000, b"<5>Linux version 6.6.6-custom (me@host) (gcc 13) #7 SMP\n\0");
    let st = query_with(&w.g.ram, &FakeCpu::new(w.cat_asid), &[], |o, _| o.status());
    let Status::Disabled(msg) = st else { panic!("{st:?}") };
    assert!(msg.contains("runs Linux 6.6.6-custom"), "{msg}");

    // A profile for another kernel, given explicitly, is refused by its banner, not trusted.
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let mut p = w.g.p.clone();
    p.kernel.release = "9.9.9-test".into();
    p.kernel.banner = "Linux version 9.9.9-test (x@y) (gcc) #1 SMP\n".into();
    let path = dir.path().join("other.toml");
    p.save(&path).unwrap();
    let path_s = path.display().to_string();
    let st = query_with(&w.g.ram, &FakeCpu::new(w.cat_asid), &[("profile", &path_s)], |o, _| o.status());
    let Status::Disabled(msg) = st else { panic!("{st:?}") };
    assert!(msg.contains("runs Linux 6.1.0-50-686") && msg.contains("9.9.9-test"), "{msg}");
    // banner_check=false trusts it.
    let st =
        query_with(&w.g.ram, &FakeCpu::new(w.cat_asid), &[("profile", &path_s), ("banner_check", "false")], |o, _| {
            o.status()
        });
    assert!(matches!(st, Status::Ready { .. }), "{st:?}");
    // A missing profile file is an argument error before the run.
    let e = load("osi_linux:profile=/nonexistent/p.toml", None).err().unwrap();
    assert!(e.contains("/nonexistent/p.toml"), "{e}");
}

/// A syscalls + proc_events set on `w` with a text file and a plog in `dir`; started.
fn traced(w: &World, dir: &std::path::Path, extra: &str) -> (PluginSet, FakeCpu) {
    let spec = format!("syscalls:file={}{extra};proc_events", dir.join("sys.txt").display());
    let mut set = load(&spec, Some((0, 10_000))).unwrap();
    assert_eq!(set.names(), vec!["osi_linux", "syscalls", "proc_events"]);
    with_plog(&mut set, dir);
    let cpu = FakeCpu::new(w.cat_asid);
    start(&mut set, &cpu, &w.g.ram);
    (set, cpu)
}

fn text_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("sys.txt")).unwrap().lines().skip(1).map(str::to_string).collect()
}

/// Enter a system call via int $0x80 at `icount` with `regs` (eax, ebx, ecx, edx, esi, edi,
/// ebp) from user code at `eip` with stack `esp`.
fn int80(set: &mut PluginSet, cpu: &mut FakeCpu, g: &mut Guest, icount: u64, regs: [u64; 7], eip: u64, esp: u64) {
    let kesp = g.int80_frame(eip, esp);
    let [eax, ebx, ecx, edx, esi, edi, ebp] = regs;
    cpu.regs[EAX] = eax;
    cpu.regs[EBX] = ebx;
    cpu.regs[ECX] = ecx;
    cpu.regs[EDX] = edx;
    cpu.regs[ESI] = esi;
    cpu.regs[EDI] = edi;
    cpu.regs[EBP] = ebp;
    cpu.regs[ESP] = kesp;
    let entry = g.sym("entry_INT80_32");
    block(set, cpu, &g.ram, icount, entry, true);
    block(set, cpu, &g.ram, icount + 5, entry + 0x40, true);
}

/// Return to user mode at `pc` with `esp` and EAX = `ret`.
fn ret_to_user(set: &mut PluginSet, cpu: &mut FakeCpu, g: &Guest, icount: u64, pc: u64, esp: u64, ret: i64) {
    block(set, cpu, &g.ram, icount - 3, 0xc191_a200, true);
    cpu.regs[EAX] = ret as u32 as u64;
    cpu.regs[ESP] = esp;
    block(set, cpu, &g.ram, icount, pc, false);
    block(set, cpu, &g.ram, icount + 2, pc + 0x10, false);
}

#[test]
fn int80_openat_and_read_are_decoded_with_buffers_and_file_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    let path = w.g.ustr("/etc/passwd");
    let buf = w.g.ualloc(128);
    // the kernel's file table gets fd 3 when openat returns
    let arr = w.g.files(w.cat, 8);
    let (mut set, mut cpu) = traced(&w, dir.path(), "");
    let sp = 0xbfff_e000;
    int80(&mut set, &mut cpu, &mut w.g, 100, [295, 0xffff_ff9c, path, 0o100000, 0, 0, 0], 0x0804_8123, sp);
    assert_eq!(set.get::<Syscalls>().unwrap().pending().count(), 1);
    let d = w.g.path("/etc/passwd");
    let f = w.g.file(d, w.g.root_mnt);
    w.g.w32(arr + 12, f as u32);
    // A signal handler's block (another stack) is not the return.
    block(&mut set, &mut cpu, &w.g.ram, 150, 0xc100_1000, true);
    cpu.regs[ESP] = sp - 0x400;
    block(&mut set, &mut cpu, &w.g.ram, 160, 0x0804_9000, false);
    assert_eq!(set.get::<Syscalls>().unwrap().pending().count(), 1);
    ret_to_user(&mut set, &mut cpu, &w.g, 200, 0x0804_8123, sp, 3);
    assert_eq!(set.get::<Syscalls>().unwrap().pending().count(), 0);

    // read(3, buf, 100) = 5 via int $0x80; the data is shown from the return.
    int80(&mut set, &mut cpu, &mut w.g, 300, [3, 3, buf, 100, 0, 0, 0], 0x0804_8200, sp);
    w.g.wbytes(buf, b"root:x:0:0\n");
    ret_to_user(&mut set, &mut cpu, &w.g, 400, 0x0804_8200, sp, 5);
    // write(1, "hi\n", 3) = 3; a failing open = -ENOENT
    let hi = w.g.ustr("hi\n");
    int80(&mut set, &mut cpu, &mut w.g, 500, [4, 1, hi, 3, 0, 0, 0], 0x0804_8300, sp);
    ret_to_user(&mut set, &mut cpu, &w.g, 520, 0x0804_8300, sp, 3);
    let nope = w.g.ustr("/nope");
    int80(&mut set, &mut cpu, &mut w.g, 600, [5, nope, 0o1101, 0o644, 0, 0, 0], 0x0804_8400, sp);
    ret_to_user(&mut set, &mut cpu, &w.g, 620, 0x0804_8400, sp, -2);

    let sc = set.get::<Syscalls>().unwrap();
    let evs: Vec<&SyscallEvent> = sc.events_since(0).collect();
    assert_eq!(evs.len(), 4);
    assert_eq!(evs[0].errno(), None);
    assert_eq!(evs[3].errno(), Some(2));
    assert_eq!(evs[1].data.as_deref(), Some(&b"root:"[..]));
    let pe = set.get::<ProcEvents>().unwrap();
    let pev: Vec<&ProcEvent> = pe.events_since(0).collect();
    assert_eq!(pev.len(), 2, "{pev:?}");
    assert_eq!(pev[0].kind, ProcEventKind::FileOpen { fd: 3, path: "/etc/passwd".into(), flags: 0o100000 });
    assert_eq!((pev[0].icount, pev[0].pid, pev[0].tid), (200, Some(43), Some(43)));
    assert_eq!(
        pev[1].kind,
        ProcEventKind::FileRead { fd: 3, path: "/etc/passwd".into(), count: 5, buf, vectored: false, offset: None }
    );
    assert_eq!(pe.open_files(43), vec![(3, "/etc/passwd".to_string())]);

    let out = finish(&mut set, &cpu, &w.g.ram);
    assert!(out.iter().any(|s| s.starts_with("syscalls: 4 calls, 1 failed")), "{out:?}");
    assert!(out.iter().any(|s| s.contains("1 file opens, 1 file reads")), "{out:?}");
    let lines = text_lines(dir.path());
    assert_eq!(
        lines,
        vec![
            "100 43 43 cat openat(AT_FDCWD, \"/etc/passwd\", O_RDONLY|O_LARGEFILE) = 3",
            "300 43 43 cat read(3, \"root:\", 100) = 5",
            "500 43 43 cat write(1, \"hi\\n\", 3) = 3",
            "600 43 43 cat open(\"/nope\", O_WRONLY|O_CREAT|O_TRUNC, 0644) = -2 ENOENT",
        ]
    );
    let recs = read_plog(dir.path());
    let kinds: Vec<(&str, &str, u64)> = recs.iter().map(|r| (r.plugin.as_str(), r.kind.as_str(), r.icount)).collect();
    assert_eq!(
        kinds,
        vec![
            ("osi_linux", "profile", 0),
            ("syscalls", "syscall", 100),
            ("syscalls", "sysret", 200),
            ("proc_events", "file_open", 200),
            ("syscalls", "syscall", 300),
            ("syscalls", "sysret", 400),
            ("proc_events", "file_read", 400),
            ("syscalls", "syscall", 500),
            ("syscalls", "sysret", 520),
            ("syscalls", "syscall", 600),
            ("syscalls", "sysret", 620),
        ]
    );
    let r = &recs[2];
    assert_eq!(r.get("ret").and_then(|v| v.as_i64()), Some(3));
    assert_eq!(r.get("entry_icount").and_then(|v| v.as_u64()), Some(100));
    assert_eq!(r.get("call").and_then(|v| v.as_str()), Some("openat(AT_FDCWD, \"/etc/passwd\", O_RDONLY|O_LARGEFILE)"));
    assert_eq!(recs[1].get("pid").and_then(|v| v.as_u64()), Some(43));
    assert_eq!(recs[1].get("comm").and_then(|v| v.as_str()), Some("cat"));
    assert_eq!(recs[5].get("data").and_then(|v| v.as_bytes()), Some(&b"root:"[..]));
    assert_eq!(recs[10].get("errno").and_then(|v| v.as_str()), Some("ENOENT"));
    assert_eq!(recs[6].get("path").and_then(|v| v.as_str()), Some("/etc/passwd"));
    assert_eq!(recs[6].get("count").and_then(|v| v.as_u64()), Some(5));
}

#[test]
fn execve_argv_and_the_new_program_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    let path = w.g.ustr("/bin/ls");
    let argv = w.g.uargv(&["ls", "-l", "/tmp"]);
    let envp = w.g.uargv(&["A=1", "PATH=/bin"]);
    let (mut set, mut cpu) = traced(&w, dir.path(), "");
    int80(&mut set, &mut cpu, &mut w.g, 1000, [11, path, argv, envp, 0, 0, 0], 0x0804_8123, 0xbfff_e000);
    // The exec replaces the program: comm changes, the return is at the new entry point and stack.
    w.g.set_comm(w.cat, "ls");
    ret_to_user(&mut set, &mut cpu, &w.g, 5000, 0x0804_9000, 0xbfff_fe00, 0);
    let out = finish(&mut set, &cpu, &w.g.ram);
    assert!(out.iter().any(|s| s.contains("1 program starts")), "{out:?}");
    let lines = text_lines(dir.path());
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with(&format!(
            "1000 43 43 cat execve(\"/bin/ls\", [\"ls\", \"-l\", \"/tmp\"], {envp:#x} /* 2 vars */) = 0"
        )),
        "{lines:?}"
    );
    let pe = set.get::<ProcEvents>().unwrap();
    let ev: Vec<&ProcEvent> = pe.events_since(0).collect();
    assert_eq!(
        ev[0].kind,
        ProcEventKind::ProcStart {
            comm: "ls".into(),
            path: "/bin/ls".into(),
            argv: vec!["ls".into(), "-l".into(), "/tmp".into()]
        }
    );
    let recs = read_plog(dir.path());
    let ps = recs.iter().find(|r| r.kind == "proc_start").unwrap();
    assert_eq!(ps.icount, 5000);
    assert_eq!(ps.get("comm").and_then(|v| v.as_str()), Some("ls"));
    let argv: Vec<&str> = ps.get("argv").and_then(|v| v.as_list()).unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(argv, ["ls", "-l", "/tmp"]);
}

#[test]
fn sysenter_takes_argument_six_from_the_user_stack() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let cat_asid = w.cat_asid;
    let mut g = w.g;
    let spec = format!("syscalls:file={}", dir.path().join("sys.txt").display());
    let mut set = load(&spec, None).unwrap();
    let mut cpu = FakeCpu::new(cat_asid);
    start(&mut set, &cpu, &g.ram);
    // __kernel_vsyscall pushed ecx, edx, ebp (the caller's ebp = arg 6) and moved esp to ebp.
    let ebp = 0xbfff_efe0;
    g.w32(ebp, 5); // saved ebp: arg 6 (pgoff)
    g.w32(ebp + 4, 3);
    g.w32(ebp + 8, 8192);
    cpu.regs[EAX] = 192;
    cpu.regs[EBX] = 0;
    cpu.regs[ECX] = 8192;
    cpu.regs[EDX] = 3;
    cpu.regs[ESI] = 0x22;
    cpu.regs[EDI] = 0xffff_ffff;
    cpu.regs[EBP] = ebp;
    cpu.regs[ESP] = 0xc1ff_f000; // sysenter's stack
    let entry = g.sym("entry_SYSENTER_32");
    block(&mut set, &mut cpu, &g.ram, 700, entry, true);
    // sysexit to the vDSO landing pad with ESP = the EBP of the entry
    ret_to_user(&mut set, &mut cpu, &g, 800, 0xb7ff_f429, ebp, 0xb7f0_0000);
    // a second call from the same place: kill(1, SIGTERM) = -EPERM
    cpu.regs[EAX] = 37;
    cpu.regs[EBX] = 1;
    cpu.regs[ECX] = 15;
    cpu.regs[EBP] = ebp;
    block(&mut set, &mut cpu, &g.ram, 900, entry, true);
    ret_to_user(&mut set, &mut cpu, &g, 950, 0xb7ff_f429, ebp, -1);
    // umask(022) = 022 (the old mask, octal)
    cpu.regs[EAX] = 60;
    cpu.regs[EBX] = 0o22;
    cpu.regs[EBP] = ebp;
    block(&mut set, &mut cpu, &g.ram, 970, entry, true);
    ret_to_user(&mut set, &mut cpu, &g, 990, 0xb7ff_f429, ebp, 0o22);
    finish(&mut set, &cpu, &g.ram);
    let lines = text_lines(dir.path());
    assert_eq!(
        lines,
        vec![
            "700 43 43 cat mmap2(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x5) = 0xb7f00000",
            "900 43 43 cat kill(1, SIGTERM) = -1 EPERM",
            "970 43 43 cat umask(022) = 022",
        ]
    );
    let sc = set.get::<Syscalls>().unwrap();
    let ev: Vec<&SyscallEvent> = sc.events_since(0).collect();
    assert_eq!(ev[0].via, Via::Sysenter);
    assert_eq!(ev[0].args, [0, 8192, 3, 0x22, 0xffff_ffff, 5]);
}

#[test]
fn signal_handlers_nest_restarts_supersede_and_noreturn_calls_report_at_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    let buf = w.g.ualloc(64);
    let (mut set, mut cpu) = traced(&w, dir.path(), "");
    let sp = 0xbfff_e000;
    // read(0, buf, 64) blocks; a signal arrives: the handler runs on a lower stack and writes.
    int80(&mut set, &mut cpu, &mut w.g, 100, [3, 0, buf, 64, 0, 0, 0], 0x0804_8123, sp);
    block(&mut set, &mut cpu, &w.g.ram, 150, 0xc100_2000, true);
    cpu.regs[ESP] = sp - 0x300;
    block(&mut set, &mut cpu, &w.g.ram, 160, 0x0804_9000, false);
    let msg = w.g.ustr("sig\n");
    int80(&mut set, &mut cpu, &mut w.g, 200, [4, 2, msg, 4, 0, 0, 0], 0x0804_9010, sp - 0x300);
    ret_to_user(&mut set, &mut cpu, &w.g, 250, 0x0804_9010, sp - 0x300, 4);
    // rt_sigreturn does not return; the kernel restarts read: back onto the int $0x80.
    int80(&mut set, &mut cpu, &mut w.g, 300, [173, 0, 0, 0, 0, 0, 0], 0x0804_9020, sp - 0x300);
    w.g.wbytes(0x0804_8121, &[0xcd, 0x80]);
    ret_to_user(&mut set, &mut cpu, &w.g, 350, 0x0804_8121, sp, 3);
    assert_eq!(set.get::<Syscalls>().unwrap().pending().count(), 1, "a restart is not a return");
    int80(&mut set, &mut cpu, &mut w.g, 360, [3, 0, buf, 64, 0, 0, 0], 0x0804_8123, sp);
    w.g.wbytes(buf, b"ok\n");
    ret_to_user(&mut set, &mut cpu, &w.g, 400, 0x0804_8123, sp, 3);
    // exit_group is reported at entry; a call still pending at the end is reported unfinished.
    int80(&mut set, &mut cpu, &mut w.g, 500, [162, 0, 0, 0, 0, 0, 0], 0x0804_8500, sp);
    int80(&mut set, &mut cpu, &mut w.g, 600, [252, 7, 0, 0, 0, 0, 0], 0x0804_8600, sp - 0x40);
    cpu.icount = 700;
    finish(&mut set, &cpu, &w.g.ram);
    let lines = text_lines(dir.path());
    assert_eq!(
        lines,
        [
            "200 43 43 cat write(2, \"sig\\n\", 4) = 4",
            "300 43 43 cat rt_sigreturn() = ?",
            "100 43 43 cat read(0, 0x804a010, 64) = ? (interrupted)",
            "360 43 43 cat read(0, \"ok\\n\", 64) = 3",
            "600 43 43 cat exit_group(7) = ?",
            "500 43 43 cat nanosleep(NULL, NULL) = ? (unfinished)",
        ]
        .iter()
        .map(|s| s.replace("0x804a010", &format!("{buf:#x}")))
        .collect::<Vec<_>>()
    );
}

#[test]
fn without_a_profile_entries_are_found_by_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    w.g.set_banner(b"Linux version 4.19.0-1-686 (x@y) (gcc) #1 SMP\n");
    let path = w.g.ustr("/etc/hostname");
    let code = w.g.ualloc(16);
    w.g.wbytes(code, &[0xcd, 0x80]);
    let (mut set, mut cpu) = traced(&w, dir.path(), "");
    assert!(matches!(osi(&set).status(), Status::Disabled(_)));
    // decided at the start: the run loop reads the hooks after `start`
    assert_eq!(set.wanted() & ailuro_plugin::hook::AFTER_BLOCK, ailuro_plugin::hook::AFTER_BLOCK);
    let sp = 0xbfff_e000;
    // a user block ending with int $0x80
    block(&mut set, &mut cpu, &w.g.ram, 90, code - 6, false);
    let kesp = w.g.int80_frame(code + 2, sp);
    cpu.regs[EAX] = 33;
    cpu.regs[EBX] = path;
    cpu.regs[ECX] = 4;
    cpu.regs[ESP] = kesp;
    cpu.kernel = true;
    cpu.icount = 100;
    cpu.pc = 0xc191_a10c;
    set.after_block(&cpu, &w.g.ram, code);
    ret_to_user(&mut set, &mut cpu, &w.g, 200, code + 2, sp, -13);
    // The core may also report the block end before delivering the interrupt (user mode, user
    // stack): the return point is then the next instruction and the current stack.
    block(&mut set, &mut cpu, &w.g.ram, 290, code - 6, false);
    cpu.regs[EAX] = 20;
    cpu.regs[ESP] = sp;
    cpu.icount = 300;
    cpu.pc = code + 2;
    set.after_block(&cpu, &w.g.ram, code);
    block(&mut set, &mut cpu, &w.g.ram, 300, 0xc191_a10c, true);
    ret_to_user(&mut set, &mut cpu, &w.g, 400, code + 2, sp, 43);
    let out = finish(&mut set, &cpu, &w.g.ram);
    assert!(out.iter().any(|s| s.contains("no kernel profile: entries found by instruction")), "{out:?}");
    let lines = text_lines(dir.path());
    assert_eq!(
        lines,
        vec![
            format!("100 ? ? asid:{:#x} access(\"/etc/hostname\", R_OK) = -13 EACCES", w.cat_asid),
            format!("300 ? ? asid:{:#x} getpid() = 43", w.cat_asid),
        ]
    );
    let recs = read_plog(dir.path());
    assert_eq!(recs[0].kind, "disabled");
    assert!(recs[0].get("message").and_then(|v| v.as_str()).unwrap().contains("4.19.0-1-686"));
}

#[test]
fn switches_are_resolved_and_asidstory_covers_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    let txt = dir.path().join("story.txt");
    let svg = dir.path().join("story.svg");
    let spec = format!("asidstory:width=20,file={},svg={}", txt.display(), svg.display());
    let mut set = load(&spec, Some((0, 1000))).unwrap();
    assert_eq!(set.names(), vec!["osi_linux", "asidstory"]);
    with_plog(&mut set, dir.path());
    // init runs at the start
    w.g.set_current(w.init);
    w.g.set_on_cpu(w.cat, false);
    let mut cpu = FakeCpu::new(w.init_asid);
    start(&mut set, &cpu, &w.g.ram);
    // 0..250 init; at 250 the scheduler switches to sh: current_task is still init at the CR3
    // write, sh is on_cpu.
    w.g.set_on_cpu(w.sh, true);
    cpu.icount = 250;
    let old = cpu.asid;
    cpu.asid = w.sh_asid;
    set.asid_change(&cpu, &w.g.ram, old, w.sh_asid);
    let s = osi(&set).last_switch().unwrap().clone();
    assert_eq!(s.process.as_ref().map(|p| (p.pid, p.comm.as_str())), Some((42, "sh")));
    // 250..600 sh; at 600 cat (already current: the exec case)
    w.g.set_on_cpu(w.sh, false);
    w.g.set_current(w.cat);
    cpu.icount = 600;
    cpu.asid = w.cat_asid;
    set.asid_change(&cpu, &w.g.ram, w.sh_asid, w.cat_asid);
    // 600..800 cat; at 800 an address space nobody owns
    cpu.icount = 800;
    cpu.asid = 0x0123_4000;
    set.asid_change(&cpu, &w.g.ram, w.cat_asid, 0x0123_4000);
    // 800..900 unknown; 900..1000 sh again
    w.g.set_current(w.sh);
    cpu.icount = 900;
    cpu.asid = w.sh_asid;
    set.asid_change(&cpu, &w.g.ram, 0x0123_4000, w.sh_asid);
    cpu.icount = 1000;
    let out = finish(&mut set, &cpu, &w.g.ram);
    assert!(out.iter().any(|s| s.starts_with("asidstory: 4 processes, 4 address-space switches")), "{out:?}");
    assert!(out.iter().any(|s| s.starts_with("osi_linux: Linux 6.1.0-50-686")), "{out:?}");

    let story = set.get::<AsidStory>().unwrap();
    assert_eq!(story.span(), Some((0, 1000)));
    type Rows = Vec<(String, u64, Vec<(u64, u64)>)>;
    let rows: Rows = story.rows().iter().map(|r| (r.label(), r.instructions, r.intervals.clone())).collect();
    assert_eq!(
        rows,
        vec![
            ("init (1)".to_string(), 250, vec![(0, 250)]),
            ("sh (42)".to_string(), 450, vec![(250, 600), (900, 1000)]),
            ("cat (43)".to_string(), 200, vec![(600, 800)]),
            ("asid 0x1234000".to_string(), 100, vec![(800, 900)]),
        ]
    );
    let seen: Vec<(u32, String)> = osi(&set).seen_processes().into_iter().map(|p| (p.pid, p.comm)).collect();
    assert_eq!(seen, vec![(1, "init".to_string()), (42, "sh".into()), (43, "cat".into())]);

    let text = std::fs::read_to_string(&txt).unwrap();
    assert!(text.contains("instructions 0..1000 (1000), 4 processes"), "{text}");
    let chart: Vec<&str> = text.lines().filter(|l| l.contains(":[")).collect();
    assert_eq!(chart.len(), 4, "{text}");
    assert!(chart[0].ends_with(":[#####               ]"), "{text}");
    assert!(chart[1].ends_with(":[     #######      ##]"), "{text}");
    assert!(chart[2].ends_with(":[            ####    ]"), "{text}");
    assert!(chart[3].ends_with(":[                ##  ]"), "{text}");

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    for label in ["init (1)", "sh (42)", "cat (43)", "asid 0x1234000"] {
        assert!(svg.contains(&format!(">{label}</text>")), "{label}");
    }
    // the axis spans the replay: ticks at 0 and 1k
    assert!(svg.contains(">0</text>") && svg.contains(">1k</text>"), "{svg}");
    // sh has two bars
    let sh_group = svg.split("<g><title>sh (42)").nth(1).unwrap().split("</g></g>").next().unwrap();
    assert_eq!(sh_group.matches("<rect").count(), 2);

    let recs = read_plog(dir.path());
    let sw: Vec<(u64, u64)> = recs
        .iter()
        .filter(|r| r.kind == "switch")
        .map(|r| (r.icount, r.get("pid").and_then(|v| v.as_u64()).unwrap()))
        .collect();
    assert_eq!(sw, vec![(250, 42), (600, 43), (900, 42)]);
}

#[test]
fn registry_documents_every_argument_and_rejects_unknown_ones() {
    let names: Vec<&str> = registry().iter().map(|p| p.name).collect();
    assert_eq!(names, ["osi_linux", "syscalls", "proc_events", "asidstory"]);
    for p in registry() {
        assert!(!p.about.is_empty());
        for a in p.args {
            assert!(!a.help.is_empty(), "{}: {}", p.name, a.key);
        }
    }
    let e = load("syscalls:fil=x", None).err().unwrap();
    assert!(e.contains("unknown argument fil") && e.contains("file, buf, keep"), "{e}");
    let e = load("asidstory:width=3", None).err().unwrap();
    assert!(e.contains("width=3"), "{e}");
    let e = load("osi_linux:bannercheck=0", None).err().unwrap();
    assert!(e.contains("accepts: profile, banner_check"), "{e}");
    // proc_events pulls in syscalls and osi_linux, in dependency order
    let dir = tempfile::tempdir().unwrap();
    let set = load(&format!("proc_events;syscalls:file={}", dir.path().join("s.txt").display()), None).unwrap();
    assert_eq!(set.names(), vec!["osi_linux", "syscalls", "proc_events"]);
}

#[test]
fn the_shipped_profiles_are_embedded() {
    let c = linux::Candidate::embedded("i386");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].source(), "linux-6.1.0-50-686.toml");
    // An x86_64 machine: its own profiles first, then the i386 ones (32-bit kernels boot too).
    let c = linux::Candidate::embedded("x86_64");
    let names: Vec<&str> = c.iter().map(|c| c.source()).collect();
    assert_eq!(names, ["linux-6.1.0-50-amd64.toml", "linux-6.1.0-50-686.toml"]);
    assert_eq!(c[0].arch(), ailuro_kprofile::Arch::X86_64);
    assert!(linux::shipped_profile_text("linux-6.1.0-50-amd64.toml").is_some());
    assert!(linux::Candidate::embedded("arm").is_empty());
}

#[test]
fn asidstory_names_follow_exec_and_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    let spec = format!("asidstory:file=none,svg={}", dir.path().join("s.svg").display());
    let mut set = load(&spec, Some((0, 500))).unwrap();
    w.g.set_current(w.sh);
    w.g.set_on_cpu(w.cat, false);
    let mut cpu = FakeCpu::new(w.sh_asid);
    start(&mut set, &cpu, &w.g.ram);
    // at 100 sh execs ls: the new address space is loaded while the task is still called "sh"
    let (new_mm, new_asid) = w.g.mm();
    let off = w.g.off("task_struct", "mm");
    w.g.w32(w.sh + off, new_mm as u32);
    let switch = |set: &mut PluginSet, cpu: &mut FakeCpu, g: &Guest, icount: u64, asid: u64| {
        cpu.icount = icount;
        let old = cpu.asid;
        cpu.asid = asid;
        set.asid_change(cpu, &g.ram, old, asid);
    };
    switch(&mut set, &mut cpu, &w.g, 100, new_asid);
    assert_eq!(osi(&set).last_switch().unwrap().process.as_ref().unwrap().comm, "sh");
    w.g.set_comm(w.sh, "ls");
    // at 300 the scheduler switches to cat (current_task is still ls)
    w.g.set_on_cpu(w.cat, true);
    switch(&mut set, &mut cpu, &w.g, 300, w.cat_asid);
    // at 400 cat exits: no mm any more, the kernel's page directory is loaded
    w.g.w32(w.cat + off, 0);
    w.g.set_current(w.cat);
    let swapper = w.g.sym("swapper_pg_dir") - KBASE;
    switch(&mut set, &mut cpu, &w.g, 400, swapper);
    cpu.icount = 500;
    finish(&mut set, &cpu, &w.g.ram);
    let story = set.get::<AsidStory>().unwrap();
    let rows: Vec<(String, u64)> = story.rows().iter().map(|r| (r.label(), r.instructions)).collect();
    assert_eq!(rows, vec![("sh (42)".to_string(), 100), ("ls (42)".to_string(), 200), ("cat (43)".to_string(), 200)]);
    let ls = story.rows().into_iter().find(|r| r.label() == "ls (42)").unwrap();
    assert!(ls.asids.contains(&new_asid));
}

#[test]
fn switching_to_the_instruction_fallback_mid_run_asks_for_a_wake() {
    // Paging off and no banner at the start: undecided; paging on without a banner: disabled.
    let dir = tempfile::tempdir().unwrap();
    let mut w = world();
    w.g.set_banner(b"\0\0\0\0");
    let spec = format!("syscalls:file={}", dir.path().join("s.txt").display());
    let mut set = load(&spec, None).unwrap();
    let mut cpu = FakeCpu::new(0);
    start(&mut set, &cpu, &w.g.ram);
    assert_eq!(set.wanted() & ailuro_plugin::hook::AFTER_BLOCK, 0);
    assert_eq!(set.wake_at(), None);
    block(&mut set, &mut cpu, &w.g.ram, 10, 0x0010_0000, true);
    cpu.icount = 20;
    cpu.asid = w.cat_asid;
    set.asid_change(&cpu, &w.g.ram, 0, w.cat_asid);
    assert!(matches!(osi(&set).status(), Status::Disabled(_)));
    block(&mut set, &mut cpu, &w.g.ram, 30, 0xc100_0000, true);
    assert_eq!(set.wake_at(), Some(31));
    cpu.icount = 31;
    set.wake(&cpu, &w.g.ram);
    assert_eq!(set.wake_at(), None);
    assert_eq!(set.wanted() & ailuro_plugin::hook::AFTER_BLOCK, ailuro_plugin::hook::AFTER_BLOCK);
}

/// The world's profile with every kernel-image symbol `by` bytes lower: the kernel in RAM is
/// then `by` above the profile's link-time addresses, as after a KASLR move.
fn moved_profile(w: &World, by: u64) -> ailuro_kprofile::KernelProfile {
    let mut p = w.g.p.clone();
    for a in p.symbols.values_mut() {
        if a.0 >= KBASE {
            a.0 -= by;
        }
    }
    p
}

#[test]
fn a_kernel_moved_by_kaslr_is_found_and_read_at_its_slid_addresses() {
    let w = world();
    let by = 0x0100_0000;
    let p = moved_profile(&w, by);
    let link_int80 = p.symbol("entry_INT80_32").unwrap();
    let osi =
        || OsiLinux::new(vec![crate::linux::Candidate::new("moved.toml".into(), p.clone()).unwrap()], true, "i386");

    // Paging off (the decompressor may still be writing the kernel): not searched yet.
    let o = osi();
    assert_eq!(o.check_with(&FakeCpu::new(0), &w.g.ram), Status::Pending);
    assert_eq!(o.kaslr_slide(), None);

    // Paging on: found by its banner, every query works at the slid addresses.
    let o = osi();
    let cpu = FakeCpu::new(w.cat_asid);
    assert_eq!(
        o.check_with(&cpu, &w.g.ram),
        Status::Ready { release: "6.1.0-50-686".into(), source: "moved.toml".into() }
    );
    assert_eq!(o.kaslr_slide(), Some(by as i64));
    let names: Vec<String> = o.processes_with(&cpu, &w.g.ram).iter().map(|p| p.comm.clone()).collect();
    assert_eq!(names, ["swapper/0", "init", "kthreadd", "sh", "cat"]);
    assert_eq!(o.current_process_with(&cpu, &w.g.ram).map(|p| p.pid), Some(43));
    let listing = o.process_listing_with(&cpu, &w.g.ram);
    assert!(listing.starts_with("kernel moved by KASLR: slide +0x1000000\n"), "{listing}");
    assert!(listing.contains(" cat "), "{listing}");
    // System call entry points move too (syscalls hooks them).
    let moved = crate::linux::Layout::new(&p).unwrap().slid(by as i64, by as i64);
    assert_eq!(moved.entry_int80, Some(link_int80 + by));
    assert_eq!(moved.slide, by as i64);

    // Not moved: slide 0 and no KASLR line.
    let o = OsiLinux::new(vec![crate::linux::Candidate::new("s.toml".into(), w.g.p.clone()).unwrap()], true, "i386");
    assert!(matches!(o.check_with(&cpu, &w.g.ram), Status::Ready { .. }));
    assert_eq!(o.kaslr_slide(), Some(0));
    assert!(o.process_listing_with(&cpu, &w.g.ram).starts_with("   PID"));

    // A stray copy of the banner at a slid address, with no kernel around it, is not taken.
    let mut w = world();
    let banner = w.g.p.kernel.banner.clone();
    w.g.set_banner(b"\0\0\0\0");
    let at = w.g.sym("linux_banner") + 0x0020_0000;
    let mut b = banner.into_bytes();
    b.push(0);
    w.g.wbytes(at, &b);
    let o = OsiLinux::new(vec![crate::linux::Candidate::new("s.toml".into(), w.g.p.clone()).unwrap()], true, "i386");
    let Status::Disabled(msg) = o.check_with(&FakeCpu::new(w.cat_asid), &w.g.ram) else { panic!("not disabled") };
    assert!(msg.contains("6.1.0-50-686"), "{msg}");
}
