//! A synthetic i386 Linux guest for tests: kernel data structures laid out with the committed
//! 6.1.0-50-686 profile's offsets in a `GuestRam`, and a CPU view with the kernel's direct map
//! (virtual = physical + 0xc0000000) plus a few user mappings.

use ailuro_bus::observe::CpuView;
use ailuro_bus::{GuestRam, ProgramPoint};
use ailuro_kprofile::KernelProfile;
use ailuro_plugin::{parse_plugin_list, CpuObserver, LoadCx, PluginSet};

pub const KBASE: u64 = 0xc000_0000;
pub const PROFILE: &str = "linux-6.1.0-50-686.toml";
/// User code / data and stack mappings (virtual base, physical base, length).
pub const USER_TEXT: (u64, u64, u64) = (0x0804_8000, 0x0300_0000, 0x10000);
pub const USER_STACK: (u64, u64, u64) = (0xbffd_f000, 0x0310_0000, 0x21000);

pub const EAX: usize = 0;
pub const ECX: usize = 1;
pub const EDX: usize = 2;
pub const EBX: usize = 3;
pub const ESP: usize = 4;
pub const EBP: usize = 5;
pub const ESI: usize = 6;
pub const EDI: usize = 7;

#[derive(Clone, Debug)]
pub struct FakeCpu {
    pub pc: u64,
    pub icount: u64,
    /// 0: paging off (identity translation, like the real CPU).
    pub asid: u64,
    pub kernel: bool,
    pub regs: [u64; 20],
    pub user: Vec<(u64, u64, u64)>,
}

impl FakeCpu {
    pub fn new(asid: u64) -> FakeCpu {
        FakeCpu { pc: 0xc100_0000, icount: 0, asid, kernel: true, regs: [0; 20], user: vec![USER_TEXT, USER_STACK] }
    }
}

impl CpuView for FakeCpu {
    fn pc(&self) -> u64 {
        self.pc
    }
    fn icount(&self) -> u64 {
        self.icount
    }
    fn asid(&self) -> u64 {
        self.asid
    }
    fn in_kernel(&self) -> bool {
        self.kernel
    }
    fn reg(&self, n: usize) -> u64 {
        self.regs.get(n).copied().unwrap_or(0)
    }
    fn reg_names(&self) -> &'static [&'static str] {
        &["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"]
    }
    fn virt_to_phys(&self, _: &GuestRam, vaddr: u64) -> Option<u64> {
        if self.asid == 0 {
            return Some(vaddr & 0xffff_ffff);
        }
        if vaddr >= KBASE {
            return Some(vaddr - KBASE);
        }
        self.user.iter().find(|(v, _, l)| vaddr >= *v && vaddr - v < *l).map(|(v, p, _)| vaddr - v + p)
    }
}

/// Guest memory under construction.
pub struct Guest {
    pub ram: GuestRam,
    pub p: KernelProfile,
    next: u64,
    user_next: u64,
    pub root_dentry: u64,
    pub root_mnt: u64,
}

impl Guest {
    /// 64 MiB of RAM with the profile's banner and per-cpu offset in place and an init_task.
    pub fn new() -> Guest {
        let text = crate::linux::shipped_profile_text(PROFILE).expect("shipped profile");
        let p = KernelProfile::from_toml(text).unwrap();
        let mut g = Guest {
            ram: GuestRam::new(0, 64 << 20).unwrap(),
            p,
            next: 0x0210_0000,
            user_next: USER_TEXT.0 + 0x1000,
            root_dentry: 0,
            root_mnt: 0,
        };
        let banner = g.p.kernel.banner.clone();
        g.set_banner(banner.as_bytes());
        g.w32(g.sym("__per_cpu_offset"), 0x0010_0000);
        let init = g.sym("init_task");
        g.init_task_fields(init, 0, "swapper/0");
        // the root file system: "/" mounted on itself
        let root = g.alloc(128, 64);
        g.w32(root + g.off("dentry", "d_parent"), root as u32);
        g.set_name(root, "/");
        let mount = g.alloc(168, 64);
        let mnt = mount + g.off("mount", "mnt");
        g.w32(mount + g.off("mount", "mnt_parent"), mount as u32);
        g.w32(mount + g.off("mount", "mnt_mountpoint"), root as u32);
        g.w32(mnt + g.off("vfsmount", "mnt_root"), root as u32);
        g.root_dentry = root;
        g.root_mnt = mnt;
        g
    }

