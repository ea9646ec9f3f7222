//! What a profile holds: the symbols, structs, members, enums and constants that the process,
//! module, memory-map and file walkers need. `derive` records everything listed here that the
//! kernel has; `validate` reports what is missing.
//!
//! A *group* lists names of which at least one must exist (members and symbols that were renamed
//! or replaced between kernel lines, e.g. `mm_struct.mm_mt` (6.1+) vs `mm_struct.mmap` (older)).
//! Every name of a group that exists is recorded.

use crate::profile::Arch;

/// Whether the runtime cannot do without an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Missing: an error (the runtime cannot do its job).
    Required,
    /// Missing: a warning (a feature of the runtime degrades).
    Optional,
    /// Recorded when the kernel has it, never reported when it does not: names of other kernel
    /// lines (`vm_next` before 6.1, `pcpu_hot` from 6.2) and alternatives of a present item.
    IfPresent,
}

/// At least one of `names` (if `need` is `Required`).
#[derive(Clone, Debug)]
pub struct Group {
    pub names: Vec<&'static str>,
    pub need: Need,
}

fn req(name: &'static str) -> Group {
    Group { names: vec![name], need: Need::Required }
}

fn opt(name: &'static str) -> Group {
    Group { names: vec![name], need: Need::Optional }
}

