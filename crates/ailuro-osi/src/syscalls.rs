//! `syscalls`: every Linux system call (i386, x86_64, and 32-bit processes under an x86_64
//! kernel) with decoded arguments and its return value (PANDA's `syscalls2` +
//! `syscalls_logger`).
//!
//! **Entry.** With a kernel profile (from `osi_linux`), a block that starts at the kernel's entry
//! point is a system call entry. The registers still hold the user's values there.
//!
//! * i386 kernel: `entry_INT80_32` (`int $0x80`) or `entry_SYSENTER_32` (`sysenter`, which the
//!   vDSO's `__kernel_vsyscall` uses): EAX is the number, EBX, ECX, EDX, ESI, EDI, EBP arguments
//!   1–6 ([`Abi::I386`]). For `sysenter`, `__kernel_vsyscall` has pushed ECX, EDX and EBP and
//!   moved ESP into EBP, so argument 6 is the word at `[EBP]` on the user stack.
//! * x86_64 kernel, 64-bit code: `entry_SYSCALL_64` (`syscall`): RAX is the number, RDI, RSI,
//!   RDX, R10, R8, R9 the arguments ([`Abi::X86_64`]); it returns to RCX with the same RSP.
//! * x86_64 kernel, 32-bit code (the i386 table): `entry_SYSENTER_compat` as i386's `sysenter`;
//!   `entry_SYSCALL_compat` (`syscall` from compatibility mode, AMD): the vDSO copies ECX to EBP
//!   first (`syscall` overwrites ECX), so argument 2 is EBP and argument 6 the word at `[ESP]`;
//!   `int $0x80`: `entry_INT80_compat` (registers live, hardware frame of 8-byte words) or, on
//!   6.1 stable kernels, `int80_emulation`, whose argument (RDI) is the `pt_regs` holding the
//!   caller's registers (offsets from the profile). `int $0x80` from 64-bit code also uses the
//!   i386 table.
//!
//! Without a usable profile the plugin falls back to looking at the instruction that ended each
//! user-mode block (`cd 80` / `0f 34` / `0f 05`), which needs the after-block hook as well (the
//! hook may come before the `int $0x80` is delivered — registers as at the instruction — or
//! after).
//!
//! **Return.** The first user-mode block of the same task (the per-cpu current task from
//! `osi_linux`; without it, the address space) whose stack pointer is the one the call will
//! return with (for `int $0x80` the user ESP and EIP saved in the hardware frame; for `sysenter`
//! the EBP at entry; for `syscall` RCX and RSP at entry) is the return, and EAX (RAX for
//! [`Abi::X86_64`]) there is the result (−4095..−1: −errno). A signal
//! handler that runs first (another stack) is skipped; calls it makes nest. A return onto an
//! `int $0x80` instruction is a restart, not a return: the restarted call supersedes the pending
//! one (outcome `interrupted`). `execve` returns at the first user block whatever the stack (the
//! new program). `exit`, `exit_group`, `sigreturn` and `rt_sigreturn` do not return; they are
//! reported at entry.
//!
//! **Outputs.** A text file (`file=`, default `syscalls.txt`; `file=none` for none), one line per
//! call, written when the call completes:
//!
//! ```text
//! 1234567 42 42 cat openat(AT_FDCWD, "/etc/passwd", O_RDONLY|O_LARGEFILE) = 3
//! ```
//!
//! (entry icount, process id, thread id, comm, the call, `= ret`, `= -2 ENOENT` for errors, `= ?`
//! for no return). Buffers written (`write`) are shown at entry, buffers read (`read`) at return
//! with the returned count, both capped at `buf=` bytes (default 64). Plog records: kind `syscall`
//! at entry (`nr`, `name`, `pid`, `tid`, `comm`, `args` (raw list), `call` (decoded)) and kind
//! `sysret` at return (`nr`, `name`, `pid`, `tid`, `ret`, `errno`, `entry_icount`, `call`, and
//! `data`: the bytes shown for buffers).
//!
//! **For other plugins.** [`Syscalls::events_since`] / [`Syscalls::next_seq`] give completed calls
//! (a bounded buffer of the last `keep=` calls, default 4096) as typed [`SyscallEvent`]s;
//! [`Syscalls::recent`] those completed during the current callback (a plugin that depends on
//! `syscalls` and hooks `BEFORE_BLOCK` sees them in the same dispatch, right after `syscalls`);
//! [`Syscalls::pending`] the calls in progress.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use ailuro_plog::Value;
use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

use crate::decode;
use crate::linux::OsiLinux;
use crate::systable::{self, Abi, Spec, A, R};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "syscalls",
    about: "every Linux system call (i386, x86_64): decoded arguments, return value, process (text file and plog)",
    args: ARGS,
    deps: &["osi_linux"],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "file", help: "text output, one line per call (default syscalls.txt; none: no file)" },
    ArgInfo { key: "buf", help: "bytes of read/written buffers shown (default 64)" },
    ArgInfo { key: "keep", help: "completed calls kept for other plugins (default 4096)" },
];

