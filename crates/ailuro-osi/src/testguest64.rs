//! A synthetic x86_64 Linux guest for tests: kernel data structures laid out with the committed
//! 6.1.0-50-amd64 profile's offsets in a `GuestRam`; the kernel image mapped at its link
//! address plus a virtual slide onto its physical address plus a (possibly different) physical
//! slide, the direct map at `0xffff888000000000`, real 4-level page tables at the (slid)
//! `init_top_pgt` for both, and a CPU view that translates like those tables, or — in user mode
//! under page-table isolation — maps only user memory.

use ailuro_bus::observe::CpuView;
use ailuro_bus::{GuestRam, ProgramPoint};
use ailuro_kprofile::KernelProfile;
use ailuro_plugin::{parse_plugin_list, CpuObserver, LoadCx, PluginSet};

pub const PROFILE64: &str = "linux-6.1.0-50-amd64.toml";
/// The direct map (`page_offset_base` without memory randomization).
pub const KMAP: u64 = 0xffff_8880_0000_0000;
/// `__START_KERNEL_map` (the profile's `image_virt_to_phys`).
pub const IMAGE: u64 = 0xffff_ffff_8000_0000;
const RAM: u64 = 128 << 20;
/// Kernel allocations (direct map), user memory and page tables, by physical address.
const KALLOC: (u64, u64) = (0x0400_0000, 0x0600_0000);
pub const USER_TEXT: (u64, u64, u64) = (0x0040_0000, 0x0600_0000, 0x10000);
pub const USER_STACK: (u64, u64, u64) = (0x7ffd_0000_0000, 0x0610_0000, 0x21000);
const TABLES: u64 = 0x0700_0000;

/// Register numbers of the x86 core's view (`ailuro_x86::observe::X86_REG_NAMES`).
pub const NAMES64: &[&str] = &[
    "eax",
    "ecx",
    "edx",
    "ebx",
    "esp",
    "ebp",
    "esi",
    "edi",
    "eip",
    "eflags",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "cs",
    "ss",
    "ds",
    "es",
    "fs",
    "gs",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "fs_base",
    "gs_base",
    "kernel_gs_base",
    "efer",
];
pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;
pub const R8: usize = 20;
pub const R9: usize = 21;
pub const R10: usize = 22;
pub const GS_BASE: usize = 29;
pub const KERNEL_GS_BASE: usize = 30;
pub const EFER: usize = 31;

/// How the image is mapped: virtual and physical slides (multiples of 2 MiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct Slides {
    pub virt: u64,
    pub phys: u64,
}

#[derive(Clone, Debug)]
pub struct FakeCpu64 {
    pub pc: u64,
    pub icount: u64,
    /// CR3 (0: paging off).
    pub asid: u64,
    pub kernel: bool,
    /// 64 for 64-bit code, 32 for compatibility mode.
    pub bits: u32,
    /// User mode under page-table isolation: kernel memory is not mapped.
    pub pti_user: bool,
    pub regs: [u64; 32],
    pub slides: Slides,
}

impl FakeCpu64 {
    /// In 64-bit kernel code with CR3 `asid`, GS.base the per-cpu base `gs`.
    pub fn new(asid: u64, gs: u64, slides: Slides) -> FakeCpu64 {
        let mut regs = [0; 32];
        regs[EFER] = 0xd01; // SCE, LME, LMA, NXE
        regs[GS_BASE] = gs;
        FakeCpu64 { pc: IMAGE + 0x0100_0000, icount: 0, asid, kernel: true, bits: 64, pti_user: false, regs, slides }
    }

    /// User mode: the kernel's GS base is in IA32_KERNEL_GS_BASE (after SWAPGS).
    pub fn enter_user(&mut self, pc: u64, bits: u32) {
        if self.regs[GS_BASE] >= KMAP {
            self.regs[KERNEL_GS_BASE] = self.regs[GS_BASE];
            self.regs[GS_BASE] = 0;
        }
        self.kernel = false;
        self.pc = pc;
        self.bits = bits;
    }
}

/// Where a virtual address is in this guest (the CPU view's translation).
fn translate(va: u64, slides: Slides, kernel_mapped: bool) -> Option<u64> {
    let image = IMAGE + slides.virt;
    if kernel_mapped && va >= KMAP && va - KMAP < RAM {
        Some(va - KMAP)
    } else if kernel_mapped && va >= image && va - image < (64 << 20) {
        Some(va - image + slides.phys)
    } else {
        [USER_TEXT, USER_STACK].iter().find(|(v, _, l)| va >= *v && va - v < *l).map(|(v, p, _)| va - v + p)
    }
}

