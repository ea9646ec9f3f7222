//! `osi_linux`: Linux process introspection from a kernel profile (PANDA's `osi_linux`).
//!
//! The plugin reads kernel data structures out of guest memory with the offsets of a kernel
//! profile (`docs/KERNEL-PROFILES.md`): the running task (the per-cpu `current_task`), the task
//! list (`init_task.tasks`), a task's memory map (the `mm_struct.mm_mt` maple tree) and the path
//! of a `struct file`. It never trusts a profile it has not checked: the profile's `linux_banner`
//! must be in guest memory at the profile's address, or at that address moved by KASLR (found
//! once, see [`crate::kaslr`]; every symbol is then used slid). See [`OsiLinux`] for when that
//! is checked.
//! Without a matching profile it prints one message and stays disabled; every query then answers
//! `None` or an empty list, and the replay goes on.
//!
//! Other plugins use the typed API: `cx.plugin::<OsiLinux>()` then
//! [`OsiLinux::current_process`], [`OsiLinux::processes`], [`OsiLinux::mappings`],
//! [`OsiLinux::fd_path`], [`OsiLinux::last_switch`], [`OsiLinux::seen_processes`].
//!
//! Hooks: only `ASID_CHANGE` (a CR3 write): the plugin works out which task the CPU switches to
//! and writes a `switch` plog record. Reads are done through the current page tables, falling back
//! to the kernel's direct map (physical = virtual − `image_virt_to_phys`) for low memory, which is
//! also how kernel addresses are read while paging is still off.

use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ailuro_bus::GuestRam;
use ailuro_kprofile::{Arch, BannerCheck, KernelProfile, LookupError};
use ailuro_plugin::{hook, ArgInfo, Args, CpuView, Cx, LoadCx, Plugin, PluginInfo};

use crate::maple::MapleLayout;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/profiles.rs"));
}

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "osi_linux",
    about: "Linux introspection from a kernel profile: current process, process list, memory maps",
    args: ARGS,
    deps: &[],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo {
        key: "profile",
        help: "kernel profile TOML file (default: the shipped profile whose banner is in guest memory)",
    },
    ArgInfo {
        key: "banner_check",
        help: "true: use a profile only if its linux_banner is in guest memory (default true)",
    },
];

/// Longest task list walked (a corrupt list must not hang the replay).
const MAX_TASKS: usize = 32_768;
/// While no profile is decided and paging is off, banner checks are retried at most this often.
const RETRY_INSNS: u64 = 1_000_000;
/// Kernel direct map size on i386 (`MAXMEM` is below 896 MiB): the physical fallback stops here.
const LOWMEM_MAX: u64 = 0x3800_0000;
/// x86_64: the kernel half of the address space starts here (4-level paging; every kernel
/// pointer — direct map, vmalloc, per-cpu areas, the image — is at or above it).
pub(crate) const X86_64_KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// x86_64 with page-table isolation (PTI, the Meltdown mitigation): the user-mode CR3 of a
/// process is its kernel PGD's address with this bit set (the user copy is the second page of
/// the 8 KiB PGD allocation), and the kernel switches between the two at every entry and exit.
pub(crate) const PTI_USER_PGD: u64 = 0x1000;
/// Longest file name component and path depth read.
const MAX_NAME: usize = 255;
const MAX_PATH_DEPTH: usize = 128;

fn make(args: &Args, lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let banner_check = args.bool("banner_check", true)?;
    let candidates = match args.path("profile") {
        Some(path) => vec![Candidate::from_file(&path)?],
        None => Candidate::embedded(&lcx.arch),
    };
    Ok(Box::new(OsiLinux::new(candidates, banner_check, &lcx.arch)))
}

/// One task (thread) as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// Address of its `task_struct` (kernel virtual).
    pub task: u64,
    /// Kernel `pid`: the thread id (what user space calls the TID).
    pub pid: u32,
    /// Thread-group id: what user space calls the PID.
    pub tgid: u32,
    /// `real_parent`'s thread-group id (0 for the idle task).
    pub ppid: u32,
    /// `comm`: the executable name, at most 15 bytes (lossy UTF-8).
    pub comm: String,
    /// The address space: `mm->pgd` as a physical address (what CR3 holds), 0 for kernel threads.
    pub asid: u64,
    /// `mm` (0 for kernel threads).
    pub mm: u64,
    /// `start_time` in nanoseconds of the monotonic clock (0 if the profile lacks it).
    pub start_time: u64,
    /// A kernel thread (`PF_KTHREAD`; without `task_struct.flags` in the profile: `mm` is NULL).
    /// A user process that is exiting also has no `mm`, but is not a kernel thread.
    pub kernel_thread: bool,
}

impl Process {
    /// `comm`, bracketed for kernel threads as `ps` shows them (`[kthreadd]`).
    pub fn display_name(&self) -> String {
        if self.kernel_thread {
            format!("[{}]", self.comm)
        } else {
            self.comm.clone()
        }
    }
}

/// One memory mapping (`vm_area_struct`) of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `vm_flags` (VM_READ 1, VM_WRITE 2, VM_EXEC 4, VM_SHARED 8, ...).
    pub flags: u64,
    /// `vm_pgoff`: offset in the file, in pages.
    pub pgoff: u64,
    /// Path of the mapped file (walked up `d_parent` and through mount points), if any.
    pub file: Option<String>,
    /// `[heap]` or `[stack]` for those anonymous mappings (as `/proc/PID/maps` names them).
    pub special: Option<&'static str>,
}

impl Mapping {
    /// `r-xp`-style permissions, as in `/proc/PID/maps`.
    pub fn perms(&self) -> String {
        let f = self.flags;
        let mut s = String::with_capacity(4);
        s.push(if f & 1 != 0 { 'r' } else { '-' });
        s.push(if f & 2 != 0 { 'w' } else { '-' });
        s.push(if f & 4 != 0 { 'x' } else { '-' });
        s.push(if f & 8 != 0 { 's' } else { 'p' });
        s
    }

    /// The file path, `[heap]`/`[stack]`, or an empty string.
    pub fn name(&self) -> &str {
        self.file.as_deref().or(self.special).unwrap_or("")
    }
}

/// An address-space change and the task the CPU switched to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Program point of the CR3 write.
    pub icount: u64,
    /// Address space before.
    pub old_asid: u64,
    /// Address space after.
    pub new_asid: u64,
    /// The task that runs in the new address space (`None`: unknown, or introspection is off).
    pub process: Option<Process>,
    /// The task that was running: the per-cpu current task at the CR3 write (the scheduler
    /// updates it only after switching the address space). Its `comm` is up to date, which
    /// the one read when its address space was entered may not be (an exec loads the new
    /// address space before it sets the new name).
    pub previous: Option<Process>,
}

/// A row of the table of every process seen running (at a switch or by a query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenProcess {
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Parent's process id.
    pub ppid: u32,
    /// Name (a new row starts when a task execs a program with another name).
    pub comm: String,
    /// Address space when last seen.
    pub asid: u64,
    /// Kernel thread.
    pub kernel_thread: bool,
    /// First and last program point it was seen at.
    pub first_icount: u64,
    /// Last program point it was seen at.
    pub last_icount: u64,
}

/// Where introspection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// No profile decided yet (the kernel may not be in memory yet; checked again later).
    Pending,
    /// Introspection works with this profile (kernel release, profile source).
    Ready {
        /// The kernel release (`uname -r`).
        release: String,
        /// The profile file.
        source: String,
    },
    /// Disabled; the message said why.
    Disabled(String),
}

