//! Kernel profiles for Linux OS introspection.
//!
//! PANDA's `osi_linux` needs a hand-made `kernelinfo.conf` per guest kernel. Ailuro derives the
//! same knowledge from the kernel's own debug information instead, and keeps it in a small,
//! human-readable TOML file, a *kernel profile*, that the runtime loads. A profile holds:
//!
//! * the kernel's release, version and exact `linux_banner` string — the runtime reads the banner
//!   from guest memory at the profile's `linux_banner` address and compares
//!   ([`KernelProfile::check_banner`]), so a profile of another kernel (or a kernel moved by KASLR)
//!   is detected instead of producing garbage;
//! * architecture, pointer size, paging format and the image's virtual-to-physical offset;
//! * symbol addresses (`init_task`, `__per_cpu_offset`, `current_task`/`pcpu_hot`,
//!   `sys_call_table`, `swapper_pg_dir`, `modules`, the system-call entry points, ...);
//! * where the per-cpu current-task pointer is ([`PerCpu`]);
//! * sizes and member offsets/sizes of the structs that process, module, memory-map, file and
//!   register walkers need (`task_struct`, `mm_struct`, `vm_area_struct`, the maple tree nodes,
//!   `file`/`path`/`dentry`/`qstr`/`mount`, `files_struct`/`fdtable`, `cred`, `module`,
//!   `list_head`, `thread_struct`, `pt_regs`, ...), with members inside anonymous
//!   structs/unions already resolved (offsets added up);
//! * `enum maple_type`, and the `#define` constants that DWARF cannot carry (`THREAD_SIZE`,
//!   `TOP_OF_KERNEL_STACK_PADDING`, the maple-tree encoding, ...), documented in the file.
//!
//! The full list is in [`spec`]; the file format, how to regenerate a profile and how to write one
//! by hand are in `docs/KERNEL-PROFILES.md`.
//!
//! ```no_run
//! use ailuro_kprofile::KernelProfile;
//! let p = KernelProfile::load("crates/ailuro-kprofile/profiles/linux-6.1.0-50-686.toml")?;
//! let v = p.validate();
//! assert!(v.is_ok(), "{v}");
//! let init_task = p.symbol("init_task")?;
//! let tasks = p.offset("task_struct", "tasks")?;
//! let comm = p.member("task_struct", "comm")?; // offset, size, type
//! # let _ = (init_task, tasks, comm);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Deriving (needs the `-dbg` vmlinux, see `scripts/fetch-kernel-dbg.sh`):
//!
//! ```text
//! ailuro-kprofile derive --vmlinux vmlinux-6.1.0-50-686 -o linux-6.1.0-50-686.toml
//! ```

pub mod btf;
pub mod derive;
pub mod dwarf;
pub mod elf;
pub mod error;
pub mod profile;
pub mod spec;
pub mod types;

pub use derive::{derive_from_btf, derive_from_elf, derive_from_path, Derived};
pub use dwarf::DwarfTypes;
pub use elf::ElfImage;
pub use error::{DeriveError, LookupError, ProfileError};
pub use profile::{
    banner_release, Addr, Arch, BannerCheck, KernelInfo, KernelProfile, Member, PerCpu, StructLayout, Validation,
    FORMAT,
};
pub use types::{MemberInfo, TypeGraph};

/// The directory of the profiles that ship with the crate.
pub fn bundled_profiles_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}