fn make(args: &Args, _: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let file = match args.str("file").as_deref() {
        None => Some(PathBuf::from("syscalls.txt")),
        Some("none") | Some("") => None,
        Some(p) => Some(PathBuf::from(p)),
    };
    let buf = args.u64("buf")?.unwrap_or(64).min(1 << 20) as usize;
    let keep = args.u64("keep")?.unwrap_or(4096).clamp(1, 1 << 24) as usize;
    Ok(Box::new(Syscalls::new(file, buf, keep)))
}

const EAX: usize = 0;
const ECX: usize = 1;
const EDX: usize = 2;
const EBX: usize = 3;
const ESP: usize = 4;
const EBP: usize = 5;
const ESI: usize = 6;
const EDI: usize = 7;

/// Strings and argv are capped (bytes per string, entries per array).
const STR_MAX: usize = 256;
const ARGV_MAX: usize = 32;
/// Nesting of pending calls per task (signal handlers).
const DEPTH_MAX: usize = 16;
/// Whose calls are pending: a task (its `task_struct`), or an address space when no task is
/// known. (Not one number with a marker bit: x86_64 kernel addresses use every bit.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Task(u64),
    Asid(u64),
}

/// How the call entered the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// `int $0x80`.
    Int80,
    /// `sysenter`.
    Sysenter,
    /// `syscall` from 64-bit code (x86_64 table).
    Syscall,
    /// `syscall` from compatibility mode (a 32-bit process under an x86_64 kernel; i386 table).
    Syscall32,
}

impl Via {
    /// `int80`, `sysenter`, `syscall` or `syscall32`.
    pub fn name(self) -> &'static str {
        match self {
            Via::Int80 => "int80",
            Via::Sysenter => "sysenter",
            Via::Syscall => "syscall",
            Via::Syscall32 => "syscall32",
        }
    }

    /// The system-call convention (and table) of calls that enter this way.
    pub fn abi(self) -> Abi {
        match self {
            Via::Syscall => Abi::X86_64,
            _ => Abi::I386,
        }
    }
}

/// Where an entry's registers are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// At the `int $0x80` handler: registers live, the hardware frame on the kernel stack.
    Int80Frame,
    /// The `int $0x80` at this user address retired but is not delivered yet (the
    /// instruction fallback in user mode): registers live, returns to the next instruction.
    Int80User(u64),
    /// At `int80_emulation`: the caller's registers are in the `pt_regs` RDI points to.
    Int80PtRegs,
    /// At the `sysenter` handler (i386 or compat).
    Sysenter,
    /// At the 64-bit `syscall` handler.
    Syscall64,
    /// At the compatibility-mode `syscall` handler.
    Syscall32,
}