/// Resolved offsets of everything the walkers read (no string lookups on hot paths).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    arch: Arch,
    pub page_offset: u64,
    /// KASLR: how far the kernel image is from the profile's link-time addresses (the symbols
    /// below already include it; 0 until [`Layout::slid`]).
    pub slide: i64,
    pub init_task: u64,
    pub linux_banner: u64,
    per_cpu_offsets: u64,
    current_task_sym: u64,
    current_task_off: u64,
    /// i386 `entry_INT80_32`; x86_64 `entry_INT80_compat` (kernels before the 6.1-stable rework
    /// of `int $0x80`): the IDT's handler, reached with the caller's registers.
    pub entry_int80: Option<u64>,
    /// i386 `entry_SYSENTER_32`; x86_64 `entry_SYSENTER_compat`.
    pub entry_sysenter: Option<u64>,
    /// x86_64 `entry_SYSCALL_64` (`syscall` from 64-bit code: IA32_LSTAR).
    pub entry_syscall64: Option<u64>,
    /// x86_64 `entry_SYSCALL_compat` (`syscall` from compatibility mode: IA32_CSTAR, AMD only).
    pub entry_syscall_compat: Option<u64>,
    /// x86_64 `int80_emulation` (6.1 stable and later): the C handler of `int $0x80`, called
    /// with the saved user registers (`struct pt_regs *`) in RDI.
    pub int80_emulation: Option<u64>,
    /// `struct pt_regs` offsets (x86_64), to read the caller's registers at `int80_emulation`.
    pub pt_regs: Option<PtRegsLayout>,
    /// Pointer size in bytes (4 or 8) and the mask of an address of that width.
    pub ptr: u64,
    pub mask: u64,
    /// Lowest kernel address (i386 `PAGE_OFFSET`; x86_64 the kernel half): a task pointer below
    /// it is not one.
    kernel_min: u64,
    /// KASLR: how far the kernel image was moved in physical memory (i386: `slide`).
    pub phys_slide: i64,
    /// x86_64: physical address of the kernel's top-level page table (`init_top_pgt`, the
    /// `swapper_pg_dir` every process's PGD copies its kernel half from). Kernel memory is read
    /// through it when the current page tables do not map it (a process's user-mode PGD under
    /// page-table isolation maps almost no kernel memory).
    kroot: Option<u64>,
    t_tasks: u64,
    t_pid: u64,
    t_tgid: u64,
    t_comm: u64,
    t_comm_len: usize,
    t_mm: u64,
    t_real_parent: u64,
    t_thread_group: Option<u64>,
    t_on_cpu: Option<u64>,
    t_start_time: Option<u64>,
    t_flags: Option<u64>,
    t_files: Option<u64>,
    pf_kthread: u64,
    mm_pgd: u64,
    mm_mt: Option<u64>,
    mm_start_brk: Option<u64>,
    mm_brk: Option<u64>,
    mm_start_stack: Option<u64>,
    maple: Option<MapleLayout>,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_pgoff: u64,
    vma_file: u64,
    f_path: u64,
    path_mnt: u64,
    path_dentry: u64,
    d_parent: u64,
    d_name: u64,
    qstr_len: u64,
    qstr_name: u64,
    mount: Option<MountLayout>,
    files: Option<FilesLayout>,
}

/// Offsets in `struct pt_regs` of the registers a system call uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PtRegsLayout {
    pub ax: u64,
    pub bx: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub bp: u64,
    pub ip: u64,
    pub cs: u64,
    pub sp: u64,
}

#[derive(Clone, Copy, Debug)]
struct MountLayout {
    /// `offsetof(struct mount, mnt)` (the embedded `vfsmount`).
    mnt: u64,
    mnt_parent: u64,
    mnt_mountpoint: u64,
    /// `vfsmount.mnt_root`.
    mnt_root: u64,
}

#[derive(Clone, Copy, Debug)]
struct FilesLayout {
    fdt: u64,
    fd: u64,
    max_fds: u64,
}