fn any(names: &[&'static str]) -> Group {
    Group { names: names.to_vec(), need: Need::Required }
}

fn ifp(names: &[&'static str]) -> Vec<Group> {
    names.iter().map(|n| Group { names: vec![n], need: Need::IfPresent }).collect()
}

fn reqs(names: &[&'static str]) -> Vec<Group> {
    names.iter().map(|n| req(n)).collect()
}

fn opts(names: &[&'static str]) -> Vec<Group> {
    names.iter().map(|n| opt(n)).collect()
}

/// One struct and the members to record.
#[derive(Clone, Debug)]
pub struct StructSpec {
    pub name: &'static str,
    pub need: Need,
    pub groups: Vec<Group>,
}

fn st(name: &'static str, need: Need, groups: Vec<Vec<Group>>) -> StructSpec {
    StructSpec { name, need, groups: groups.into_iter().flatten().collect() }
}

/// The symbols to record, as groups.
pub fn symbol_groups(arch: Arch) -> Vec<Group> {
    let mut g = reqs(&["init_task", "linux_banner", "__per_cpu_offset", "sys_call_table", "modules"]);
    g.push(any(&["current_task", "pcpu_hot"]));
    g.push(any(&["swapper_pg_dir", "init_top_pgt"]));
    g.extend(opts(&[
        "init_mm",
        "init_uts_ns",
        "nr_cpu_ids",
        "__per_cpu_start",
        "__per_cpu_end",
        "_text",
        "_stext",
        "_etext",
        "_end",
    ]));
    g.extend(ifp(&["ia32_sys_call_table", "ia32_sys_call"]));
    match arch {
        Arch::I386 => {
            g.extend(reqs(&["entry_INT80_32", "entry_SYSENTER_32", "do_int80_syscall_32", "do_fast_syscall_32"]));
        }
        Arch::X86_64 => {
            g.extend(reqs(&["entry_SYSCALL_64", "do_syscall_64"]));
            g.extend(opts(&[
                "entry_SYSCALL_compat",
                "entry_SYSENTER_compat",
                "do_fast_syscall_32",
                "page_offset_base",
                "vmalloc_base",
                "vmemmap_base",
                "phys_base",
            ]));
            // the int $0x80 entry was reworked in 6.1 stable (int80_emulation); syscall
            // dispatch became a switch (x64_sys_call, ...) with the 2024 BHI fixes
            g.push(Group { names: vec!["entry_INT80_compat", "int80_emulation"], need: Need::Optional });
            g.extend(ifp(&[
                "entry_INT80_compat",
                "int80_emulation",
                "do_int80_syscall_32",
                "x64_sys_call",
                "x32_sys_call",
            ]));
        }
    }
    g
}

/// The structs to record.
pub fn struct_specs(arch: Arch) -> Vec<StructSpec> {
    use Need::{Optional as O, Required as R};
    let mut v = vec![
        st(
            "task_struct",
            R,
            vec![
                reqs(&[
                    "tasks",
                    "pid",
                    "tgid",
                    "comm",
                    "mm",
                    "active_mm",
                    "real_parent",
                    "parent",
                    "group_leader",
                    "children",
                    "sibling",
                    "start_time",
                    "files",
                    "flags",
                    "cred",
                    "exit_state",
                    "stack",
                    "thread",
                ]),
                vec![any(&["thread_group", "signal"])],
                opts(&["real_cred", "exit_code", "fs", "utime", "stime"]),
                vec![
                    Group { names: vec!["__state", "state"], need: Need::Optional },
                    Group { names: vec!["start_boottime", "real_start_time"], need: Need::Optional },
                ],
                ifp(&[
                    "thread_group",
                    "signal",
                    "thread_node",
                    "__state",
                    "state",
                    "start_boottime",
                    "real_start_time",
                    "thread_info",
                    "cpu",
                    "on_cpu",
                ]),
            ],
        ),
        st(
            "mm_struct",
            R,
            vec![
                reqs(&[
                    "pgd",
                    "start_code",
                    "end_code",
                    "start_brk",
                    "brk",
                    "start_stack",
                    "arg_start",
                    "arg_end",
                    "env_start",
                    "env_end",
                    "exe_file",
                ]),
                vec![any(&["mm_mt", "mmap"])],
                opts(&["start_data", "end_data", "map_count", "mm_users", "mm_count", "owner", "total_vm"]),
            ],
        ),
        st(
            "vm_area_struct",
            R,
            vec![
                reqs(&["vm_start", "vm_end", "vm_file", "vm_pgoff", "vm_flags", "vm_mm"]),
                ifp(&["vm_next", "vm_prev"]),
            ],
        ),
        st("maple_tree", O, vec![reqs(&["ma_root", "ma_flags"])]),
        st("maple_node", O, vec![reqs(&["parent", "slot", "mr64", "ma64"]), opts(&["type", "slot_len"])]),
        st("maple_range_64", O, vec![reqs(&["parent", "pivot", "slot"]), opts(&["meta"])]),
        st("maple_arange_64", O, vec![reqs(&["parent", "pivot", "slot", "gap", "meta"])]),
        st("maple_metadata", O, vec![reqs(&["end", "gap"])]),
        st("file", R, vec![reqs(&["f_path", "f_pos", "f_inode"]), opts(&["f_flags", "f_mode"])]),
        st("path", R, vec![reqs(&["mnt", "dentry"])]),
        st("dentry", R, vec![reqs(&["d_name", "d_parent", "d_iname"]), opts(&["d_inode", "d_sb"])]),
        st("qstr", R, vec![reqs(&["name", "len"]), opts(&["hash"])]),
        st("vfsmount", R, vec![reqs(&["mnt_root"]), opts(&["mnt_sb", "mnt_flags"])]),
        st("mount", R, vec![reqs(&["mnt", "mnt_parent", "mnt_mountpoint"]), opts(&["mnt_devname"])]),
        st("inode", O, vec![opts(&["i_ino", "i_mode", "i_sb", "i_size"])]),
        st("files_struct", R, vec![reqs(&["fdt", "fd_array"])]),
        st("fdtable", R, vec![reqs(&["max_fds", "fd"])]),
        st("cred", R, vec![reqs(&["uid", "gid", "euid", "egid"]), opts(&["suid", "sgid", "fsuid", "fsgid"])]),
        st(
            "module",
            R,
            vec![
                reqs(&["list", "name"]),
                vec![any(&["core_layout.base", "module_core", "mem"]), any(&["core_layout.size", "core_size", "mem"])],
                opts(&["state"]),
                ifp(&[
                    "core_layout.base",
                    "core_layout.size",
                    "core_layout.text_size",
                    "init_layout.base",
                    "init_layout.size",
                    "module_core",
                    "core_size",
                    "mem",
                ]),
            ],
        ),
        st("list_head", R, vec![reqs(&["next", "prev"])]),
        st("thread_info", O, vec![reqs(&["flags"]), ifp(&["status", "cpu"])]),
        st("uts_namespace", O, vec![reqs(&["name"])]),
        st("new_utsname", O, vec![reqs(&["sysname", "release", "version", "machine"])]),
        st("pcpu_hot", Need::IfPresent, vec![reqs(&["current_task"]), ifp(&["top_of_stack", "cpu_number"])]),
    ];
    v.push(st(
        "thread_struct",
        R,
        match arch {
            Arch::I386 => vec![reqs(&["sp"]), opts(&["sp0"])],
            Arch::X86_64 => vec![reqs(&["sp"]), opts(&["fsbase", "gsbase", "fsindex", "gsindex"])],
        },
    ));
    let common_regs = ["bx", "cx", "dx", "si", "di", "bp", "ax", "orig_ax", "ip", "cs", "flags", "sp", "ss"];
    let regs = match arch {
        Arch::I386 => vec![reqs(&common_regs), opts(&["ds", "es", "fs", "gs"])],
        Arch::X86_64 => vec![reqs(&common_regs), reqs(&["r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"])],
    };
    v.push(st("pt_regs", R, regs));
    v
}

/// Enums to record.
pub fn enum_specs() -> &'static [(&'static str, Need)] {
    &[("maple_type", Need::Optional)]
}

/// A constant that is a `#define` in the kernel and so not in DWARF.
#[derive(Clone, Debug)]
pub struct ConstSpec {
    pub name: &'static str,
    /// Its value in the 6.1 kernel line for this architecture (with Debian's configuration).
    pub value: i64,
    pub need: Need,
    /// Comment written above it in the profile.
    pub doc: &'static str,
    /// Where derive can check or take the value from DWARF: `struct.member` whose array
    /// element count is this value (+ `adjust`).
    pub from_dwarf_count: Option<(&'static str, &'static str, i64)>,
}

/// The documented constants of the Linux 6.1 line (x86). Sources: the kernel headers named in
/// each `doc`. Derive writes these values, cross-checked against DWARF where an array length
/// reveals them; a profile for another kernel line must be checked by hand.
pub fn constant_specs(arch: Arch) -> Vec<ConstSpec> {
    let (thread_size, pad, node_slots, r64, a64, meta_max) = match arch {
        Arch::I386 => (8192, 8, 63, 32, 21, 31),
        Arch::X86_64 => (16384, 0, 31, 16, 10, 15),
    };
    let c = |name, value, need, doc| ConstSpec { name, value, need, doc, from_dwarf_count: None };
    let d = |name, value, doc, s, m, adj| ConstSpec {
        name,
        value,
        need: Need::Required,
        doc,
        from_dwarf_count: Some((s, m, adj)),
    };
    use Need::{Optional as O, Required as R};
    vec![
        c("PAGE_SIZE", 4096, R, "arch/x86/include/asm/page_types.h: 1 << PAGE_SHIFT (12)"),
        c(
            "THREAD_SIZE",
            thread_size,
            R,
            "kernel stack size, arch/x86/include/asm/page_{32,64}_types.h: PAGE_SIZE << THREAD_SIZE_ORDER\n\
             (i386: order 1; x86_64: order 2 without KASAN). The stack is task_struct.stack .. + THREAD_SIZE.",
        ),
        c(
            "TOP_OF_KERNEL_STACK_PADDING",
            pad,
            R,
            "arch/x86/include/asm/thread_info.h: 8 on i386 without CONFIG_VM86 (16 with it), 0 on x86_64.\n\
             task_pt_regs(t) = (struct pt_regs *)(t->stack + THREAD_SIZE - TOP_OF_KERNEL_STACK_PADDING) - 1",
        ),
        d(
            "TASK_COMM_LEN",
            16,
            "include/linux/sched.h (an enum in 6.1): length of task_struct.comm",
            "task_struct",
            "comm",
            0,
        ),
        c(
            "PF_KTHREAD",
            0x0020_0000,
            O,
            "include/linux/sched.h task_struct.flags bits: PF_KTHREAD marks kernel threads",
        ),
        c("PF_EXITING", 0x4, O, "include/linux/sched.h: task is exiting"),
        c("EXIT_DEAD", 0x10, O, "include/linux/sched.h task_struct.exit_state values"),
        c("EXIT_ZOMBIE", 0x20, O, ""),
        c("VM_READ", 0x1, O, "include/linux/mm.h vm_area_struct.vm_flags bits"),
        c("VM_WRITE", 0x2, O, ""),
        c("VM_EXEC", 0x4, O, ""),
        c("VM_SHARED", 0x8, O, ""),
        c(
            "MAPLE_NODE_MASK",
            255,
            R,
            "Maple tree (mm_struct.mm_mt), include/linux/maple_tree.h and lib/maple_tree.c.\n\
             An encoded node pointer (maple_enode) e: node = e & ~MAPLE_NODE_MASK;\n\
             type = (e >> MAPLE_NODE_TYPE_SHIFT) & MAPLE_NODE_TYPE_MASK (enum maple_type);\n\
             leaf iff type < maple_range_64. ma_root is a node iff xa_is_node(e):\n\
             (e & XA_INTERNAL_MASK) == XA_INTERNAL_TAG && e > MAPLE_RESERVED_RANGE; otherwise it is the\n\
             single entry for index 0 (or NULL). mm trees are MT_FLAGS_ALLOC_RANGE: inner nodes are\n\
             maple_arange_64, leaves maple_leaf_64 (laid out as maple_range_64). Slot i covers\n\
             (pivot[i-1], pivot[i]]; the last slot ends at the node's max; a pivot of 0 past slot 0 ends the node.",
        ),
        c("MAPLE_NODE_TYPE_MASK", 0x0f, R, ""),
        c("MAPLE_NODE_TYPE_SHIFT", 3, R, ""),
        c("MAPLE_RESERVED_RANGE", 4096, R, ""),
        c(
            "XA_INTERNAL_MASK",
            3,
            R,
            "not kernel macro names: xa_is_internal(e) is ((unsigned long)e & 3) == 2 (include/linux/xarray.h)",
        ),
        c("XA_INTERNAL_TAG", 2, R, ""),
        c(
            "MT_FLAGS_HEIGHT_OFFSET",
            2,
            O,
            "tree height = (maple_tree.ma_flags & MT_FLAGS_HEIGHT_MASK) >> MT_FLAGS_HEIGHT_OFFSET",
        ),
        c("MT_FLAGS_HEIGHT_MASK", 0x7c, O, ""),
        d(
            "MAPLE_NODE_SLOTS",
            node_slots,
            "slot counts (32-bit and 64-bit differ); checked against the DWARF array lengths",
            "maple_node",
            "slot",
            0,
        ),
        d("MAPLE_RANGE64_SLOTS", r64, "", "maple_range_64", "slot", 0),
        d("MAPLE_ARANGE64_SLOTS", a64, "", "maple_arange_64", "slot", 0),
        c("MAPLE_ARANGE64_META_MAX", meta_max, O, "maple_arange_64.meta.end beyond this: metadata not in use"),
    ]
}

/// Whether a constant is only needed for the maple tree (absent before 6.1).
pub fn is_maple_constant(name: &str) -> bool {
    name.starts_with("MAPLE_") || name.starts_with("MT_FLAGS") || name.starts_with("XA_")
}
