//! `proc_events`: process starts and file opens/reads, from the completed system calls of
//! `syscalls` — the groundwork for a file-taint analysis.
//!
//! * **proc_start** — a successful `execve`/`execveat`: process and thread id, the new `comm`,
//!   the program path and argv (as read at entry, before the old address space went away).
//! * **file_open** — `open`/`openat`/`openat2`/`creat` returning a descriptor: the path (from the
//!   kernel's file table through `osi_linux` when it can, resolved to an absolute path; else the
//!   path argument). The plugin keeps a descriptor table per process (dup/dup2/dup3/fcntl
//!   `F_DUPFD*` copy entries, `close` removes them, `O_CLOEXEC` entries go at exec, a fork copies
//!   the parent's table, `exit_group` drops it).
//! * **file_read** — `read`/`pread64`/`readv`/`preadv`/`preadv2` returning bytes on a descriptor
//!   whose path is known (from the table, else from the kernel's file table): path, descriptor,
//!   byte count, the user buffer address (for `read`/`pread64`; the iovec address for the vector
//!   forms) and the entry's icount.
//!
//! Each event is a plog record (kinds `proc_start`, `file_open`, `file_read`), stamped at the
//! call's return, and a typed [`ProcEvent`] other plugins read with [`ProcEvents::events_since`]
//! (same bounded-buffer scheme as `syscalls`).

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};

use ailuro_plog::Value;
use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

use crate::decode::O_CLOEXEC;
use crate::linux::OsiLinux;
use crate::syscalls::{Outcome, SyscallEvent, Syscalls};
use crate::systable::Abi;

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "proc_events",
    about: "process starts (execve) and file opens/reads, for taint analyses (plog records and API)",
    args: ARGS,
    deps: &["syscalls"],
    make,
};

const ARGS: &[ArgInfo] = &[ArgInfo { key: "keep", help: "events kept for other plugins (default 4096)" }];