fn lk<T>(r: Result<T, LookupError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

impl Layout {
    pub(crate) fn new(p: &KernelProfile) -> Result<Layout, String> {
        let arch = p.arch();
        let x64 = arch == Arch::X86_64;
        let ptr = u64::from(arch.pointer_size());
        if u64::from(p.pointer_size()) != ptr {
            return Err(format!("the profile says pointer_size {} for an {arch} kernel", p.pointer_size()));
        }
        let off = |s: &str, m: &str| lk(p.offset(s, m));
        let opt = |s: &str, m: &str| p.offset(s, m).ok();
        let comm = lk(p.member("task_struct", "comm"))?;
        let page_offset = p
            .kernel
            .image_virt_to_phys
            .map(|a| a.0)
            .ok_or("kernel.image_virt_to_phys: not in the profile (needed for the kernel's direct map)")?;
        let mount = (|| {
            Some(MountLayout {
                mnt: opt("mount", "mnt")?,
                mnt_parent: opt("mount", "mnt_parent")?,
                mnt_mountpoint: opt("mount", "mnt_mountpoint")?,
                mnt_root: opt("vfsmount", "mnt_root")?,
            })
        })();
        let files = (|| {
            Some(FilesLayout {
                fdt: opt("files_struct", "fdt")?,
                fd: opt("fdtable", "fd")?,
                max_fds: opt("fdtable", "max_fds")?,
            })
        })();
        let mm_mt = opt("mm_struct", "mm_mt");
        let pt_regs = (|| {
            Some(PtRegsLayout {
                ax: opt("pt_regs", "ax")?,
                bx: opt("pt_regs", "bx")?,
                cx: opt("pt_regs", "cx")?,
                dx: opt("pt_regs", "dx")?,
                si: opt("pt_regs", "si")?,
                di: opt("pt_regs", "di")?,
                bp: opt("pt_regs", "bp")?,
                ip: opt("pt_regs", "ip")?,
                cs: opt("pt_regs", "cs")?,
                sp: opt("pt_regs", "sp")?,
            })
        })();
        let sym = |n: &str| p.symbol(n).ok();
        // The image's physical address without KASLR: virtual - image_virt_to_phys.
        let kroot = if x64 {
            sym("init_top_pgt").or_else(|| sym("swapper_pg_dir")).and_then(|a| a.checked_sub(page_offset))
        } else {
            None
        };
        let maple = match mm_mt {
            Some(_) => Some(MapleLayout::new(p)?),
            None => None,
        };
        Ok(Layout {
            arch,
            page_offset,
            slide: 0,
            init_task: lk(p.symbol("init_task"))?,
            linux_banner: lk(p.symbol("linux_banner"))?,
            per_cpu_offsets: lk(p.symbol(&p.per_cpu.offsets_symbol))?,
            current_task_sym: lk(p.symbol(&p.per_cpu.current_task_symbol))?,
            current_task_off: p.per_cpu.current_task_offset,
            entry_int80: sym(if x64 { "entry_INT80_compat" } else { "entry_INT80_32" }),
            entry_sysenter: sym(if x64 { "entry_SYSENTER_compat" } else { "entry_SYSENTER_32" }),
            entry_syscall64: if x64 { sym("entry_SYSCALL_64") } else { None },
            entry_syscall_compat: if x64 { sym("entry_SYSCALL_compat") } else { None },
            int80_emulation: if x64 { sym("int80_emulation") } else { None },
            pt_regs: if x64 { pt_regs } else { None },
            ptr,
            mask: if x64 { u64::MAX } else { 0xffff_ffff },
            kernel_min: if x64 { X86_64_KERNEL_HALF } else { page_offset },
            phys_slide: 0,
            kroot,
            t_tasks: off("task_struct", "tasks")?,
            t_pid: off("task_struct", "pid")?,
            t_tgid: off("task_struct", "tgid")?,
            t_comm: comm.offset,
            t_comm_len: comm.size.unwrap_or(16).clamp(1, 64) as usize,
            t_mm: off("task_struct", "mm")?,
            t_real_parent: off("task_struct", "real_parent")?,
            t_thread_group: opt("task_struct", "thread_group"),
            t_on_cpu: opt("task_struct", "on_cpu"),
            t_start_time: opt("task_struct", "start_time"),
            t_flags: opt("task_struct", "flags"),
            t_files: opt("task_struct", "files"),
            pf_kthread: p.constant("PF_KTHREAD").unwrap_or(0x0020_0000) as u64,
            mm_pgd: off("mm_struct", "pgd")?,
            mm_mt,
            mm_start_brk: opt("mm_struct", "start_brk"),
            mm_brk: opt("mm_struct", "brk"),
            mm_start_stack: opt("mm_struct", "start_stack"),
            maple,
            vma_start: off("vm_area_struct", "vm_start")?,
            vma_end: off("vm_area_struct", "vm_end")?,
            vma_flags: off("vm_area_struct", "vm_flags")?,
            vma_pgoff: off("vm_area_struct", "vm_pgoff")?,
            vma_file: off("vm_area_struct", "vm_file")?,
            f_path: off("file", "f_path")?,
            path_mnt: off("path", "mnt")?,
            path_dentry: off("path", "dentry")?,
            d_parent: off("dentry", "d_parent")?,
            d_name: off("dentry", "d_name")?,
            qstr_len: off("qstr", "len")?,
            qstr_name: off("qstr", "name")?,
            mount,
            files,
        })
    }

    /// This layout for a kernel image moved by `slide` (KASLR, virtual) and `phys_slide`
    /// (physical; the same on i386): every symbol inside the image moves (per-cpu offsets that
    /// are not addresses stay, see [`crate::kaslr::slides`]); structure offsets and the direct
    /// map's base do not change.
    pub(crate) fn slid(&self, slide: i64, phys_slide: i64) -> Layout {
        let base = self.page_offset;
        let mv = |a: u64| crate::kaslr::apply(self.arch, a, base, slide);
        let mut l = self.clone();
        l.slide = slide;
        l.phys_slide = phys_slide;
        l.init_task = mv(self.init_task);
        l.linux_banner = mv(self.linux_banner);
        l.per_cpu_offsets = mv(self.per_cpu_offsets);
        l.current_task_sym = mv(self.current_task_sym);
        l.entry_int80 = self.entry_int80.map(mv);
        l.entry_sysenter = self.entry_sysenter.map(mv);
        l.entry_syscall64 = self.entry_syscall64.map(mv);
        l.entry_syscall_compat = self.entry_syscall_compat.map(mv);
        l.int80_emulation = self.int80_emulation.map(mv);
        l.kroot = self.kroot.map(|pa| pa.wrapping_add(phys_slide as u64));
        l
    }

    /// Does the address space `cr3_asid` (what the CPU reports) belong to a process whose
    /// `mm->pgd` is at physical `process_asid`? The same value, or on x86_64 the user half of
    /// that PGD under page-table isolation ([`PTI_USER_PGD`]).
    pub(crate) fn same_space(&self, process_asid: u64, cr3_asid: u64) -> bool {
        process_asid == cr3_asid
            || (self.arch == Arch::X86_64
                && process_asid != 0
                && process_asid & PTI_USER_PGD == 0
                && cr3_asid == process_asid | PTI_USER_PGD)
    }
}

/// A profile osi_linux may use, with its layout.
pub(crate) struct Candidate {
    /// File name (shipped) or path (`profile=`).
    source: String,
    profile: KernelProfile,
    layout: Layout,
}

impl Candidate {
    fn from_file(path: &std::path::Path) -> Result<Candidate, String> {
        let p = KernelProfile::load(path).map_err(|e| format!("plugin osi_linux: profile={}: {e}", path.display()))?;
        Candidate::new(path.display().to_string(), p)
            .map_err(|e| format!("plugin osi_linux: profile={}: {e}", path.display()))
    }

    /// The profile's file name or path.
    #[cfg(test)]
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The profile's kernel architecture.
    #[cfg(test)]
    pub(crate) fn arch(&self) -> Arch {
        self.profile.arch()
    }

    pub(crate) fn new(source: String, profile: KernelProfile) -> Result<Candidate, String> {
        let v = profile.validate();
        if !v.is_ok() {
            return Err(format!("the profile is incomplete:\n{v}"));
        }
        let layout = Layout::new(&profile)?;
        Ok(Candidate { source, profile, layout })
    }

    /// The shipped profiles for a machine of architecture `arch` (every one when `arch` is
    /// empty, as in tests): an `x86_64` machine runs 32-bit kernels too, so it gets the i386
    /// profiles as well (after its own; the banner decides).
    pub(crate) fn embedded(arch: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        let order = |p: &KernelProfile| match (arch, p.arch()) {
            ("x86_64", Arch::X86_64) | ("i386", Arch::I386) => Some(0),
            ("x86_64", Arch::I386) | ("", _) => Some(1),
            _ => None,
        };
        let mut found: Vec<(u8, &str, KernelProfile)> = Vec::new();
        for (name, text) in embedded::EMBEDDED {
            let Ok(p) = KernelProfile::from_toml(text) else { continue };
            if let Some(rank) = order(&p) {
                found.push((rank, name, p));
            }
        }
        // Stable: by rank, then by file name (EMBEDDED is sorted by name).
        found.sort_by_key(|(rank, _, _)| *rank);
        for (_, name, p) in found {
            if let Ok(c) = Candidate::new((*name).to_string(), p) {
                out.push(c);
            }
        }
        out
    }
}

/// The decided profile.
pub(crate) struct Active {
    pub source: String,
    pub profile: KernelProfile,
    pub l: Layout,
}

enum Decided {
    Ready(Box<Active>),
    Disabled(String),
}

/// What the walkers read through: a CPU view (its page tables) and RAM, at a program point.
/// Made from a callback's [`Cx`] or, outside callbacks (the monitor), from the machine's CPU
/// view and RAM.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    cpu: Option<&'a dyn CpuView>,
    ram: Option<&'a GuestRam>,
    icount: u64,
}

impl<'a> View<'a> {
    pub(crate) fn of(cx: &Cx<'a>) -> View<'a> {
        View { cpu: cx.cpu(), ram: cx.ram(), icount: cx.icount }
    }

    fn new(cpu: &'a dyn CpuView, ram: &'a GuestRam) -> View<'a> {
        View { cpu: Some(cpu), ram: Some(ram), icount: cpu.icount() }
    }

    fn asid(&self) -> u64 {
        self.cpu.map_or(0, |c| c.asid())
    }

    fn read_phys(&self, pa: u64, buf: &mut [u8]) -> bool {
        self.ram.is_some_and(|r| r.read(pa, buf).is_ok())
    }

    /// Through the current page tables (never faults), as `Cx::read_virt`.
    fn read_virt(&self, va: u64, buf: &mut [u8]) -> bool {
        let (Some(cpu), Some(ram)) = (self.cpu, self.ram) else { return false };
        let mut done = 0usize;
        while done < buf.len() {
            let a = va.wrapping_add(done as u64);
            let n = ((4096 - (a & 0xfff)) as usize).min(buf.len() - done);
            let Some(pa) = cpu.virt_to_phys(ram, a) else { return false };
            if ram.read(pa, &mut buf[done..done + n]).is_err() {
                return false;
            }
            done += n;
        }
        true
    }
}

/// Reads kernel memory: through the current page tables; failing that on x86_64 through the
/// kernel's own top-level table ([`Layout`]'s `kroot`), on i386 through the direct map for low
/// memory (also how kernel addresses are read while paging is off).
pub(crate) struct KMem<'a> {
    v: View<'a>,
    page_offset: u64,
    paging: bool,
    kroot: Option<u64>,
    ptr: u64,
    mask: u64,
    arch: Arch,
}

impl<'a> KMem<'a> {
    pub(crate) fn new(v: &View<'a>, l: &Layout) -> Self {
        KMem {
            v: *v,
            page_offset: l.page_offset,
            paging: v.asid() != 0,
            kroot: l.kroot,
            ptr: l.ptr,
            mask: l.mask,
            arch: l.arch,
        }
    }

    pub(crate) fn read(&self, va: u64, buf: &mut [u8]) -> bool {
        if self.paging && self.v.read_virt(va, buf) {
            return true;
        }
        if let (Some(root), Some(ram)) = (self.kroot, self.v.ram) {
            if va >= X86_64_KERNEL_HALF {
                return read_walked(ram, root, va, buf);
            }
        }
        if self.arch == Arch::I386 && va >= self.page_offset {
            let pa = va - self.page_offset;
            if pa + buf.len() as u64 <= LOWMEM_MAX {
                return self.v.read_phys(pa, buf);
            }
        }
        false
    }

