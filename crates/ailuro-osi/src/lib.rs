//! Linux introspection on replays (PANDA's `osi_linux`, `syscalls2`/`syscalls_logger`,
//! `asidstory`), for i386 and x86_64 guests. `docs/OSI.md` is the user guide.
//!
//! * [`linux`] — `osi_linux`: picks the kernel profile matching the guest's banner and reads the
//!   current process, the process list, memory maps and file paths out of guest memory
//!   ([`OsiLinux`]);
//! * [`syscalls`] — `syscalls`: every system call with decoded arguments and return value
//!   ([`Syscalls`], events as [`SyscallEvent`]);
//! * [`proc_events`] — `proc_events`: process starts, file opens and reads ([`ProcEvents`]);
//! * [`asidstory`] — `asidstory`: which process ran when, as a text chart and an SVG timeline.
//!
//! [`registry`] lists them for [`ailuro_plugin::PluginSet::load`]. Plugins built on these get
//! them with `cx.plugin::<OsiLinux>()` etc.

#![warn(missing_docs)]

pub mod asidstory;
pub mod decode;
mod kaslr;
pub mod linux;
mod maple;
pub mod proc_events;
pub mod syscalls;
pub mod systable;

pub use asidstory::AsidStory;
pub use linux::{format_process_list, Mapping, OsiLinux, Process, SeenProcess, Status, Switch};
pub use proc_events::{ProcEvent, ProcEventKind, ProcEvents};
pub use syscalls::{Outcome, SyscallEvent, Syscalls, Via};
pub use systable::Abi;

use ailuro_plugin::PluginInfo;

/// The introspection plugins, in the order `info plugins` lists them.
pub fn registry() -> Vec<PluginInfo> {
    vec![linux::INFO, syscalls::INFO, proc_events::INFO, asidstory::INFO]
}

#[cfg(test)]
mod testguest;
#[cfg(test)]
mod testguest64;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests64;