impl CpuView for FakeCpu64 {
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
        NAMES64
    }
    fn virt_to_phys(&self, _: &GuestRam, vaddr: u64) -> Option<u64> {
        if self.asid == 0 {
            return Some(vaddr);
        }
        translate(vaddr, self.slides, !self.pti_user)
    }
    fn bits(&self) -> u32 {
        self.bits
    }
}

/// Guest memory under construction.
pub struct Guest64 {
    pub ram: GuestRam,
    pub p: KernelProfile,
    pub slides: Slides,
    next: u64,
    user_next: u64,
    /// The per-cpu area of CPU 0 (direct-map address).
    pub percpu: u64,
    pub root_dentry: u64,
    pub root_mnt: u64,
}

impl Guest64 {
    /// The kernel moved by `slides` (KASLR): the profile's symbols are link-time addresses.
    pub fn with_slides(slides: Slides) -> Guest64 {
        let text = crate::linux::shipped_profile_text(PROFILE64).expect("shipped profile");
        let p = KernelProfile::from_toml(text).unwrap();
        let mut g = Guest64 {
            ram: GuestRam::new(0, RAM).unwrap(),
            p,
            slides,
            next: KALLOC.0,
            user_next: USER_TEXT.0 + 0x1000,
            percpu: 0,
            root_dentry: 0,
            root_mnt: 0,
        };
        g.page_tables();
        let banner = g.p.kernel.banner.clone();
        let mut b = banner.into_bytes();
        b.push(0);
        g.wbytes(g.sym("linux_banner"), &b);
        g.percpu = g.alloc(0x35000, 4096);
        g.w64(g.sym("__per_cpu_offset"), g.percpu);
        let init = g.sym("init_task");
        g.w32(init + g.off("task_struct", "pid"), 0);
        g.w32(init + g.off("task_struct", "tgid"), 0);
        g.set_comm(init, "swapper/0");
        g.w64(init + g.off("task_struct", "real_parent"), init);
        g.w32(init + g.off("task_struct", "flags"), 0x0020_0000);
        for l in ["tasks", "thread_group"] {
            let h = init + g.off("task_struct", l);
            g.w64(h, h);
            g.w64(h + 8, h);
        }
        let root = g.alloc(192, 64);
        g.w64(root + g.off("dentry", "d_parent"), root);
        g.set_name(root, "/");
        let mount = g.alloc(320, 64);
        let mnt = mount + g.off("mount", "mnt");
        g.w64(mount + g.off("mount", "mnt_parent"), mount);
        g.w64(mount + g.off("mount", "mnt_mountpoint"), root);
        g.w64(mnt + g.off("vfsmount", "mnt_root"), root);
        g.root_dentry = root;
        g.root_mnt = mnt;
        g
    }

    /// `init_top_pgt` (at its slid physical address): PML4[273] -> a PDPT whose entry 0 is a
    /// 1 GiB page at 0 (the direct map); PML4[511] -> PDPT[510] -> a PD of 2 MiB pages mapping
    /// the (virtually slid) image onto its (physically slid) place.
    fn page_tables(&mut self) {
        let (p, rw, ps) = (1u64, 2u64, 0x80u64);
        let pml4 = self.p.symbol("init_top_pgt").unwrap() - IMAGE + self.slides.phys;
        let (pdpt_k, pdpt_i, pd_i) = (TABLES, TABLES + 0x1000, TABLES + 0x2000);
        let w = |g: &mut Guest64, at: u64, v: u64| g.ram.write_u64(at, v).unwrap();
        w(self, pml4 + 273 * 8, pdpt_k | p | rw);
        w(self, pdpt_k, p | rw | ps);
        w(self, pml4 + 511 * 8, pdpt_i | p | rw);
        w(self, pdpt_i + 510 * 8, pd_i | p | rw);
        let first = self.slides.virt >> 21;
        for i in 0..32 {
            w(self, pd_i + (first + i) * 8, (self.slides.phys + (i << 21)) | p | rw | ps);
        }
    }

    /// A symbol where the kernel really is (slid).
    pub fn sym(&self, n: &str) -> u64 {
        let a = self.p.symbol(n).unwrap();
        if a >= IMAGE {
            a + self.slides.virt
        } else {
            a
        }
    }