    /// The physical address of a kernel virtual address: through the current page tables,
    /// then (x86_64) the kernel's top-level table; on i386 the direct map (`va - PAGE_OFFSET`).
    pub(crate) fn phys(&self, va: u64) -> Option<u64> {
        match self.arch {
            Arch::I386 => Some(va.wrapping_sub(self.page_offset) & 0xffff_ffff),
            Arch::X86_64 => {
                let cur = if self.paging {
                    self.v.cpu.zip(self.v.ram).and_then(|(c, r)| c.virt_to_phys(r, va))
                } else {
                    None
                };
                cur.or_else(|| walk4(self.v.ram?, self.kroot?, va))
            }
        }
    }

    pub(crate) fn u32(&self, va: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(va, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// A pointer (`unsigned long`) of the kernel's width.
    pub(crate) fn ptr(&self, va: u64) -> Option<u64> {
        if self.ptr == 8 {
            self.u64(va)
        } else {
            self.u32(va).map(u64::from)
        }
    }

    pub(crate) fn u64(&self, va: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(va, &mut b).then(|| u64::from_le_bytes(b))
    }

    pub(crate) fn bytes(&self, va: u64, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.read(va, &mut b).then_some(b)
    }

    /// `a + b` in the kernel's address width.
    pub(crate) fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b) & self.mask
    }
}

/// x86_64 4-level page walk from the table at physical `root`, without the CPU (for kernel
/// reads the current page tables cannot do). Large pages (1 GiB, 2 MiB) are followed; a
/// non-canonical address or a missing entry is `None`. Reserved and permission bits are not
/// looked at.
pub(crate) fn walk4(ram: &GuestRam, root: u64, va: u64) -> Option<u64> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let top = (va as i64) >> 47;
    if top != 0 && top != -1 {
        return None;
    }
    let mut table = root & ADDR;
    for shift in [39u32, 30, 21, 12] {
        let e = ram.read_u64(table | (((va >> shift) & 0x1ff) << 3)).ok()?;
        if e & 1 == 0 {
            return None;
        }
        if shift == 12 || ((shift == 30 || shift == 21) && e & 0x80 != 0) {
            let size = 1u64 << shift;
            return Some((e & ADDR & !(size - 1)) | (va & (size - 1)));
        }
        table = e & ADDR;
    }
    None
}

/// Read `buf` at `va` through [`walk4`] from `root`, page by page.
fn read_walked(ram: &GuestRam, root: u64, va: u64, buf: &mut [u8]) -> bool {
    let mut done = 0usize;
    while done < buf.len() {
        let a = va.wrapping_add(done as u64);
        let n = ((4096 - (a & 0xfff)) as usize).min(buf.len() - done);
        let Some(pa) = walk4(ram, root, a) else { return false };
        if ram.read(pa, &mut buf[done..done + n]).is_err() {
            return false;
        }
        done += n;
    }
    true
}

/// Is the kernel in place, i.e. is a banner not found now a definite answer? Paging must be on
/// (the i386 kernel turns it on itself, once decompressed and in place); in long mode the CPU
/// must also have left the low, identity-mapped addresses where the boot loader, the
/// decompressor and the kernel's first instructions run with paging on (a 64-bit kernel is
/// in place once it runs in the kernel half, or once user code runs).
fn kernel_in_place(v: &View) -> bool {
    let Some(cpu) = v.cpu else { return false };
    if cpu.asid() == 0 {
        return false;
    }
    !(long_mode(cpu) && cpu.in_kernel() && cpu.pc() < X86_64_KERNEL_HALF)
}

/// Is the CPU in long mode (EFER.LMA, reported as register `efer`; or 64-bit code)?
pub(crate) fn long_mode(cpu: &dyn CpuView) -> bool {
    match cpu.reg_index("efer") {
        Some(i) => cpu.reg(i) & (1 << 10) != 0,
        None => cpu.bits() == 64,
    }
}

/// Per-callback caches (queries take `&self`).
#[derive(Default)]
struct Cache {
    /// (icount, asid) → current task.
    current: Option<(u64, u64, Option<Process>)>,
    /// (icount, asid) → process list.
    list: Option<(u64, u64, Vec<Process>)>,
}

/// The `osi_linux` plugin.
///
/// **When the profile is decided.** At `start`, at every address-space change while undecided,
/// and lazily by queries (at most once per million instructions while paging is off), every
/// candidate profile's banner is compared with guest memory at its `linux_banner` address. The
/// first that matches is used for the rest of the run. If none matches once paging is on (the
/// i386 kernel turns paging on itself, after it is decompressed and in place) or at the end of
/// the run, RAM is searched once for a profile's banner moved by KASLR ([`crate::kaslr`]); a copy
/// that passes the checks decides that profile with its slide. Failing that, introspection is
/// disabled with one message on stderr naming the kernel release found in memory (a scan of RAM
/// for `Linux version `), and a `disabled` plog record.
pub struct OsiLinux {
    candidates: Vec<Candidate>,
    banner_check: bool,
    arch: String,
    decided: OnceCell<Decided>,
    last_try: Cell<Option<u64>>,
    announced: bool,
    cache: RefCell<Cache>,
    seen: RefCell<BTreeMap<(u32, String), SeenProcess>>,
    last_switch: Option<Switch>,
    switches: u64,
    /// x86_64 page-table isolation seen: CR3 toggles [`PTI_USER_PGD`] at every kernel entry and
    /// exit, which is not an address-space change.
    pti: Cell<bool>,
}

impl OsiLinux {
    pub(crate) fn new(candidates: Vec<Candidate>, banner_check: bool, arch: &str) -> OsiLinux {
        OsiLinux {
            candidates,
            banner_check,
            arch: arch.to_string(),
            decided: OnceCell::new(),
            last_try: Cell::new(None),
            announced: false,
            cache: RefCell::new(Cache::default()),
            seen: RefCell::new(BTreeMap::new()),
            last_switch: None,
            switches: 0,
            pti: Cell::new(false),
        }
    }

    /// Where introspection stands (does not check anything).
    pub fn status(&self) -> Status {
        match self.decided.get() {
            None => Status::Pending,
            Some(Decided::Ready(a)) => {
                Status::Ready { release: a.profile.kernel.release.clone(), source: a.source.clone() }
            }
            Some(Decided::Disabled(m)) => Status::Disabled(m.clone()),
        }
    }

    /// The profile in use, once decided (checks lazily, like every query).
    pub fn profile(&self, cx: &Cx) -> Option<&KernelProfile> {
        self.active(cx).map(|a| &a.profile)
    }

    /// Decide now, outside a callback, if it is time to ([`OsiLinux::status`] then tells).
    pub fn check_with(&self, cpu: &dyn CpuView, ram: &GuestRam) -> Status {
        self.active_v(&View::new(cpu, ram));
        self.status()
    }

    /// The decided profile and layout, deciding now if it is time to.
    pub(crate) fn active(&self, cx: &Cx) -> Option<&Active> {
        self.active_v(&View::of(cx))
    }

    fn active_v(&self, v: &View) -> Option<&Active> {
        match self.decided.get() {
            Some(Decided::Ready(a)) => return Some(a),
            Some(Decided::Disabled(_)) => return None,
            None => {}
        }
        let in_place = kernel_in_place(v);
        if !in_place && self.last_try.get().is_some_and(|t| v.icount < t.saturating_add(RETRY_INSNS)) {
            return None;
        }
        self.try_decide(v, in_place)
    }