impl Entry {
    fn via(self) -> Via {
        match self {
            Entry::Int80Frame | Entry::Int80User(_) | Entry::Int80PtRegs => Via::Int80,
            Entry::Sysenter => Via::Sysenter,
            Entry::Syscall64 => Via::Syscall,
            Entry::Syscall32 => Via::Syscall32,
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Returned to its caller; `ret` holds EAX.
    Returned,
    /// Does not return (exit, exit_group, sigreturn, rt_sigreturn); reported at entry.
    NoReturn,
    /// Restarted by the kernel (the same call entered again from the same stack) or superseded.
    Interrupted,
    /// Still in progress when the run ended.
    Unfinished,
}

/// One system call, for other plugins.
#[derive(Clone, Debug)]
pub struct SyscallEvent {
    /// Sequence number (0, 1, 2, ... in completion order).
    pub seq: u64,
    /// Program point of the entry (first kernel instruction).
    pub entry_icount: u64,
    /// Program point of the return (first user instruction back), if it returned.
    pub return_icount: Option<u64>,
    /// Number (EAX / RAX at entry).
    pub nr: u32,
    /// Which table `nr` is in: [`Abi::I386`] (also 32-bit processes under an x86_64 kernel)
    /// or [`Abi::X86_64`].
    pub abi: Abi,
    /// Name (`syscall_NNN` for numbers the table does not know).
    pub name: String,
    /// Raw arguments 1–6 (32-bit values for [`Abi::I386`]).
    pub args: [u64; 6],
    /// EAX at the return (sign-extended from 32 bits), RAX for [`Abi::X86_64`].
    pub ret: Option<i64>,
    /// How it ended.
    pub outcome: Outcome,
    /// How it entered the kernel.
    pub via: Via,
    /// The calling task's `task_struct`, process id, thread id and comm (from `osi_linux`).
    pub task: Option<u64>,
    /// Process id (tgid).
    pub pid: Option<u32>,
    /// Thread id.
    pub tid: Option<u32>,
    /// comm at entry.
    pub comm: Option<String>,
    /// comm after a successful `execve`/`execveat` (the new program's).
    pub comm_after: Option<String>,
    /// Address space at entry.
    pub asid: u64,
    /// Arguments as shown in the text output.
    pub shown: Vec<String>,
    /// The first path argument, as read from user memory.
    pub path: Option<String>,
    /// `execve`'s argv, as read at entry (at most 32 entries).
    pub argv: Option<Vec<String>>,
    /// Bytes of the buffer shown (written buffer at entry, read buffer at return), capped.
    pub data: Option<Vec<u8>>,
}

impl SyscallEvent {
    /// `name(arg, arg, ...)`.
    pub fn call(&self) -> String {
        format!("{}({})", self.name, self.shown.join(", "))
    }

    /// The errno of a failed call (`ret` in −4095..−1).
    pub fn errno(&self) -> Option<u64> {
        self.ret.filter(|&r| (-4095..0).contains(&r)).map(|r| (-r) as u64)
    }

    /// Did it return a non-negative value?
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Returned && self.ret.is_some_and(|r| r >= 0)
    }

    /// The text after `=`: `3`, `0xb7f00000`, `-2 ENOENT`, `?`.
    pub fn ret_text(&self) -> String {
        match (self.outcome, self.ret) {
            (Outcome::Returned, Some(r)) => match self.errno() {
                Some(e) => format!("{r} {}", decode::errno_name(e).unwrap_or("")).trim_end().to_string(),
                None => match systable::lookup_abi(self.abi, self.nr).map(|s| s.ret) {
                    Some(R::Addr) => format!("{:#x}", r as u64 & self.abi.mask()),
                    Some(R::Oct) => format!("0{:o}", r),
                    _ => r.to_string(),
                },
            },
            (Outcome::Interrupted, _) => "? (interrupted)".into(),
            (Outcome::Unfinished, _) => "? (unfinished)".into(),
            _ => "?".into(),
        }
    }

    /// The text line: `icount pid tid comm call = ret`.
    pub fn line(&self) -> String {
        let id = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        let comm = match &self.comm {
            Some(c) => c.replace(' ', "_"),
            None => format!("asid:{:#x}", self.asid),
        };
        format!(
            "{} {} {} {} {} = {}",
            self.entry_icount,
            id(self.pid),
            id(self.tid),
            comm,
            self.call(),
            self.ret_text()
        )
    }
}

/// A call in progress.
struct Pending {
    ev: SyscallEvent,
    /// Arguments still to decode at return (`None` in `ev.shown` terms).
    todo: Vec<bool>,
    expect_pc: Option<u64>,
    expect_sp: Option<u64>,
}

/// How entries are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Not known yet (no profile decided).
    Undecided,
    /// Blocks starting at these kernel addresses.
    Symbols(Entries),
    /// The instruction ending a user block (no usable profile).
    Opcodes,
}

/// The kernel's system-call entry points (from `osi_linux`'s profile, slid by KASLR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Entries {
    int80: Option<u64>,
    int80_regs: Option<u64>,
    sysenter: Option<u64>,
    syscall64: Option<u64>,
    syscall32: Option<u64>,
}

impl Entries {
    fn any(&self) -> bool {
        *self != Entries::default()
    }

    fn at(&self, pc: u64) -> Option<Entry> {
        let is = |e: Option<u64>| e == Some(pc);
        if is(self.syscall64) {
            Some(Entry::Syscall64)
        } else if is(self.int80) {
            Some(Entry::Int80Frame)
        } else if is(self.int80_regs) {
            Some(Entry::Int80PtRegs)
        } else if is(self.sysenter) {
            Some(Entry::Sysenter)
        } else if is(self.syscall32) {
            Some(Entry::Syscall32)
        } else {
            None
        }
    }
}

/// The `syscalls` plugin.
pub struct Syscalls {
    file: Option<PathBuf>,
    out: Option<BufWriter<File>>,
    buf_max: usize,
    keep: usize,
    mode: Mode,
    /// A kernel block ran since the last user block.
    kernel_since_user: bool,
    /// The current block started in user mode (opcode mode).
    block_user: bool,
    /// Its code width (`syscall` from 64-bit code or compatibility mode).
    block_bits: u32,
    /// `pt_regs` offsets for `int80_emulation` entries.
    pt_regs: Option<crate::linux::PtRegsLayout>,
    pending: BTreeMap<Key, Vec<Pending>>,
    npending: usize,
    events: VecDeque<SyscallEvent>,
    next_seq: u64,
    recent_from: u64,
    last_entry: Option<(u64, Key)>,
    counts: BTreeMap<String, u64>,
    failed: u64,
    write_error: Option<String>,
    /// A wake point asked for, so that the run loop takes up changed hooks.
    wake: Option<u64>,
}

impl Syscalls {
    /// A tracer writing `file` (if any), showing `buf_max` bytes of buffers, keeping `keep` events.
    pub fn new(file: Option<PathBuf>, buf_max: usize, keep: usize) -> Syscalls {
        Syscalls {
            file,
            out: None,
            buf_max,
            keep,
            mode: Mode::Undecided,
            kernel_since_user: false,
            block_user: false,
            block_bits: 32,
            pt_regs: None,
            pending: BTreeMap::new(),
            npending: 0,
            events: VecDeque::new(),
            next_seq: 0,
            recent_from: 0,
            last_entry: None,
            counts: BTreeMap::new(),
            failed: 0,
            write_error: None,
            wake: None,
        }
    }