    pub fn sym(&self, n: &str) -> u64 {
        self.p.symbol(n).unwrap()
    }

    pub fn off(&self, s: &str, m: &str) -> u64 {
        self.p.offset(s, m).unwrap()
    }

    /// Kernel allocation (virtual address).
    pub fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let a = self.next.div_ceil(align) * align;
        self.next = a + size;
        assert!(self.next < 0x0300_0000);
        KBASE + a
    }

    /// User allocation in the text mapping (virtual address).
    pub fn ualloc(&mut self, size: u64) -> u64 {
        let a = self.user_next.div_ceil(16) * 16;
        self.user_next = a + size;
        assert!(self.user_next < USER_TEXT.0 + USER_TEXT.2);
        a
    }

    fn phys(va: u64) -> u64 {
        if va >= KBASE {
            va - KBASE
        } else if va >= USER_STACK.0 && va - USER_STACK.0 < USER_STACK.2 {
            va - USER_STACK.0 + USER_STACK.1
        } else {
            assert!(va >= USER_TEXT.0 && va - USER_TEXT.0 < USER_TEXT.2, "unmapped {va:#x}");
            va - USER_TEXT.0 + USER_TEXT.1
        }
    }

    pub fn wbytes(&mut self, va: u64, b: &[u8]) {
        self.ram.write(Self::phys(va), b).unwrap();
    }

    pub fn w32(&mut self, va: u64, v: u32) {
        self.wbytes(va, &v.to_le_bytes());
    }

    pub fn set_banner(&mut self, b: &[u8]) {
        let at = self.sym("linux_banner");
        let mut v = b.to_vec();
        v.push(0);
        self.wbytes(at, &v);
    }

    /// A user C string.
    pub fn ustr(&mut self, s: &str) -> u64 {
        let a = self.ualloc(s.len() as u64 + 1);
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.wbytes(a, &v);
        a
    }

    /// A user NULL-terminated pointer array of strings.
    pub fn uargv(&mut self, items: &[&str]) -> u64 {
        let ptrs: Vec<u64> = items.iter().map(|s| self.ustr(s)).collect();
        let a = self.ualloc(4 * (ptrs.len() as u64 + 1));
        for (i, p) in ptrs.iter().enumerate() {
            self.w32(a + 4 * i as u64, *p as u32);
        }
        self.w32(a + 4 * ptrs.len() as u64, 0);
        a
    }

    fn init_task_fields(&mut self, t: u64, pid: u32, comm: &str) {
        self.w32(t + self.off("task_struct", "pid"), pid);
        self.w32(t + self.off("task_struct", "tgid"), pid);
        self.set_comm(t, comm);
        self.w32(t + self.off("task_struct", "real_parent"), t as u32);
        self.w32(t + self.off("task_struct", "flags"), 0x0020_0000);
        let tasks = t + self.off("task_struct", "tasks");
        self.w32(tasks, tasks as u32);
        self.w32(tasks + 4, tasks as u32);
        let tg = t + self.off("task_struct", "thread_group");
        self.w32(tg, tg as u32);
        self.w32(tg + 4, tg as u32);
    }

    pub fn set_comm(&mut self, t: u64, comm: &str) {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        self.wbytes(t + self.off("task_struct", "comm"), &c);
    }

    /// Insert `node` (a list_head address) before `head` in a circular list.
    fn list_add_tail(&mut self, head: u64, node: u64) {
        let prev = u64::from(self.ram.read_u32(Self::phys(head + 4)).unwrap());
        self.w32(node, head as u32);
        self.w32(node + 4, prev as u32);
        self.w32(prev, node as u32);
        self.w32(head + 4, node as u32);
    }

    /// A task on the task list (a thread if `leader` is given: on the leader's thread group).
    pub fn task(&mut self, pid: u32, tgid: u32, comm: &str, parent: u64, mm: u64, leader: Option<u64>) -> u64 {
        let t = self.alloc(6528, 64);
        self.w32(t + self.off("task_struct", "pid"), pid);
        self.w32(t + self.off("task_struct", "tgid"), tgid);
        self.set_comm(t, comm);
        self.w32(t + self.off("task_struct", "real_parent"), parent as u32);
        self.w32(t + self.off("task_struct", "mm"), mm as u32);
        self.w32(t + self.off("task_struct", "flags"), if mm == 0 { 0x0020_0000 } else { 0 });
        self.wbytes(t + self.off("task_struct", "start_time"), &(u64::from(pid) * 1_000_000_000).to_le_bytes());
        let tg = t + self.off("task_struct", "thread_group");
        match leader {
            None => {
                self.w32(tg, tg as u32);
                self.w32(tg + 4, tg as u32);
                let head = self.sym("init_task") + self.off("task_struct", "tasks");
                self.list_add_tail(head, t + self.off("task_struct", "tasks"));
            }
            Some(l) => {
                let head = l + self.off("task_struct", "thread_group");
                self.list_add_tail(head, tg);
            }
        }
        t
    }

    pub fn set_on_cpu(&mut self, t: u64, on: bool) {
        self.w32(t + self.off("task_struct", "on_cpu"), u32::from(on));
    }

    /// The per-cpu current task of CPU 0.
    pub fn set_current(&mut self, t: u64) {
        let slot = self.p.current_task_slot(0x0010_0000).unwrap();
        self.w32(slot, t as u32);
    }

    /// An mm with its own page directory; returns (mm, asid).
    pub fn mm(&mut self) -> (u64, u64) {
        let pgd = self.alloc(4096, 4096);
        let mm = self.alloc(560, 64);
        self.w32(mm + self.off("mm_struct", "pgd"), pgd as u32);
        (mm, pgd - KBASE)
    }

    pub fn set_name(&mut self, dentry: u64, name: &str) {
        let s = self.alloc(name.len() as u64 + 1, 4);
        let mut v = name.as_bytes().to_vec();
        v.push(0);
        self.wbytes(s, &v);
        let q = dentry + self.off("dentry", "d_name");
        self.w32(q + self.off("qstr", "len"), name.len() as u32);
        self.w32(q + self.off("qstr", "name"), s as u32);
    }

    pub fn dentry(&mut self, name: &str, parent: u64) -> u64 {
        let d = self.alloc(128, 64);
        self.w32(d + self.off("dentry", "d_parent"), parent as u32);
        self.set_name(d, name);
        d
    }

    /// A dentry chain for an absolute path under the root dentry; returns the last.
    pub fn path(&mut self, path: &str) -> u64 {
        let mut d = self.root_dentry;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            d = self.dentry(part, d);
        }
        d
    }

    pub fn file(&mut self, dentry: u64, mnt: u64) -> u64 {
        let f = self.alloc(160, 64);
        let fp = f + self.off("file", "f_path");
        self.w32(fp + self.off("path", "mnt"), mnt as u32);
        self.w32(fp + self.off("path", "dentry"), dentry as u32);
        f
    }

    /// A file system mounted on `mountpoint` (a dentry of the root fs): returns (vfsmount, its
    /// root dentry).
    pub fn mount_on(&mut self, mountpoint: u64) -> (u64, u64) {
        let root = self.alloc(128, 64);
        self.w32(root + self.off("dentry", "d_parent"), root as u32);
        self.set_name(root, "/");
        let mount = self.alloc(168, 64);
        let mnt = mount + self.off("mount", "mnt");
        let parent_mount = self.root_mnt - self.off("mount", "mnt");
        self.w32(mount + self.off("mount", "mnt_parent"), parent_mount as u32);
        self.w32(mount + self.off("mount", "mnt_mountpoint"), mountpoint as u32);
        self.w32(mnt + self.off("vfsmount", "mnt_root"), root as u32);
        (mnt, root)
    }

    pub fn vma(&mut self, mm: u64, start: u64, end: u64, flags: u32, pgoff: u32, file: u64) -> u64 {
        let v = self.alloc(72, 8);
        self.w32(v + self.off("vm_area_struct", "vm_start"), start as u32);
        self.w32(v + self.off("vm_area_struct", "vm_end"), end as u32);
        self.w32(v + self.off("vm_area_struct", "vm_mm"), mm as u32);
        self.w32(v + self.off("vm_area_struct", "vm_flags"), flags);
        self.w32(v + self.off("vm_area_struct", "vm_pgoff"), pgoff);
        self.w32(v + self.off("vm_area_struct", "vm_file"), file as u32);
        v
    }

    /// A maple node from its bytes (256-byte aligned).
    pub fn node(&mut self, bytes: &[u8]) -> u64 {
        let n = self.alloc(256, 256);
        self.wbytes(n, bytes);
        n
    }

    pub fn set_maple_root(&mut self, mm: u64, root: u64) {
        let mt = mm + self.off("mm_struct", "mm_mt");
        self.w32(mt + self.off("maple_tree", "ma_root"), root as u32);
    }

    pub fn set_mm_field(&mut self, mm: u64, field: &str, v: u32) {
        self.w32(mm + self.off("mm_struct", field), v);
    }

    /// files_struct with an fd table of `max` slots; returns the fd array address.
    pub fn files(&mut self, task: u64, max: u32) -> u64 {
        let files = self.alloc(256, 64);
        let fdt = self.alloc(28, 4);
        let arr = self.alloc(4 * u64::from(max), 4);
        self.w32(task + self.off("task_struct", "files"), files as u32);
        self.w32(files + self.off("files_struct", "fdt"), fdt as u32);
        self.w32(fdt + self.off("fdtable", "max_fds"), max);
        self.w32(fdt + self.off("fdtable", "fd"), arr as u32);
        arr
    }

    /// A kernel stack with an `int $0x80` hardware frame; returns ESP at entry.
    pub fn int80_frame(&mut self, user_eip: u64, user_esp: u64) -> u64 {
        let s = self.alloc(8192, 8192);
        let esp = s + 8192 - 8 - 20;
        for (i, v) in [user_eip, 0x73, 0x202, user_esp, 0x7b].iter().enumerate() {
            self.w32(esp + 4 * i as u64, *v as u32);
        }
        esp
    }
}