    /// Compare each candidate's banner with guest memory; decide if one matches or if `last`.
    fn try_decide(&self, v: &View, last: bool) -> Option<&Active> {
        if self.decided.get().is_some() {
            return match self.decided.get() {
                Some(Decided::Ready(a)) => Some(a),
                _ => None,
            };
        }
        self.last_try.set(Some(v.icount));
        if self.candidates.is_empty() {
            let arch = if self.arch.is_empty() { "this" } else { self.arch.as_str() };
            let msg = format!(
                "no kernel profile for {arch} guests is available (osi_linux reads i386 and x86_64 \
                 guests); Linux introspection is disabled, the replay continues. See docs/KERNEL-PROFILES.md."
            );
            return self.disable(msg);
        }
        let mut found = Vec::new();
        for (i, c) in self.candidates.iter().enumerate() {
            if !self.banner_check {
                return self.ready(i, c.layout.clone());
            }
            let want = c.profile.kernel.banner.len() + 1;
            let m = KMem::new(v, &c.layout);
            let bytes = m.bytes(c.layout.linux_banner, want).or_else(|| m.bytes(c.layout.linux_banner, want - 1));
            match bytes.map(|b| c.profile.check_banner(&b)) {
                Some(BannerCheck::Match) => return self.ready(i, c.layout.clone()),
                Some(other) => found.push(other),
                None => {}
            }
        }
        // Another kernel's banner at a profile's address is a definite answer; otherwise wait
        // until paging is on (the kernel is in place by then) or the run ends.
        let at_address = found.iter().find_map(|c| match c {
            BannerCheck::Mismatch { found_release: Some(r), found, .. } => Some((r.clone(), found.clone())),
            _ => None,
        });
        if !last && at_address.is_none() {
            return None;
        }
        // Not at the link-time address: a kernel moved by KASLR? Searched only now (paging on:
        // the kernel is decompressed and in place; or a definite answer is due), once.
        for (i, c) in self.candidates.iter().enumerate() {
            if let Some(moved) = find_moved(v, c) {
                return self.ready(i, moved);
            }
        }
        let in_ram = at_address.or_else(|| find_banner_in_ram(v));
        let avail: Vec<String> =
            self.candidates.iter().map(|c| format!("{} ({})", c.profile.kernel.release, c.source)).collect();
        let what = if avail.len() == 1 { "the profile is for" } else { "the profiles available are for" };
        let msg = match in_ram {
            Some((release, banner)) => format!(
                "the guest runs Linux {release} (banner {banner:?}) but {what} {}: Linux introspection \
                 (processes, memory maps, pid/comm of system calls) is disabled; the replay continues. \
                 Derive a profile for this kernel from its debug package and pass it with \
                 -panda osi_linux:profile=FILE (docs/KERNEL-PROFILES.md). If that release is the \
                 profile's, its banner is neither at the profile's address nor where KASLR could \
                 have moved it: the profile comes from another build of that release.",
                avail.join(", ")
            ),
            None => format!(
                "no Linux kernel banner (\"Linux version ...\") found in guest memory, and none at the \
                 linux_banner address of {} (nor at any address KASLR could have moved it to): this is \
                 not a Linux guest or the kernel is not loaded yet. Linux introspection is disabled; \
                 the replay continues. Profiles: docs/KERNEL-PROFILES.md.",
                avail.join(", ")
            ),
        };
        self.disable(msg)
    }

    /// Decide for candidate `i` with `l`, its layout as found in memory (moved by KASLR or not).
    fn ready(&self, i: usize, l: Layout) -> Option<&Active> {
        let c = &self.candidates[i];
        let a = Active { source: c.source.clone(), profile: c.profile.clone(), l };
        let _ = self.decided.set(Decided::Ready(Box::new(a)));
        match self.decided.get() {
            Some(Decided::Ready(a)) => Some(a),
            _ => None,
        }
    }

    fn disable(&self, msg: String) -> Option<&Active> {
        // Never panic on a full or closed stderr (eprintln! would).
        let _ = std::io::Write::write_fmt(&mut std::io::stderr().lock(), format_args!("osi_linux: {msg}\n"));
        let _ = self.decided.set(Decided::Disabled(msg));
        None
    }

    /// Write the `profile`/`disabled` record once a decision was made (needs `&mut Cx`).
    fn announce(&mut self, cx: &mut Cx) {
        if self.announced {
            return;
        }
        match self.decided.get() {
            Some(Decided::Ready(a)) => {
                let (release, source, slide) = (a.profile.kernel.release.clone(), a.source.clone(), a.l.slide);
                cx.log("osi_linux", "profile", |r| {
                    r.field("release", release.as_str()).field("source", source.as_str()).field("kaslr_slide", slide)
                });
            }
            Some(Decided::Disabled(m)) => {
                let m = m.clone();
                cx.log("osi_linux", "disabled", |r| r.field("message", m.as_str()));
            }
            None => return,
        }
        self.announced = true;
    }

    /// Is the CR3 change `old` → `new` page-table isolation switching between the kernel and
    /// the user half of the running process's PGD (x86_64), rather than an address-space
    /// change? Decided the first time from the running task (its PGD must be the kernel half),
    /// then by the values alone (with PTI configured, every PGD is 8 KiB aligned, so two
    /// processes' PGDs never differ only in that bit).
    fn is_pti_toggle(&self, cx: &Cx, old: u64, new: u64) -> bool {
        if old ^ new != PTI_USER_PGD {
            return false;
        }
        if self.pti.get() {
            return true;
        }
        let v = View::of(cx);
        let Some(a) = self.active_v(&v) else { return false };
        if a.l.arch != Arch::X86_64 {
            return false;
        }
        let m = KMem::new(&v, &a.l);
        let kernel_half = old.min(new);
        let runs = current_task(&a.l, &m).and_then(|t| read_task(&a.l, &m, t)).is_some_and(|c| c.asid == kernel_half);
        if runs {
            self.pti.set(true);
        }
        runs
    }

    // ----- the typed API -----

    /// Are the address-space identifiers `a` and `b` (as the CPU reports them) the same address
    /// space? Equal, or (x86_64 with page-table isolation, once seen) the kernel and user half
    /// of one process's PGD.
    pub fn same_address_space(&self, a: u64, b: u64) -> bool {
        a == b || (self.pti.get() && a ^ b == PTI_USER_PGD)
    }

    /// Is `asid` (what the CPU reports, e.g. `cx.asid()`) the address space of a process whose
    /// [`Process::asid`] is `process_asid`? Equal, or on x86_64 the user half of its PGD under
    /// page-table isolation.
    pub fn asid_matches(&self, process_asid: u64, asid: u64) -> bool {
        match self.decided.get() {
            Some(Decided::Ready(a)) => a.l.same_space(process_asid, asid),
            _ => process_asid == asid,
        }
    }

    /// Has page-table isolation (x86_64) been seen in this run?
    pub fn pti_seen(&self) -> bool {
        self.pti.get()
    }

    /// KASLR: how far the kernel image was moved in physical memory, once the profile is
    /// decided (on i386 the same as [`OsiLinux::kaslr_slide`]; on x86_64 independent of it).
    pub fn kaslr_phys_slide(&self) -> Option<i64> {
        match self.decided.get() {
            Some(Decided::Ready(a)) => Some(a.l.phys_slide),
            _ => None,
        }
    }

    /// KASLR: how far the guest's kernel image is from the profile's link-time addresses (bytes,
    /// virtual; 0 for a kernel at its link address), once the profile is decided. Every address
    /// the queries use already includes it.
    pub fn kaslr_slide(&self) -> Option<i64> {
        match self.decided.get() {
            Some(Decided::Ready(a)) => Some(a.l.slide),
            _ => None,
        }
    }

    /// `info processes`: [`format_process_list`] of [`OsiLinux::processes_with`], preceded by a
    /// line with the KASLR slide when the kernel was moved; a one-line explanation when there is
    /// no process list (kernel not up yet, or introspection disabled).
    pub fn process_listing_with(&self, cpu: &dyn CpuView, ram: &GuestRam) -> String {
        let list = self.processes_with(cpu, ram);
        if list.is_empty() {
            return format!(
                "no process list at instruction {} (kernel not up yet, or no usable kernel profile: {:?})\n",
                cpu.icount(),
                self.status()
            );
        }
        let mut s = String::new();
        if let Some(slide) = self.kaslr_slide().filter(|&s| s != 0) {
            let _ = write!(s, "kernel moved by KASLR: slide {}", crate::kaslr::format_slide(slide));
            match self.kaslr_phys_slide() {
                Some(p) if p != slide => {
                    let _ = writeln!(s, " (physical {})", crate::kaslr::format_slide(p));
                }
                _ => s.push('\n'),
            }
        }
        s.push_str(&format_process_list(&list));
        s
    }