    /// The sequence number the next completed call will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Completed calls with `seq >= from` still in the buffer (the last `keep=`), oldest first.
    pub fn events_since(&self, from: u64) -> impl Iterator<Item = &SyscallEvent> {
        let first = self.events.front().map_or(self.next_seq, |e| e.seq);
        let skip = from.saturating_sub(first) as usize;
        self.events.iter().skip(skip)
    }

    /// Calls completed during the latest callback of this plugin.
    pub fn recent(&self) -> impl Iterator<Item = &SyscallEvent> {
        self.events_since(self.recent_from)
    }

    /// Calls in progress (entered, not returned), by task.
    pub fn pending(&self) -> impl Iterator<Item = &SyscallEvent> {
        self.pending.values().flat_map(|v| v.iter().map(|p| &p.ev))
    }

    /// Completed calls per name, sorted by name.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Decide how entries are found. Switching to the instruction fallback needs the after-block
    /// hook, which the run loop takes up only at a wake point: ask for one at the next
    /// instruction.
    fn decide_mode(&mut self, cx: &Cx) {
        let before = self.mode;
        self.decide_mode_inner(cx);
        if self.mode != before && self.mode == Mode::Opcodes {
            self.wake = Some(cx.icount + 1);
        }
    }

    fn decide_mode_inner(&mut self, cx: &Cx) {
        let Some(osi) = cx.plugin::<OsiLinux>() else {
            self.mode = Mode::Opcodes;
            return;
        };
        let entries = osi.active(cx).map(|a| {
            let e = Entries {
                int80: a.l.entry_int80,
                // Only with the pt_regs offsets to read the caller's registers.
                int80_regs: a.l.int80_emulation.filter(|_| a.l.pt_regs.is_some()),
                sysenter: a.l.entry_sysenter,
                syscall64: a.l.entry_syscall64,
                syscall32: a.l.entry_syscall_compat,
            };
            (e, a.l.pt_regs)
        });
        match entries {
            Some((e, regs)) if e.any() => {
                self.mode = Mode::Symbols(e);
                self.pt_regs = regs;
            }
            Some(_) => self.mode = Mode::Opcodes,
            None => {
                if matches!(osi.status(), crate::linux::Status::Disabled(_)) {
                    self.mode = Mode::Opcodes;
                }
            }
        }
    }

    /// The key of the running task: its `task_struct`, else the address space.
    fn task_key(cx: &Cx) -> Key {
        cx.plugin::<OsiLinux>().and_then(|o| o.current_task_addr(cx)).map_or(Key::Asid(cx.asid()), Key::Task)
    }