/// A plugin set loaded from a `-panda` string with the crate's registry.
pub fn load(spec: &str, range: Option<(u64, u64)>) -> Result<PluginSet, String> {
    let lcx = LoadCx { replay_range: range, arch: "i386".into(), ..LoadCx::default() };
    PluginSet::load(&crate::registry(), &parse_plugin_list(spec).unwrap(), &lcx)
}

/// Attach a plog in `dir`.
pub fn with_plog(set: &mut PluginSet, dir: &std::path::Path) {
    let h = ailuro_plog::PlogHeader::new("ailuro-osi test");
    set.set_plog(ailuro_plog::PlogWriter::create(dir.join("test.plog"), &h, true).unwrap());
}

pub fn read_plog(dir: &std::path::Path) -> Vec<ailuro_plog::OwnedRecord> {
    ailuro_plog::PlogReader::open(dir.join("test.plog")).unwrap().map(|r| r.unwrap()).collect()
}

pub fn start(set: &mut PluginSet, cpu: &FakeCpu, ram: &GuestRam) {
    set.start(ProgramPoint { icount: cpu.icount, pc: cpu.pc }, cpu, ram).unwrap();
}

pub fn finish(set: &mut PluginSet, cpu: &FakeCpu, ram: &GuestRam) -> Vec<String> {
    set.finish(ProgramPoint { icount: cpu.icount, pc: cpu.pc }, cpu, ram).unwrap()
}

/// A block starts at `pc` at `icount`, in kernel or user mode.
pub fn block(set: &mut PluginSet, cpu: &mut FakeCpu, ram: &GuestRam, icount: u64, pc: u64, kernel: bool) {
    cpu.icount = icount;
    cpu.pc = pc;
    cpu.kernel = kernel;
    set.before_block(cpu, ram);
}