    pub fn off(&self, s: &str, m: &str) -> u64 {
        self.p.offset(s, m).unwrap()
    }

    /// Kernel allocation (direct-map address).
    pub fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let a = self.next.div_ceil(align) * align;
        self.next = a + size;
        assert!(self.next < KALLOC.1);
        KMAP + a
    }

    /// User allocation in the text mapping.
    pub fn ualloc(&mut self, size: u64) -> u64 {
        let a = self.user_next.div_ceil(16) * 16;
        self.user_next = a + size;
        assert!(self.user_next < USER_TEXT.0 + USER_TEXT.2);
        a
    }

    pub fn phys(&self, va: u64) -> u64 {
        translate(va, self.slides, true).unwrap_or_else(|| panic!("unmapped {va:#x}"))
    }

    pub fn wbytes(&mut self, va: u64, b: &[u8]) {
        let pa = self.phys(va);
        self.ram.write(pa, b).unwrap();
    }

    pub fn w32(&mut self, va: u64, v: u32) {
        self.wbytes(va, &v.to_le_bytes());
    }

    pub fn w64(&mut self, va: u64, v: u64) {
        self.wbytes(va, &v.to_le_bytes());
    }

    pub fn ustr(&mut self, s: &str) -> u64 {
        let a = self.ualloc(s.len() as u64 + 1);
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.wbytes(a, &v);
        a
    }

    /// A user NULL-terminated array of 8-byte string pointers.
    pub fn uargv(&mut self, items: &[&str]) -> u64 {
        let ptrs: Vec<u64> = items.iter().map(|s| self.ustr(s)).collect();
        let a = self.ualloc(8 * (ptrs.len() as u64 + 1));
        for (i, p) in ptrs.iter().enumerate() {
            self.w64(a + 8 * i as u64, *p);
        }
        self.w64(a + 8 * ptrs.len() as u64, 0);
        a
    }

    pub fn set_comm(&mut self, t: u64, comm: &str) {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        self.wbytes(t + self.off("task_struct", "comm"), &c);
    }

    fn list_add_tail(&mut self, head: u64, node: u64) {
        let prev = self.ram.read_u64(self.phys(head + 8)).unwrap();
        self.w64(node, head);
        self.w64(node + 8, prev);
        self.w64(prev, node);
        self.w64(head + 8, node);
    }

    /// A process (thread-group leader) on the task list.
    pub fn task(&mut self, pid: u32, comm: &str, parent: u64, mm: u64) -> u64 {
        let t = self.alloc(9792, 64);
        self.w32(t + self.off("task_struct", "pid"), pid);
        self.w32(t + self.off("task_struct", "tgid"), pid);
        self.set_comm(t, comm);
        self.w64(t + self.off("task_struct", "real_parent"), parent);
        self.w64(t + self.off("task_struct", "mm"), mm);
        self.w32(t + self.off("task_struct", "flags"), if mm == 0 { 0x0020_0000 } else { 0 });
        let tg = t + self.off("task_struct", "thread_group");
        self.w64(tg, tg);
        self.w64(tg + 8, tg);
        let head = self.sym("init_task") + self.off("task_struct", "tasks");
        self.list_add_tail(head, t + self.off("task_struct", "tasks"));
        t
    }

    /// CPU 0's per-cpu `current_task`.
    pub fn set_current(&mut self, t: u64) {
        let slot = self.percpu + self.p.symbol("current_task").unwrap();
        self.w64(slot, t);
    }

    /// An mm with its own PGD (8 KiB aligned, as with PTI configured): (mm, asid = the PGD's
    /// physical address).
    pub fn mm(&mut self) -> (u64, u64) {
        let pgd = self.alloc(8192, 8192);
        let mm = self.alloc(1088, 64);
        self.w64(mm + self.off("mm_struct", "pgd"), pgd);
        (mm, pgd - KMAP)
    }

    pub fn set_name(&mut self, dentry: u64, name: &str) {
        let s = self.alloc(name.len() as u64 + 1, 8);
        let mut v = name.as_bytes().to_vec();
        v.push(0);
        self.wbytes(s, &v);
        let q = dentry + self.off("dentry", "d_name");
        self.w32(q + self.off("qstr", "len"), name.len() as u32);
        self.w64(q + self.off("qstr", "name"), s);
    }

    /// A dentry chain for an absolute path under the root; returns the last.
    pub fn path(&mut self, path: &str) -> u64 {
        let mut d = self.root_dentry;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let n = self.alloc(192, 64);
            self.w64(n + self.off("dentry", "d_parent"), d);
            self.set_name(n, part);
            d = n;
        }
        d
    }

    pub fn file(&mut self, dentry: u64) -> u64 {
        let f = self.alloc(232, 64);
        let fp = f + self.off("file", "f_path");
        let mnt = self.root_mnt;
        self.w64(fp + self.off("path", "mnt"), mnt);
        self.w64(fp + self.off("path", "dentry"), dentry);
        f
    }

    pub fn vma(&mut self, start: u64, end: u64, flags: u64, file: u64) -> u64 {
        let v = self.alloc(152, 8);
        self.w64(v + self.off("vm_area_struct", "vm_start"), start);
        self.w64(v + self.off("vm_area_struct", "vm_end"), end);
        self.w64(v + self.off("vm_area_struct", "vm_flags"), flags);
        self.w64(v + self.off("vm_area_struct", "vm_file"), file);
        v
    }

    pub fn node(&mut self, bytes: &[u8]) -> u64 {
        let n = self.alloc(256, 256);
        self.wbytes(n, bytes);
        n
    }

    pub fn set_maple_root(&mut self, mm: u64, root: u64) {
        let mt = mm + self.off("mm_struct", "mm_mt");
        self.w64(mt + self.off("maple_tree", "ma_root"), root);
    }

    /// A file table of `max` descriptors; returns the fd array.
    pub fn files(&mut self, task: u64, max: u32) -> u64 {
        let files = self.alloc(704, 64);
        let fdt = self.alloc(56, 8);
        let arr = self.alloc(8 * u64::from(max), 8);
        self.w64(task + self.off("task_struct", "files"), files);
        self.w64(files + self.off("files_struct", "fdt"), fdt);
        self.w32(fdt + self.off("fdtable", "max_fds"), max);
        self.w64(fdt + self.off("fdtable", "fd"), arr);
        arr
    }

    /// A `struct pt_regs` on a kernel stack holding a 32-bit caller's registers (as
    /// `int80_emulation` gets it): `regs` are eax, ebx, ecx, edx, esi, edi, ebp. Returns its
    /// address.
    pub fn pt_regs(&mut self, regs: [u64; 7], eip: u64, esp: u64) -> u64 {
        let stack = self.alloc(16384, 16384);
        let r = stack + 16384 - 168;
        let [eax, ebx, ecx, edx, esi, edi, ebp] = regs;
        for (name, v) in [
            ("ax", eax),
            ("bx", ebx),
            ("cx", ecx),
            ("dx", edx),
            ("si", esi),
            ("di", edi),
            ("bp", ebp),
            ("orig_ax", u64::MAX),
            ("ip", eip),
            ("cs", 0x23),
            ("flags", 0x202),
            ("sp", esp),
            ("ss", 0x2b),
        ] {
            let off = self.off("pt_regs", name);
            self.w64(r + off, v);
        }
        r
    }
}