    /// Address of the running task's `task_struct` (CPU 0's per-cpu `current_task`).
    pub fn current_task_addr(&self, cx: &Cx) -> Option<u64> {
        let v = View::of(cx);
        let a = self.active_v(&v)?;
        current_task(&a.l, &KMem::new(&v, &a.l))
    }

    /// The running task. Cached per (icount, asid).
    pub fn current_process(&self, cx: &Cx) -> Option<Process> {
        self.current_process_v(&View::of(cx))
    }

    /// [`OsiLinux::current_process`] outside a callback (e.g. for the monitor), from the
    /// machine's CPU view and RAM.
    pub fn current_process_with(&self, cpu: &dyn CpuView, ram: &GuestRam) -> Option<Process> {
        self.current_process_v(&View::new(cpu, ram))
    }

    fn current_process_v(&self, v: &View) -> Option<Process> {
        let asid = v.asid();
        if let Some((i, a, p)) = &self.cache.borrow().current {
            if *i == v.icount && *a == asid {
                return p.clone();
            }
        }
        let a = self.active_v(v)?;
        let m = KMem::new(v, &a.l);
        let p = current_task(&a.l, &m).and_then(|t| read_task(&a.l, &m, t));
        if let Some(p) = &p {
            self.note_seen(p, v.icount);
        }
        self.cache.borrow_mut().current = Some((v.icount, asid, p.clone()));
        p
    }

    /// Every process (thread-group leader) on `init_task.tasks`, the idle task (pid 0) first.
    /// Cached per (icount, asid).
    pub fn processes(&self, cx: &Cx) -> Vec<Process> {
        self.processes_v(&View::of(cx))
    }

    /// [`OsiLinux::processes`] outside a callback (e.g. `info processes` on the monitor:
    /// `format_process_list(&osi.processes_with(&cpu.observer_view(), ram))`).
    pub fn processes_with(&self, cpu: &dyn CpuView, ram: &GuestRam) -> Vec<Process> {
        self.processes_v(&View::new(cpu, ram))
    }

    fn processes_v(&self, v: &View) -> Vec<Process> {
        let asid = v.asid();
        if let Some((i, a, list)) = &self.cache.borrow().list {
            if *i == v.icount && *a == asid {
                return list.clone();
            }
        }
        let Some(a) = self.active_v(v) else { return Vec::new() };
        let m = KMem::new(v, &a.l);
        let list: Vec<Process> = leaders(&a.l, &m).into_iter().filter_map(|t| read_task(&a.l, &m, t)).collect();
        self.cache.borrow_mut().list = Some((v.icount, asid, list.clone()));
        list
    }

    /// The threads of `process`'s thread group (the leader first); just the task itself when the
    /// profile has no `task_struct.thread_group`.
    pub fn threads(&self, cx: &Cx, process: &Process) -> Vec<Process> {
        let v = View::of(cx);
        let Some(a) = self.active_v(&v) else { return Vec::new() };
        let m = KMem::new(&v, &a.l);
        threads_of(&a.l, &m, process.task).into_iter().filter_map(|t| read_task(&a.l, &m, t)).collect()
    }

    /// Every task: each process's threads, in process-list order.
    pub fn tasks(&self, cx: &Cx) -> Vec<Process> {
        self.tasks_v(&View::of(cx))
    }

    /// [`OsiLinux::tasks`] outside a callback.
    pub fn tasks_with(&self, cpu: &dyn CpuView, ram: &GuestRam) -> Vec<Process> {
        self.tasks_v(&View::new(cpu, ram))
    }

    fn tasks_v(&self, v: &View) -> Vec<Process> {
        let Some(a) = self.active_v(v) else { return Vec::new() };
        let m = KMem::new(v, &a.l);
        all_tasks(&a.l, &m).into_iter().filter_map(|t| read_task(&a.l, &m, t)).collect()
    }

    /// The memory map of `process` (empty for kernel threads), in address order, walking its
    /// `mm_struct.mm_mt` maple tree.
    pub fn mappings(&self, cx: &Cx, process: &Process) -> Vec<Mapping> {
        self.mappings_v(&View::of(cx), process)
    }

    /// [`OsiLinux::mappings`] outside a callback.
    pub fn mappings_with(&self, cpu: &dyn CpuView, ram: &GuestRam, process: &Process) -> Vec<Mapping> {
        self.mappings_v(&View::new(cpu, ram), process)
    }

    fn mappings_v(&self, v: &View, process: &Process) -> Vec<Mapping> {
        let Some(a) = self.active_v(v) else { return Vec::new() };
        let l = &a.l;
        let m = KMem::new(v, l);
        let (Some(mt), Some(maple)) = (l.mm_mt, l.maple.as_ref()) else { return Vec::new() };
        let Some(mm) = m.ptr(m.add(process.task, l.t_mm)).filter(|&mm| mm != 0) else { return Vec::new() };
        let Some(root) = m.ptr(m.add(mm, mt + maple.root)) else { return Vec::new() };
        let read = |va: u64, buf: &mut [u8]| m.read(va, buf);
        let entries = maple.entries(root, &read);
        let field = |o: Option<u64>| o.and_then(|o| m.ptr(m.add(mm, o)));
        let (start_brk, brk, start_stack) = (field(l.mm_start_brk), field(l.mm_brk), field(l.mm_start_stack));
        let mut out = Vec::with_capacity(entries.len());
        for (_, _, vma) in entries {
            let (Some(start), Some(end)) = (m.ptr(m.add(vma, l.vma_start)), m.ptr(m.add(vma, l.vma_end))) else {
                continue;
            };
            if start >= end {
                continue;
            }
            let file_ptr = m.ptr(m.add(vma, l.vma_file)).unwrap_or(0);
            let file = (file_ptr != 0).then(|| file_path(l, &m, file_ptr)).flatten();
            let special = if file_ptr != 0 {
                None
            } else if start_stack.is_some_and(|s| start <= s && end >= s) {
                Some("[stack]")
            } else if let (Some(sb), Some(b)) = (start_brk, brk) {
                (start <= b && end >= sb && b > sb).then_some("[heap]")
            } else {
                None
            };
            out.push(Mapping {
                start,
                end,
                flags: m.ptr(m.add(vma, l.vma_flags)).unwrap_or(0),
                pgoff: m.ptr(m.add(vma, l.vma_pgoff)).unwrap_or(0),
                file,
                special,
            });
        }
        out
    }

    /// The path of the file open as `fd` in `task` (a `task_struct` address), from the kernel's
    /// file table (`files->fdt->fd[fd]`).
    pub fn fd_path(&self, cx: &Cx, task: u64, fd: u32) -> Option<String> {
        let v = View::of(cx);
        let a = self.active_v(&v)?;
        let l = &a.l;
        let fl = l.files?;
        let m = KMem::new(&v, l);
        let files = m.ptr(m.add(task, l.t_files?)).filter(|&f| f != 0)?;
        let fdt = m.ptr(m.add(files, fl.fdt)).filter(|&f| f != 0)?;
        if fd >= m.u32(m.add(fdt, fl.max_fds))? {
            return None;
        }
        let arr = m.ptr(m.add(fdt, fl.fd)).filter(|&f| f != 0)?;
        let file = m.ptr(m.add(arr, l.ptr * u64::from(fd))).filter(|&f| f != 0)?;
        file_path(l, &m, file)
    }

    /// The path of a `struct file` (kernel address).
    pub fn file_path(&self, cx: &Cx, file: u64) -> Option<String> {
        let v = View::of(cx);
        let a = self.active_v(&v)?;
        file_path(&a.l, &KMem::new(&v, &a.l), file)
    }

    /// The last address-space change and the task it switched to.
    pub fn last_switch(&self) -> Option<&Switch> {
        self.last_switch.as_ref()
    }

    /// Number of address-space changes seen.
    pub fn switch_count(&self) -> u64 {
        self.switches
    }