fn make(args: &Args, _: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let keep = args.u64("keep")?.unwrap_or(4096).clamp(1, 1 << 24) as usize;
    Ok(Box::new(ProcEvents::new(keep)))
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcEventKind {
    /// A program started (successful execve).
    ProcStart {
        /// The new comm.
        comm: String,
        /// The program path given to execve.
        path: String,
        /// Its argv (at most 32 entries).
        argv: Vec<String>,
    },
    /// A file was opened.
    FileOpen {
        /// Descriptor returned.
        fd: u32,
        /// Path.
        path: String,
        /// Open flags.
        flags: u64,
    },
    /// Bytes were read from a file.
    FileRead {
        /// Descriptor.
        fd: u32,
        /// Path.
        path: String,
        /// Bytes read (the return value).
        count: u64,
        /// User address of the buffer (`read`, `pread64`) or of the iovec array (vector reads).
        buf: u64,
        /// The bytes are scattered by an iovec array at `buf`.
        vectored: bool,
        /// File offset for `pread64` (else `None`: the current position).
        offset: Option<u64>,
    },
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    /// Sequence number.
    pub seq: u64,
    /// Program point of the call's return.
    pub icount: u64,
    /// Program point of the call's entry.
    pub entry_icount: u64,
    /// Process id (tgid), if known.
    pub pid: Option<u32>,
    /// Thread id, if known.
    pub tid: Option<u32>,
    /// What happened.
    pub kind: ProcEventKind,
}

#[derive(Clone, Debug)]
struct FdInfo {
    path: String,
    cloexec: bool,
}

/// The `proc_events` plugin.
pub struct ProcEvents {
    keep: usize,
    /// Next `syscalls` sequence number to look at.
    seen: u64,
    /// (process key, fd) → file. The process key is the tgid, or the address space without osi.
    fds: BTreeMap<(u64, u32), FdInfo>,
    events: VecDeque<ProcEvent>,
    next_seq: u64,
    counts: [u64; 3],
}

impl ProcEvents {
    /// A tracker keeping the last `keep` events.
    pub fn new(keep: usize) -> ProcEvents {
        ProcEvents { keep, seen: 0, fds: BTreeMap::new(), events: VecDeque::new(), next_seq: 0, counts: [0; 3] }
    }

    /// The sequence number of the next event.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events with `seq >= from` still in the buffer, oldest first.
    pub fn events_since(&self, from: u64) -> impl Iterator<Item = &ProcEvent> {
        let first = self.events.front().map_or(self.next_seq, |e| e.seq);
        self.events.iter().skip(from.saturating_sub(first) as usize)
    }

    /// The files a process (by tgid) has open that this plugin saw opened, by descriptor.
    pub fn open_files(&self, pid: u32) -> Vec<(u32, String)> {
        let key = u64::from(pid);
        self.fds.range((key, 0)..=(key, u32::MAX)).map(|(&(_, fd), f)| (fd, f.path.clone())).collect()
    }

    /// The path of descriptor `fd` of process `pid` (tgid), as tracked.
    pub fn path_of(&self, pid: u32, fd: u32) -> Option<&str> {
        self.fds.get(&(u64::from(pid), fd)).map(|f| f.path.as_str())
    }

    fn poll(&mut self, cx: &mut Cx) {
        let Some(sc) = cx.plugin::<Syscalls>() else { return };
        if sc.next_seq() == self.seen {
            return;
        }
        let evs: Vec<SyscallEvent> = sc.events_since(self.seen).cloned().collect();
        self.seen = sc.next_seq();
        for e in &evs {
            self.handle(cx, e);
        }
    }

    fn key(e: &SyscallEvent) -> u64 {
        e.pid.map_or(e.asid | (1 << 63), u64::from)
    }

    fn handle(&mut self, cx: &mut Cx, e: &SyscallEvent) {
        let key = Self::key(e);
        let ret = e.ret.unwrap_or(-1);
        // By name: the i386 and x86_64 tables number the calls differently.
        let name = e.name.as_str();
        let x64 = e.abi == Abi::X86_64;
        if e.outcome == Outcome::NoReturn && name == "exit_group" {
            // exit_group: the process's descriptors go away.
            self.fds.retain(|&(k, _), _| k != key);
            return;
        }
        if !e.succeeded() {
            return;
        }
        let a = e.args;
        let fd_arg = |i: usize| a[i] as u32;
        match name {
            "execve" | "execveat" => {
                self.fds.retain(|&(k, _), f| k != key || !f.cloexec);
                let path = e.path.clone().unwrap_or_default();
                let comm = e.comm_after.clone().unwrap_or_else(|| basename(&path).chars().take(15).collect());
                let argv = e.argv.clone().unwrap_or_default();
                self.push(cx, e, ProcEventKind::ProcStart { comm, path, argv });
            }
            "open" | "creat" | "openat" | "openat2" => {
                let fd = ret as u32;
                let flags = match name {
                    "open" => a[1],
                    "openat" => a[2],
                    "creat" => 0o1101, // O_CREAT|O_WRONLY|O_TRUNC
                    _ => 0,
                };
                let kernel_path = self.kernel_fd_path(cx, e, fd);
                let Some(path) = kernel_path.or_else(|| e.path.clone()) else { return };
                self.fds.insert((key, fd), FdInfo { path: path.clone(), cloexec: flags & O_CLOEXEC != 0 });
                self.push(cx, e, ProcEventKind::FileOpen { fd, path, flags });
            }
            "close" => {
                self.fds.remove(&(key, fd_arg(0)));
            }
            // F_DUPFD / F_DUPFD_CLOEXEC
            "dup" => self.dup(key, fd_arg(0), ret as u32, false),
            "fcntl" | "fcntl64" if a[1] == 0 || a[1] == 1030 => self.dup(key, fd_arg(0), ret as u32, a[1] == 1030),
            "dup2" => self.dup(key, fd_arg(0), fd_arg(1), false),
            "dup3" => self.dup(key, fd_arg(0), fd_arg(1), a[2] & O_CLOEXEC != 0),
            // the child gets a copy of the table
            "fork" | "vfork" | "clone" | "clone3" if ret > 0 => {
                let thread = name == "clone" && a[0] & 0x10000 != 0; // CLONE_THREAD
                if !thread && e.pid.is_some() {
                    let child = ret as u64;
                    let copy: Vec<(u32, FdInfo)> =
                        self.fds.range((key, 0)..=(key, u32::MAX)).map(|(&(_, fd), f)| (fd, f.clone())).collect();
                    for (fd, f) in copy {
                        self.fds.insert((child, fd), f);
                    }
                }
            }
            "read" | "pread64" | "readv" | "preadv" | "preadv2" if ret > 0 => {
                let fd = fd_arg(0);
                let path = match self.fds.get(&(key, fd)) {
                    Some(f) => Some(f.path.clone()),
                    None => self.kernel_fd_path(cx, e, fd),
                };
                let Some(path) = path else { return };
                // pread64's offset: one register on x86_64, two (low word first) on i386.
                let offset = (name == "pread64").then(|| if x64 { a[3] } else { a[3] | (a[4] << 32) });
                let vectored = matches!(name, "readv" | "preadv" | "preadv2");
                self.push(cx, e, ProcEventKind::FileRead { fd, path, count: ret as u64, buf: a[1], vectored, offset });
            }
            _ => {}
        }
    }

    fn dup(&mut self, key: u64, from: u32, to: u32, cloexec: bool) {
        if from == to {
            return;
        }
        match self.fds.get(&(key, from)).cloned() {
            Some(mut f) => {
                f.cloexec = cloexec;
                self.fds.insert((key, to), f);
            }
            None => {
                self.fds.remove(&(key, to));
            }
        }
    }

    /// The path of `fd` from the kernel's file table, when the call returned just now (the file
    /// table is the caller's only while it is the current task).
    fn kernel_fd_path(&self, cx: &Cx, e: &SyscallEvent, fd: u32) -> Option<String> {
        if e.return_icount != Some(cx.icount) {
            return None;
        }
        let osi = cx.plugin::<OsiLinux>()?;
        let task = e.task?;
        (osi.current_task_addr(cx) == Some(task)).then(|| osi.fd_path(cx, task, fd)).flatten()
    }

    fn push(&mut self, cx: &mut Cx, e: &SyscallEvent, kind: ProcEventKind) {
        let ev = ProcEvent {
            seq: self.next_seq,
            icount: e.return_icount.unwrap_or(cx.icount),
            entry_icount: e.entry_icount,
            pid: e.pid,
            tid: e.tid,
            kind,
        };
        self.next_seq += 1;
        if cx.has_plog() {
            let (pid, tid) = (ev.pid.map(u64::from), ev.tid.map(u64::from));
            match &ev.kind {
                ProcEventKind::ProcStart { comm, path, argv } => {
                    let argv: Vec<Value> = argv.iter().map(|s| Value::Str(s.clone())).collect();
                    cx.log("proc_events", "proc_start", |r| {
                        r.field("pid", pid)
                            .field("tid", tid)
                            .field("comm", comm.as_str())
                            .field("path", path.as_str())
                            .list("argv", argv.iter())
                    });
                }
                ProcEventKind::FileOpen { fd, path, flags } => {
                    cx.log("proc_events", "file_open", |r| {
                        r.field("pid", pid)
                            .field("tid", tid)
                            .field("fd", u64::from(*fd))
                            .field("path", path.as_str())
                            .field("flags", *flags)
                    });
                }
                ProcEventKind::FileRead { fd, path, count, buf, vectored, offset } => {
                    let entry = ev.entry_icount;
                    cx.log("proc_events", "file_read", |r| {
                        r.field("pid", pid)
                            .field("tid", tid)
                            .field("fd", u64::from(*fd))
                            .field("path", path.as_str())
                            .field("count", *count)
                            .field("buf", *buf)
                            .field("vectored", *vectored)
                            .field("offset", *offset)
                            .field("entry_icount", entry)
                    });
                }
            }
        }
        let i = match ev.kind {
            ProcEventKind::ProcStart { .. } => 0,
            ProcEventKind::FileOpen { .. } => 1,
            ProcEventKind::FileRead { .. } => 2,
        };
        self.counts[i] += 1;
        if self.events.len() >= self.keep {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

impl Plugin for ProcEvents {
    fn name(&self) -> &'static str {
        "proc_events"
    }

    fn hooks(&self) -> u32 {
        hook::BEFORE_BLOCK
    }

    fn before_block(&mut self, cx: &mut Cx) {
        self.poll(cx);
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        self.poll(cx);
        Ok(Some(format!(
            "proc_events: {} program starts, {} file opens, {} file reads",
            self.counts[0], self.counts[1], self.counts[2]
        )))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