    /// A system call enters the kernel; `how` says where its registers are.
    fn entry(&mut self, cx: &mut Cx, how: Entry) {
        let Some(cpu) = cx.cpu() else { return };
        let via = how.via();
        let abi = via.abi();
        let r = |n: usize| cpu.reg(n) & 0xffff_ffff;
        let named = |n: &str| cpu.reg_index(n).map_or(0, |i| cpu.reg(i));
        let mut nr = r(EAX) as u32;
        let mut args = [r(EBX), r(ECX), r(EDX), r(ESI), r(EDI), r(EBP)];
        let (mut expect_pc, mut expect_sp) = (None, None);
        match how {
            Entry::Int80User(pc) => {
                // In 64-bit code the next instruction and the stack are 64-bit addresses.
                let mask = if cpu.bits() == 64 { u64::MAX } else { 0xffff_ffff };
                expect_pc = Some(pc.wrapping_add(2) & mask);
                expect_sp = Some(cpu.reg(ESP) & mask);
            }
            Entry::Int80Frame => {
                // The hardware frame: EIP, CS, EFLAGS, ESP, SS of the caller (8-byte words when
                // the handler is 64-bit code).
                let w = if cpu.bits() == 64 { 8 } else { 4 };
                let mut f = [0u8; 40];
                if cx.read_virt(cpu.reg(ESP), &mut f[..5 * w]) {
                    let word = |i: usize| le(&f[w * i..w * i + w]);
                    if word(1) & 3 == 3 {
                        expect_pc = Some(word(0));
                        expect_sp = Some(word(3));
                    }
                }
            }
            Entry::Int80PtRegs => {
                // int80_emulation(struct pt_regs *regs): the caller's registers as saved.
                let Some(pr) = self.pt_regs else { return };
                let base = cpu.reg(EDI);
                let field = |off: u64| {
                    let mut b = [0u8; 8];
                    cx.read_virt(base.wrapping_add(off), &mut b).then(|| u64::from_le_bytes(b))
                };
                let (Some(ax), Some(cs)) = (field(pr.ax), field(pr.cs)) else { return };
                if cs & 3 != 3 {
                    return; // not from user mode
                }
                nr = ax as u32;
                let g = |off: u64| field(off).unwrap_or(0) & 0xffff_ffff;
                args = [g(pr.bx), g(pr.cx), g(pr.dx), g(pr.si), g(pr.di), g(pr.bp)];
                expect_pc = field(pr.ip);
                expect_sp = field(pr.sp);
            }
            Entry::Sysenter => {
                // __kernel_vsyscall: push ecx; push edx; push ebp; mov esp, ebp; sysenter.
                let ebp = r(EBP);
                expect_sp = Some(ebp);
                if let Some(a6) = cx.read_virt_u32(ebp) {
                    args[5] = u64::from(a6);
                }
            }
            Entry::Syscall64 => {
                nr = r(EAX) as u32;
                args = [cpu.reg(EDI), cpu.reg(ESI), cpu.reg(EDX), named("r10"), named("r8"), named("r9")];
                // SYSCALL saved the return RIP in RCX; the stack pointer is untouched.
                expect_pc = Some(cpu.reg(ECX));
                expect_sp = Some(cpu.reg(ESP));
            }
            Entry::Syscall32 => {
                // The vDSO: push ecx; push edx; push ebp; mov ecx, ebp; syscall. Argument 2 is
                // in EBP, argument 6 on the user stack; SYSCALL saved the return EIP in ECX.
                let esp = r(ESP);
                args[1] = r(EBP);
                args[5] = cx.read_virt_u32(esp).map_or(0, u64::from);
                expect_pc = Some(r(ECX));
                expect_sp = Some(esp);
            }
        }
        let osi = cx.plugin::<OsiLinux>();
        let proc = osi.and_then(|o| o.current_process(cx));
        let asid = cx.asid();
        let key = proc.as_ref().map_or(Key::Asid(asid), |p| Key::Task(p.task));
        if self.last_entry == Some((cx.icount, key)) {
            return;
        }
        self.last_entry = Some((cx.icount, key));
        let spec = systable::lookup_abi(abi, nr);
        let name = spec.map_or_else(|| format!("syscall_{nr}"), |s| s.name.to_string());
        let mut ev = SyscallEvent {
            seq: 0,
            entry_icount: cx.icount,
            return_icount: None,
            nr,
            abi,
            name,
            args,
            ret: None,
            outcome: Outcome::Returned,
            via,
            task: proc.as_ref().map(|p| p.task),
            pid: proc.as_ref().map(|p| p.tgid),
            tid: proc.as_ref().map(|p| p.pid),
            comm: proc.as_ref().map(|p| p.comm.clone()),
            comm_after: None,
            asid,
            shown: Vec::new(),
            path: None,
            argv: None,
            data: None,
        };
        let todo = self.decode_entry(cx, spec, &mut ev);
        if cx.has_plog() {
            let call = ev.call();
            let (pid, tid, comm) = (ev.pid.map(u64::from), ev.tid.map(u64::from), ev.comm.clone());
            let raw: Vec<u64> = ev.args[..spec.map_or(6, |s| s.args.len())].to_vec();
            cx.log("syscalls", "syscall", |b| {
                b.field("nr", u64::from(nr))
                    .field("name", ev.name.as_str())
                    .field("pid", pid)
                    .field("tid", tid)
                    .field("comm", comm.as_deref())
                    .list("args", raw)
                    .field("call", call.as_str())
                    .field("via", via.name())
                    .field("abi", abi.name())
            });
        }
        if spec.is_some_and(|s| s.ret == R::None) {
            ev.outcome = Outcome::NoReturn;
            self.complete(ev);
            return;
        }
        // The same call entered again from the same stack: the pending one was restarted.
        if let Some(stack) = self.pending.get_mut(&key) {
            if let Some(top) = stack.last() {
                if expect_sp.is_some() && top.expect_sp == expect_sp {
                    let mut old = stack.pop().expect("top exists");
                    self.npending -= 1;
                    old.ev.outcome = Outcome::Interrupted;
                    self.finish_call(cx, old, None);
                }
            }
        }
        let stack = self.pending.entry(key).or_default();
        if stack.len() >= DEPTH_MAX {
            // Report the oldest of this task as unfinished (typically a task that was killed
            // in a call, e.g. by SIGPIPE, whose task_struct was reused).
            let mut old = stack.remove(0);
            self.npending -= 1;
            old.ev.outcome = Outcome::Unfinished;
            self.finish_call(cx, old, None);
        }
        self.pending.entry(key).or_default().push(Pending { ev, todo, expect_pc, expect_sp });
        self.npending += 1;
    }