    /// Every process seen running (at switches and by queries), sorted by first sighting.
    pub fn seen_processes(&self) -> Vec<SeenProcess> {
        let mut v: Vec<SeenProcess> = self.seen.borrow().values().cloned().collect();
        v.sort_by(|a, b| (a.first_icount, a.pid, &a.comm).cmp(&(b.first_icount, b.pid, &b.comm)));
        v
    }

    fn note_seen(&self, p: &Process, icount: u64) {
        let mut seen = self.seen.borrow_mut();
        let e = seen.entry((p.pid, p.comm.clone())).or_insert_with(|| SeenProcess {
            pid: p.pid,
            tgid: p.tgid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            asid: p.asid,
            kernel_thread: p.kernel_thread,
            first_icount: icount,
            last_icount: icount,
        });
        e.last_icount = e.last_icount.max(icount);
        e.first_icount = e.first_icount.min(icount);
        e.asid = p.asid;
        e.ppid = p.ppid;
    }

    /// Which task runs in `new_asid` right after a CR3 write. The per-cpu `current_task` is
    /// updated only later (in `switch_to`, after `switch_mm`), so: the current task if its `mm`
    /// is the new address space (exec, or a later write), else a task with that address space
    /// that is `on_cpu` (the scheduler marks the next task before switching mm), else any task
    /// with that address space (the lowest pid), else the current task if it has no address
    /// space of its own (a kernel thread, or a process exiting: the kernel's `swapper_pg_dir`
    /// is loaded). Returns (next task, current task).
    fn resolve_switch(&self, cx: &Cx, new_asid: u64) -> (Option<Process>, Option<Process>) {
        let v = View::of(cx);
        let Some(a) = self.active_v(&v) else { return (None, None) };
        let l = &a.l;
        let m = KMem::new(&v, l);
        let cur = current_task(l, &m).and_then(|t| read_task(l, &m, t));
        if let Some(c) = &cur {
            if l.same_space(c.asid, new_asid) {
                return (cur.clone(), cur);
            }
        }
        // Best: the exact address space (over PTI's user half of one), on_cpu, lowest pid.
        let mut best: Option<((bool, bool), Process)> = None;
        for t in all_tasks(l, &m) {
            if cur.as_ref().is_some_and(|c| c.task == t) {
                continue;
            }
            let Some(mm) = m.ptr(m.add(t, l.t_mm)).filter(|&mm| mm != 0) else { continue };
            let Some(asid) = m.ptr(m.add(mm, l.mm_pgd)).and_then(|pgd| m.phys(pgd)) else { continue };
            if !l.same_space(asid, new_asid) {
                continue;
            }
            let on_cpu = l.t_on_cpu.and_then(|o| m.u32(m.add(t, o))).is_some_and(|v| v != 0);
            let rank = (asid == new_asid, on_cpu);
            let Some(p) = read_task(l, &m, t) else { continue };
            let better = match &best {
                None => true,
                Some((b_rank, b)) => rank > *b_rank || (rank == *b_rank && p.pid < b.pid),
            };
            if better {
                best = Some((rank, p));
            }
        }
        let next = best.map(|(_, p)| p).or_else(|| cur.clone().filter(|c| c.mm == 0));
        (next, cur)
    }
}

/// The running task: `*(current_task + per-cpu base + offset)`. The per-cpu base is CPU 0's
/// `__per_cpu_offset[0]` on i386. On x86_64 it is the running CPU's GS base in the kernel
/// (zero-based per-cpu area: GS.base is the base itself): GS.base while it holds a kernel
/// address, else IA32_KERNEL_GS_BASE (user mode, and kernel entry code before its SWAPGS, keep
/// the user's GS base there; user space cannot set a kernel address as its base), else
/// `__per_cpu_offset[0]` (a CPU view without those registers).
fn current_task(l: &Layout, m: &KMem) -> Option<u64> {
    let base = per_cpu_base(l, m)?;
    let slot = m.add(m.add(l.current_task_sym, base), l.current_task_off);
    m.ptr(slot).filter(|&t| t >= l.kernel_min)
}

/// See [`current_task`].
fn per_cpu_base(l: &Layout, m: &KMem) -> Option<u64> {
    if l.arch == Arch::X86_64 {
        if let Some(cpu) = m.v.cpu {
            for name in ["gs_base", "kernel_gs_base"] {
                if let Some(b) = cpu.reg_index(name).map(|i| cpu.reg(i)).filter(|&b| b >= X86_64_KERNEL_HALF) {
                    return Some(b);
                }
            }
        }
    }
    m.ptr(l.per_cpu_offsets)
}

/// Read one task; `None` if unreadable or implausible.
pub(crate) fn read_task(l: &Layout, m: &KMem, task: u64) -> Option<Process> {
    let pid = m.u32(m.add(task, l.t_pid))?;
    let tgid = m.u32(m.add(task, l.t_tgid))?;
    // PID_MAX_LIMIT is 4M: anything above means this is not a task.
    if pid > 4 * 1024 * 1024 || tgid > 4 * 1024 * 1024 {
        return None;
    }
    let raw = m.bytes(m.add(task, l.t_comm), l.t_comm_len)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let comm = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mm = m.ptr(m.add(task, l.t_mm))?;
    let parent = m.ptr(m.add(task, l.t_real_parent)).unwrap_or(0);
    let ppid = if parent != 0 && parent != task { m.u32(m.add(parent, l.t_tgid)).unwrap_or(0) } else { 0 };
    let asid = if mm != 0 { m.ptr(m.add(mm, l.mm_pgd)).and_then(|pgd| m.phys(pgd)).unwrap_or(0) } else { 0 };
    let flags = l.t_flags.and_then(|o| m.u32(m.add(task, o))).map(u64::from);
    Some(Process {
        task,
        pid,
        tgid,
        ppid,
        comm,
        asid,
        mm,
        start_time: l.t_start_time.and_then(|o| m.u64(m.add(task, o))).unwrap_or(0),
        kernel_thread: match flags {
            Some(f) => f & l.pf_kthread != 0,
            None => mm == 0,
        },
    })
}

/// Walk a circular `list_head` list starting at `head` (not itself an element), returning the
/// addresses of the containing structs (`node - member_offset`).
fn walk_list(m: &KMem, head: u64, member: u64, limit: usize) -> Vec<u64> {
    let mask = m.mask;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cur = match m.ptr(head) {
        Some(c) => c,
        None => return out,
    };
    while cur != head && cur != 0 && out.len() < limit && seen.insert(cur) {
        out.push(cur.wrapping_sub(member) & mask);
        match m.ptr(cur) {
            Some(n) => cur = n,
            None => break,
        }
    }
    out
}

/// `init_task` and every thread-group leader on its `tasks` list.
fn leaders(l: &Layout, m: &KMem) -> Vec<u64> {
    let mut v = vec![l.init_task];
    v.extend(walk_list(m, m.add(l.init_task, l.t_tasks), l.t_tasks, MAX_TASKS));
    v
}

/// `leader` and the other threads of its group.
fn threads_of(l: &Layout, m: &KMem, leader: u64) -> Vec<u64> {
    let mut v = vec![leader];
    if let Some(tg) = l.t_thread_group {
        v.extend(walk_list(m, m.add(leader, tg), tg, MAX_TASKS));
    }
    v
}

/// Every task (threads included).
fn all_tasks(l: &Layout, m: &KMem) -> Vec<u64> {
    let mut out = Vec::new();
    for t in leaders(l, m) {
        out.extend(threads_of(l, m, t));
        if out.len() > MAX_TASKS {
            break;
        }
    }
    out
}