/// A plugin set for an x86_64 machine.
pub fn load64(spec: &str) -> Result<PluginSet, String> {
    let lcx = LoadCx { replay_range: Some((0, 10_000)), arch: "x86_64".into(), ..LoadCx::default() };
    PluginSet::load(&crate::registry(), &parse_plugin_list(spec).unwrap(), &lcx)
}

pub fn start64(set: &mut PluginSet, cpu: &FakeCpu64, ram: &GuestRam) {
    set.start(ProgramPoint { icount: cpu.icount, pc: cpu.pc }, cpu, ram).unwrap();
}

pub fn finish64(set: &mut PluginSet, cpu: &FakeCpu64, ram: &GuestRam) -> Vec<String> {
    set.finish(ProgramPoint { icount: cpu.icount, pc: cpu.pc }, cpu, ram).unwrap()
}

/// A block starts at `pc` at `icount`.
pub fn block64(set: &mut PluginSet, cpu: &mut FakeCpu64, ram: &GuestRam, icount: u64, pc: u64) {
    cpu.icount = icount;
    cpu.pc = pc;
    set.before_block(cpu, ram);
}

/// A CR3 write.
pub fn cr3(set: &mut PluginSet, cpu: &mut FakeCpu64, ram: &GuestRam, icount: u64, new: u64) {
    cpu.icount = icount;
    let old = cpu.asid;
    cpu.asid = new;
    set.asid_change(cpu, ram, old, new);
}