    /// The first user-mode block after kernel code: does a pending call of this task return?
    fn user_block(&mut self, cx: &mut Cx) {
        if self.npending == 0 {
            return;
        }
        let key = Self::task_key(cx);
        let Some(stack) = self.pending.get(&key) else { return };
        let Some(top) = stack.last() else { return };
        let Some(cpu) = cx.cpu() else { return };
        // The view gives 32-bit values outside long mode, and a compatibility-mode process's
        // RSP has a zero upper half: both compare with what the entry saved.
        let (pc, sp) = (cx.pc, cpu.reg(ESP));
        // A successful exec returns in the new program, anywhere. Only a task key follows it:
        // an address-space key would meet another process that got the old page directory.
        let exec = is_exec(&top.ev) && matches!(key, Key::Task(_));
        let matches = top.expect_sp.is_none_or(|e| e == sp) && top.expect_pc.is_none_or(|e| e == pc);
        if !exec && !matches {
            return; // a signal handler, or another context of this task
        }
        if !exec {
            // Returning onto `int $0x80` is the kernel restarting the call: it will enter again.
            let mut insn = [0u8; 2];
            if cx.read_virt(pc, &mut insn) && insn == [0xcd, 0x80] {
                return;
            }
        }
        let ret = match top.ev.abi {
            Abi::X86_64 => cpu.reg(EAX) as i64,
            Abi::I386 => cpu.reg(EAX) as u32 as i32 as i64,
        };
        let stack = self.pending.get_mut(&key).expect("checked");
        let p = stack.pop().expect("checked");
        if stack.is_empty() {
            self.pending.remove(&key);
        }
        self.npending -= 1;
        self.finish_call(cx, p, Some(ret));
    }

    /// Complete a pending call (`ret`: returned with EAX = ret).
    fn finish_call(&mut self, cx: &mut Cx, p: Pending, ret: Option<i64>) {
        let Pending { mut ev, todo, .. } = p;
        if let Some(r) = ret {
            ev.ret = Some(r);
            ev.return_icount = Some(cx.icount);
            ev.outcome = Outcome::Returned;
            let spec = systable::lookup_abi(ev.abi, ev.nr);
            self.decode_return(cx, spec, &mut ev, &todo);
            if is_exec(&ev) && r == 0 {
                ev.comm_after = cx.plugin::<OsiLinux>().and_then(|o| o.current_process(cx)).map(|p| p.comm);
            }
            if cx.has_plog() {
                let call = ev.call();
                let errno = ev.errno().and_then(decode::errno_name);
                let (pid, tid) = (ev.pid.map(u64::from), ev.tid.map(u64::from));
                let data = ev.data.clone().map(Value::Bytes);
                let (nr, entry) = (u64::from(ev.nr), ev.entry_icount);
                cx.log("syscalls", "sysret", |b| {
                    let b = b
                        .field("nr", nr)
                        .field("name", ev.name.as_str())
                        .field("pid", pid)
                        .field("tid", tid)
                        .field("ret", r)
                        .field("errno", errno)
                        .field("entry_icount", entry)
                        .field("call", call.as_str());
                    match &data {
                        Some(d) => b.field("data", d),
                        None => b,
                    }
                });
            }
        }
        self.complete(ev);
    }

    /// Record a finished call: counters, text line, event buffer.
    fn complete(&mut self, mut ev: SyscallEvent) {
        ev.seq = self.next_seq;
        self.next_seq += 1;
        *self.counts.entry(ev.name.clone()).or_default() += 1;
        if ev.errno().is_some() {
            self.failed += 1;
        }
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = writeln!(out, "{}", ev.line()) {
                self.write_error.get_or_insert(format!("cannot write {}: {e}", self.file_name()));
            }
        }
        if self.events.len() >= self.keep {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or_else(String::new, |p| p.display().to_string())
    }

    /// Decode the arguments that can be shown at entry; returns which wait for the return.
    fn decode_entry(&self, cx: &Cx, spec: Option<&Spec>, ev: &mut SyscallEvent) -> Vec<bool> {
        let Some(spec) = spec else {
            ev.shown = ev.args.iter().map(|&a| format!("{a:#x}")).collect();
            return vec![false; 6];
        };
        let mut todo = vec![false; spec.args.len()];
        for (i, kind) in spec.args.iter().enumerate() {
            let v = ev.args[i];
            let shown = match *kind {
                A::OutBuf | A::OutStr => None,
                A::Path | A::Str => self.string(cx, v).map(|(s, raw)| {
                    if *kind == A::Path && ev.path.is_none() {
                        ev.path = Some(String::from_utf8_lossy(&raw).into_owned());
                    }
                    s
                }),
                A::InBuf(n) => self.buffer(cx, v, ev.args[usize::from(n)]).map(|(s, raw)| {
                    ev.data = Some(raw);
                    s
                }),
                A::Argv => Some(match read_argv(cx, v, ev.abi) {
                    Some((list, more)) => {
                        let mut parts: Vec<String> =
                            list.iter().map(|a| decode::escape(a, a.len() >= STR_MAX)).collect();
                        if more {
                            parts.push("...".into());
                        }
                        ev.argv = Some(list.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect());
                        format!("[{}]", parts.join(", "))
                    }
                    None => hex_or_null(v),
                }),
                A::Envp => Some(match read_argv(cx, v, ev.abi) {
                    Some((list, more)) => {
                        format!("{:#x} /* {}{} vars */", v, list.len(), if more { "+" } else { "" })
                    }
                    None => hex_or_null(v),
                }),
                k => Some(scalar(k, v)),
            };
            todo[i] = shown.is_none();
            ev.shown.push(shown.unwrap_or_else(|| hex_or_null(v)));
        }
        // open/openat use the mode only with O_CREAT or O_TMPFILE (strace omits it otherwise).
        let flags = match ev.name.as_str() {
            "open" => Some(ev.args[1]),
            "openat" => Some(ev.args[2]),
            _ => None,
        };
        if flags.is_some_and(|f| f & (0o100 | 0o20000000) == 0) {
            ev.shown.pop();
            todo.pop();
        }
        todo
    }