/// The path of a `struct file`: its dentry's names up `d_parent`, crossing mount points
/// (`mount.mnt_mountpoint`/`mnt_parent`) up to the root of the mount tree. `None` for pipes,
/// sockets and other files of internal file systems (their dentries are roots of their own).
fn file_path(l: &Layout, m: &KMem, file: u64) -> Option<String> {
    let mut vfsmnt = m.ptr(m.add(file, l.f_path + l.path_mnt))?;
    let mut d = m.ptr(m.add(file, l.f_path + l.path_dentry)).filter(|&d| d != 0)?;
    let mut parts: Vec<String> = Vec::new();
    for _ in 0..MAX_PATH_DEPTH {
        let parent = m.ptr(m.add(d, l.d_parent))?;
        let mnt_root = match (l.mount, vfsmnt) {
            (Some(ml), v) if v != 0 => m.ptr(m.add(v, ml.mnt_root)),
            _ => None,
        };
        if Some(d) == mnt_root || parent == d || parent == 0 {
            if let (Some(ml), true) = (l.mount, Some(d) == mnt_root) {
                let mount = vfsmnt.wrapping_sub(ml.mnt);
                let up = m.ptr(m.add(mount, ml.mnt_parent)).unwrap_or(mount);
                if up != mount && up != 0 {
                    d = m.ptr(m.add(mount, ml.mnt_mountpoint)).filter(|&d| d != 0)?;
                    vfsmnt = m.add(up, ml.mnt);
                    continue;
                }
            }
            // A root dentry that is not its mount's root: a pseudo file (pipe, socket, anon
            // inode: the kernel makes their names up in d_dname) or a disconnected one.
            if mnt_root.is_some() && Some(d) != mnt_root {
                return None;
            }
            break;
        }
        let len = m.u32(m.add(d, l.d_name + l.qstr_len))? as usize;
        let name_ptr = m.ptr(m.add(d, l.d_name + l.qstr_name))?;
        let name = m.bytes(name_ptr, len.min(MAX_NAME))?;
        parts.push(String::from_utf8_lossy(&name).into_owned());
        d = parent;
    }
    let mut s = String::new();
    for p in parts.iter().rev() {
        s.push('/');
        s.push_str(p);
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(s)
}

/// KASLR: `c`'s layout moved to where its kernel is, if the profile's banner is in RAM at a
/// slid address (see [`crate::kaslr`]) that reads back through the slid `linux_banner` (the page
/// tables agree) and the slid `init_task` is the idle task (pid 0, `comm` "swapper...": zeroed
/// memory or a stray copy of the banner does not pass).
fn find_moved(v: &View, c: &Candidate) -> Option<Layout> {
    let ram = v.ram?;
    let l = &c.layout;
    // Without KASLR the image is at physical = virtual - image_virt_to_phys.
    let link_pa = l.linux_banner.checked_sub(l.page_offset)?;
    let banner = c.profile.kernel.banner.as_bytes();
    for pa in crate::kaslr::banner_copies(ram.as_slice(), ram.base(), banner, link_pa) {
        let phys_slide = crate::kaslr::signed(l.arch, pa.wrapping_sub(link_pa));
        // x86_64: the kernel's own top-level table moved with the image; it maps the image
        // also when the current page tables do not (a user-mode PGD under PTI).
        let kroot = l.kroot.map(|r| r.wrapping_add(phys_slide as u64));
        let translate = |va: u64| {
            let paging = v.asid() != 0;
            v.cpu.filter(|_| paging).and_then(|cpu| cpu.virt_to_phys(ram, va)).or_else(|| walk4(ram, kroot?, va))
        };
        let Some(slide) = crate::kaslr::virt_slide(l.arch, l.linux_banner, link_pa, pa, translate) else { continue };
        let moved = l.slid(slide, phys_slide);
        let m = KMem::new(v, &moved);
        let reads_back =
            m.bytes(moved.linux_banner, banner.len() + 1).is_some_and(|b| c.profile.check_banner(&b).is_match());
        let idle = read_task(&moved, &m, moved.init_task)
            .is_some_and(|t| t.pid == 0 && t.tgid == 0 && t.comm.starts_with("swapper"));
        if reads_back && idle {
            return Some(moved);
        }
    }
    None
}

/// Find a `Linux version RELEASE ...` banner anywhere in RAM (the kernel's `linux_banner`, or its
/// copy in the printk buffer): (release, banner line).
fn find_banner_in_ram(v: &View) -> Option<(String, String)> {
    let ram = v.ram?.as_slice();
    let pat = b"Linux version ";
    let mut i = 0;
    while i + pat.len() < ram.len() {
        let Some(off) = ram[i..].iter().position(|&b| b == b'L') else { break };
        let at = i + off;
        if ram[at..].starts_with(pat) {
            let end = ram[at..].iter().take(512).position(|&b| b == 0 || b == b'\n').map_or(at + 512, |e| at + e);
            let line = &ram[at..end.min(ram.len())];
            if let Some(r) = ailuro_kprofile::banner_release(line) {
                if line.contains(&b'(') && r.chars().all(|c| c.is_ascii_graphic()) {
                    return Some((r, String::from_utf8_lossy(line).into_owned()));
                }
            }
        }
        i = at + 1;
    }
    None
}

/// `info processes`-style text: one line per task, sorted by process id then thread id.
pub fn format_process_list(list: &[Process]) -> String {
    let mut v: Vec<&Process> = list.iter().collect();
    v.sort_by_key(|p| (p.tgid, p.pid, p.task));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:>6} {:>6}  {:<18} {:<10} {:<10} {:>10}",
        "PID", "TID", "PPID", "COMM", "ASID", "TASK", "STARTED"
    );
    for p in v {
        let asid = if p.asid == 0 { "-".to_string() } else { format!("{:#x}", p.asid) };
        let _ = writeln!(
            s,
            "{:>6} {:>6} {:>6}  {:<18} {:<10} {:<10} {:>9.3}s",
            p.tgid,
            p.pid,
            p.ppid,
            p.display_name(),
            asid,
            format!("{:#x}", p.task),
            p.start_time as f64 / 1e9
        );
    }
    s
}

impl Plugin for OsiLinux {
    fn name(&self) -> &'static str {
        "osi_linux"
    }

    fn hooks(&self) -> u32 {
        match self.decided.get() {
            Some(Decided::Disabled(_)) => 0,
            _ => hook::ASID_CHANGE,
        }
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        let v = View::of(cx);
        if let Some(a) = self.try_decide(&v, kernel_in_place(&v)) {
            let m = KMem::new(&v, &a.l);
            if let Some(p) = current_task(&a.l, &m).and_then(|t| read_task(&a.l, &m, t)) {
                self.note_seen(&p, cx.icount);
            }
        }
        self.announce(cx);
        Ok(())
    }

    fn asid_change(&mut self, cx: &mut Cx, old: u64, new: u64) {
        if self.decided.get().is_none() {
            let v = View::of(cx);
            self.try_decide(&v, kernel_in_place(&v));
        }
        self.announce(cx);
        if self.is_pti_toggle(cx, old, new) {
            return;
        }
        self.switches += 1;
        let (process, previous) = self.resolve_switch(cx, new);
        if let Some(p) = &previous {
            self.note_seen(p, cx.icount);
        }
        if let Some(p) = &process {
            self.note_seen(p, cx.icount);
            if cx.has_plog() {
                let (pid, tid, comm) = (p.tgid, p.pid, p.comm.clone());
                cx.log("osi_linux", "switch", |r| {
                    r.field("pid", u64::from(pid))
                        .field("tid", u64::from(tid))
                        .field("comm", comm.as_str())
                        .field("old_asid", old)
                });
            }
        }
        self.last_switch = Some(Switch { icount: cx.icount, old_asid: old, new_asid: new, process, previous });
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        if self.decided.get().is_none() {
            self.try_decide(&View::of(cx), true);
        }
        self.announce(cx);
        Ok(match self.decided.get() {
            Some(Decided::Ready(a)) => Some(format!(
                "osi_linux: Linux {} (profile {}{}): {} processes seen, {} address-space switches",
                a.profile.kernel.release,
                a.source,
                match a.l.slide {
                    0 => String::new(),
                    s => format!(", KASLR slide {}", crate::kaslr::format_slide(s)),
                },
                self.seen.borrow().len(),
                self.switches
            )),
            _ => None,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The text of a shipped profile (by file name).
pub fn shipped_profile_text(name: &str) -> Option<&'static str> {
    embedded::EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}