    /// Decode at return what waited for it: buffers the kernel filled, strings unreadable at entry.
    fn decode_return(&self, cx: &Cx, spec: Option<&Spec>, ev: &mut SyscallEvent, todo: &[bool]) {
        let Some(spec) = spec else { return };
        let ret = ev.ret.unwrap_or(-1);
        let exec_ok = is_exec(ev) && ret == 0; // the old address space is gone
        for (i, kind) in spec.args.iter().enumerate() {
            if !todo.get(i).copied().unwrap_or(false) {
                continue;
            }
            let v = ev.args[i];
            let shown = if exec_ok {
                None
            } else {
                match *kind {
                    A::OutBuf if ret > 0 => self.buffer(cx, v, ret as u64).map(|(s, raw)| {
                        ev.data = Some(raw);
                        s
                    }),
                    A::OutStr if ret > 0 => self.string(cx, v).map(|(s, _)| s),
                    A::Path | A::Str => self.string(cx, v).map(|(s, raw)| {
                        if *kind == A::Path && ev.path.is_none() {
                            ev.path = Some(String::from_utf8_lossy(&raw).into_owned());
                        }
                        s
                    }),
                    A::InBuf(n) => self.buffer(cx, v, ev.args[usize::from(n)]).map(|(s, raw)| {
                        ev.data = Some(raw);
                        s
                    }),
                    _ => None,
                }
            };
            ev.shown[i] = shown.unwrap_or_else(|| hex_or_null(v));
        }
    }

    /// A C string at `v`: (shown, raw bytes).
    fn string(&self, cx: &Cx, v: u64) -> Option<(String, Vec<u8>)> {
        if v == 0 {
            return Some(("NULL".into(), Vec::new()));
        }
        let b = cx.read_virt_cstr(v, STR_MAX)?;
        Some((decode::escape(&b, b.len() >= STR_MAX), b))
    }

    /// `len` bytes at `v`, capped: (shown, raw bytes shown).
    fn buffer(&self, cx: &Cx, v: u64, len: u64) -> Option<(String, Vec<u8>)> {
        if v == 0 {
            return Some(("NULL".into(), Vec::new()));
        }
        let n = (len as usize).min(self.buf_max);
        let mut b = vec![0u8; n];
        if !cx.read_virt(v, &mut b) {
            return None;
        }
        Some((decode::escape(&b, len as usize > n), b))
    }
}

/// `execve` or `execveat` (in either table).
fn is_exec(ev: &SyscallEvent) -> bool {
    matches!(ev.name.as_str(), "execve" | "execveat")
}

/// A little-endian word of 4 or 8 bytes.
fn le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

fn hex_or_null(v: u64) -> String {
    if v == 0 {
        "NULL".into()
    } else {
        format!("{v:#x}")
    }
}

/// A scalar argument.
fn scalar(kind: A, v: u64) -> String {
    let i = v as u32 as i32;
    // C `int`/`unsigned int` arguments: on x86_64 the upper half of the register is not part
    // of the value.
    let w = v & 0xffff_ffff;
    match kind {
        A::Int | A::Fd => i.to_string(),
        A::UInt => w.to_string(),
        A::Long => (v as i64).to_string(),
        A::ULong => v.to_string(),
        A::Hex => format!("{v:#x}"),
        A::Ptr => hex_or_null(v),
        A::DirFd => decode::dirfd(w),
        A::OpenFlags => decode::open_flags(w),
        A::Mode if w == 0 => "0".into(),
        A::Mode => format!("0{w:o}"),
        A::Prot => decode::prot(w),
        A::MapFlags => decode::map_flags(w),
        A::CloneFlags => decode::clone_flags(v),
        A::Signal => decode::signal(w),
        A::Whence => decode::whence(w),
        A::Fcntl => decode::fcntl_cmd(w),
        A::Ioctl => decode::ioctl_req(w),
        A::AccessMode => decode::access_mode(w),
        A::AtFlags => decode::at_flags(w),
        A::WaitOpts => decode::wait_opts(w),
        A::SigHow => decode::sig_how(w),
        A::ClockId => decode::clock_id(w),
        A::RebootCmd => decode::reboot_cmd(w),
        A::SocketCall => decode::socketcall(w),
        A::PrctlOpt => decode::prctl_option(w),
        A::ArchPrctl => decode::arch_prctl_code(w),
        A::Path | A::Str | A::InBuf(_) | A::OutBuf | A::OutStr | A::Argv | A::Envp => hex_or_null(v),
    }
}

/// A NULL-terminated array of string pointers (of the convention's width): (strings,
/// truncated).
fn read_argv(cx: &Cx, v: u64, abi: Abi) -> Option<(Vec<Vec<u8>>, bool)> {
    if v == 0 {
        return None;
    }
    let w: u64 = if abi == Abi::X86_64 { 8 } else { 4 };
    let mut out = Vec::new();
    for i in 0..=ARGV_MAX {
        let mut b = [0u8; 8];
        let at = v.wrapping_add(w * i as u64) & abi.mask();
        if !cx.read_virt(at, &mut b[..w as usize]) {
            return None;
        }
        let p = u64::from_le_bytes(b);
        if p == 0 {
            return Some((out, false));
        }
        if i == ARGV_MAX {
            return Some((out, true));
        }
        out.push(cx.read_virt_cstr(p, STR_MAX).unwrap_or_default());
    }
    Some((out, true))
}

impl Plugin for Syscalls {
    fn name(&self) -> &'static str {
        "syscalls"
    }

    fn hooks(&self) -> u32 {
        match self.mode {
            Mode::Opcodes => hook::BEFORE_BLOCK | hook::AFTER_BLOCK,
            _ => hook::BEFORE_BLOCK,
        }
    }

    fn wake_at(&self) -> Option<u64> {
        self.wake
    }

    fn at_icount(&mut self, _cx: &mut Cx) {
        self.wake = None;
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        if let Some(path) = &self.file {
            let f = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let mut w = BufWriter::new(f);
            writeln!(
                w,
                "# icount pid tid comm call = result (one line per call, at its return; icount is the entry's)"
            )
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            self.out = Some(w);
        }
        self.decide_mode(cx);
        self.kernel_since_user = cx.cpu().is_some_and(|c| c.in_kernel());
        Ok(())
    }

    fn before_block(&mut self, cx: &mut Cx) {
        self.recent_from = self.next_seq;
        let Some(cpu) = cx.cpu() else { return };
        let kernel = cpu.in_kernel();
        self.block_user = !kernel;
        if !kernel {
            self.block_bits = cpu.bits();
        }
        if kernel {
            self.kernel_since_user = true;
            if self.mode == Mode::Undecided {
                self.decide_mode(cx);
            }
            if let Mode::Symbols(entries) = self.mode {
                if let Some(how) = entries.at(cx.pc) {
                    self.entry(cx, how);
                }
            }
        } else if self.kernel_since_user {
            self.kernel_since_user = false;
            self.user_block(cx);
        }
        if let Some(e) = self.write_error.take() {
            cx.fail(e);
        }
    }

    fn after_block(&mut self, cx: &mut Cx, pc: u64) {
        if self.mode != Mode::Opcodes || !self.block_user {
            return;
        }
        self.recent_from = self.next_seq;
        let mut insn = [0u8; 2];
        if !cx.read_virt(pc, &mut insn) {
            return;
        }
        let kernel = cx.cpu().is_some_and(|c| c.in_kernel());
        match insn {
            // reported before the interrupt is delivered (user mode) or after (kernel mode)
            [0xcd, 0x80] if kernel => self.entry(cx, Entry::Int80Frame),
            [0xcd, 0x80] => self.entry(cx, Entry::Int80User(pc)),
            [0x0f, 0x34] if kernel => self.entry(cx, Entry::Sysenter),
            // SYSCALL: from 64-bit code or from compatibility mode (the block's width).
            [0x0f, 0x05] if kernel && self.block_bits == 64 => self.entry(cx, Entry::Syscall64),
            [0x0f, 0x05] if kernel => self.entry(cx, Entry::Syscall32),
            _ => {}
        }
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        self.recent_from = self.next_seq;
        let pending = std::mem::take(&mut self.pending);
        self.npending = 0;
        let mut left: Vec<Pending> = pending.into_values().flatten().collect();
        left.sort_by_key(|p| (p.ev.entry_icount, p.ev.tid));
        for mut p in left {
            p.ev.outcome = Outcome::Unfinished;
            self.finish_call(cx, p, None);
        }
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(|e| format!("cannot write {}: {e}", self.file_name()))?;
        }
        if let Some(e) = self.write_error.take() {
            return Err(e);
        }
        let total: u64 = self.counts.values().sum();
        let mut top: Vec<(&String, &u64)> = self.counts.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top.iter().take(8).map(|(n, c)| format!("{n} {c}")).collect();
        let via = match self.mode {
            Mode::Opcodes => " (no kernel profile: entries found by instruction)",
            _ => "",
        };
        let file = self.file.as_ref().map_or_else(String::new, |p| format!("; {}", p.display()));
        Ok(Some(format!(
            "syscalls: {total} calls, {} failed{via}{}{file}",
            self.failed,
            if top.is_empty() { String::new() } else { format!("; most: {}", top.join(", ")) }
        )))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
