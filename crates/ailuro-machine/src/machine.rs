//! The machine: CPU + RAM + (live) board or (replay) log, and the run loop that drives them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ailuro_bus::GuestRam;
/// Firmware data and optional devices of the PC board (`-device pc-testdev`, fw_cfg's command
/// line), given to [`Machine::new_live_with_devices`].
pub use ailuro_pc::PcDevices;
use ailuro_pc::{BoardRequest, PcBoard, PcConfig};
use ailuro_rr::{Event, LogEntry, LogReader};
use ailuro_x86::{Cpu, CpuConfig, CpuModel, Engine, RunExit};
use serde::{Deserialize, Serialize};

use crate::clock::VirtualClock;
use crate::config::{is_linux_bzimage, GuestArch, MachineConfig};
use crate::host::{Host, HostEvent};
use crate::platforms::{describe, Divergence, EventStats, LivePlatform, Recorder, ReplayPlatform, SyncQueue};
use crate::plugins::Plugins;
use crate::rrfiles;
use crate::tap::ConsoleTap;

/// Longest slice between looks at the host (monitor commands, serial input), in instructions.
const SLICE: u64 = 2_000_000;
/// Interrupt line number of the NMI edge in the nondet log (line 0 is the INTR pin).
const NMI_LINE: u8 = 1;
/// Instructions between periodic checkpoints in a recording.
pub const CHECKPOINT_INTERVAL: u64 = 50_000_000;

/// A kernel and its modules, kept so a reset can boot it again.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// The kernel file's bytes.
    pub kernel: Vec<u8>,
    /// Multiboot modules (`-initrd`), name and bytes.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// Options of a run that are not part of the machine (and so not part of a recording).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// When the CPU is idle, let virtual time pass no faster than host time (QEMU `-icount
    /// sleep=on`). Only affects when host input arrives, which is recorded.
    pub sleep: bool,
    /// Start paused (`-S`).
    pub start_paused: bool,
    /// Execution engine (`-accel`). Not part of a recording: either engine replays a
    /// recording made with either.
    pub engine: Engine,
    /// Translator tiering: dispatches of a block before it is compiled (None: the default).
    pub jit_hot: Option<u16>,
}

/// Why [`Machine::run`] returned.
#[derive(Debug)]
pub enum Stop {
    /// The guest wrote `v` to isa-debug-exit: exit status `(v << 1) | 1`.
    GuestExit(i32),
    /// The guest powered the machine off.
    PowerOff,
    /// A triple fault (CPU shutdown) with `-no-reboot`: exit status 2.
    Shutdown(String),
    /// The guest asked for a reset (e.g. `reboot -f`) with `-no-reboot`: exit status 0, as QEMU.
    Reboot(String),
    /// `quit` on the monitor (or the end of all input sources while paused).
    Quit,
    /// A replay ran to the end of its recording and matched.
    ReplayFinished(Box<ReplaySummary>),
    /// A replay stopped because the execution no longer fits the log.
    Divergence(Divergence),
    /// An error that is not the guest's doing (I/O, corrupt file).
    Error(String),
    /// An analysis plugin ended the run (e.g. `memsavep` after its dump): the reason.
    PluginStop(String),
    /// The host asked the emulator to terminate (SIGINT, SIGTERM, SIGHUP): what was received.
    /// A recording in progress was finished first. Exit status 0, as QEMU 7.2 gives.
    Terminated(String),
}

impl Stop {
    /// Process exit status, following QEMU's conventions.
    pub fn exit_status(&self) -> i32 {
        match self {
            Stop::GuestExit(s) => *s,
            Stop::PowerOff
            | Stop::Quit
            | Stop::ReplayFinished(_)
            | Stop::PluginStop(_)
            | Stop::Reboot(_)
            | Stop::Terminated(_) => 0,
            Stop::Shutdown(_) => 2,
            Stop::Divergence(_) => 3,
            Stop::Error(_) => 1,
        }
    }
}

/// Figures of a completed replay.
#[derive(Clone, Debug)]
pub struct ReplaySummary {
    /// Recording name.
    pub name: PathBuf,
    /// Instructions replayed.
    pub instructions: u64,
    /// Host seconds spent replaying.
    pub seconds: f64,
    /// Events consumed, by kind.
    pub stats: EventStats,
    /// CPU+RAM hash at the end (equal to the recording's).
    pub final_hash: [u8; 32],
    /// Size of the nondet log file on disk.
    pub log_bytes: u64,
    /// How the recording ended (from its trailer), reproduced by the replay.
    pub end_reason: Option<ailuro_rr::EndReason>,
    /// The engine that ran the replay, and the translator's counters.
    pub engine: Engine,
    pub jit: ailuro_x86::JitStats,
}

/// How a recording's end reason reads in a replay summary.
fn describe_end(reason: ailuro_rr::EndReason) -> String {
    use ailuro_rr::EndReason as E;
    match reason {
        E::EndRecord => "end_record".into(),
        E::GuestExit(code) => format!("the guest exited with status {code}"),
        E::PowerOff => "the guest powered off".into(),
        E::Reset => "a guest reset (-no-reboot)".into(),
        E::Shutdown => "a CPU shutdown (triple fault), reproduced".into(),
        E::Quit => "quit".into(),
        E::Error => "an emulator error".into(),
        E::Unknown(t, c) => format!("unknown reason {t} (code {c})"),
    }
}

impl ReplaySummary {
    /// The multi-line report printed at the end of a replay.
    pub fn report(&self) -> String {
        let mips = if self.seconds > 0.0 { self.instructions as f64 / self.seconds / 1e6 } else { 0.0 };
        let mut s = format!(
            "replay: {}\ninstructions: {}\nseconds: {:.3}\nMIPS: {:.1}\nfinal state hash: {}\n\
             nondet log: {} bytes ({:.4} bytes per 1000 instructions)\n",
            self.name.display(),
            self.instructions,
            self.seconds,
            mips,
            hex(&self.final_hash),
            self.log_bytes,
            self.log_bytes as f64 * 1000.0 / self.instructions.max(1) as f64
        );
        if let Some(r) = self.end_reason {
            s += &format!("recording ended by: {}\n", describe_end(r));
        }
        s += &match self.engine {
            Engine::Interpreter => "engine: interpreter\n".to_string(),
            Engine::Jit => format!(
                "engine: jit, {} blocks ({} guest instructions, {} KiB of host code) compiled in {:.3} s ({:.1}% of the replay), {:.1}% of instructions run compiled\n",
                self.jit.blocks_compiled,
                self.jit.guest_insns_compiled,
                self.jit.code_bytes / 1024,
                self.jit.compile_ns as f64 / 1e9,
                if self.seconds > 0.0 { 100.0 * self.jit.compile_ns as f64 / 1e9 / self.seconds } else { 0.0 },
                100.0 * self.jit.insns_compiled as f64 / self.instructions.max(1) as f64
            ) + &format!(
                "  {} compiled blocks run ({:.1} instructions each), {} entered by the previous one's code (chained), {} left early\n",
                self.jit.blocks_run,
                self.jit.insns_compiled as f64 / self.jit.blocks_run.max(1) as f64,
                self.jit.chained,
                self.jit.side_exits
            ),
        };
        s += "events:\n";
        for k in 0..self.stats.count.len() {
            if self.stats.count[k] > 0 {
                s += &format!(
                    "  {:<13} {:>12} events {:>14} bytes (uncompressed)\n",
                    Event::kind_name(k as u8),
                    self.stats.count[k],
                    self.stats.bytes[k]
                );
            }
        }
        s += "Replay completed successfully";
        s
    }
}

/// Lower-case hex of a byte string.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Board + clock + the recorder when recording.
struct Live {
    board: PcBoard,
    clock: VirtualClock,
    recorder: Option<Recorder>,
}

/// Everything of a replay in progress.
struct Replay {
    name: PathBuf,
    reader: LogReader,
    start_icount: u64,
    end_icount: Option<u64>,
    final_hash: Option<[u8; 32]>,
    /// Why the recording ended (complete logs only).
    end_reason: Option<ailuro_rr::EndReason>,
    /// The recording ended in a CPU shutdown at `end_icount` and the replay has reproduced it.
    shutdown_reproduced: bool,
    queue: SyncQueue,
    next_async: Option<LogEntry>,
    eof: bool,
    started: Instant,
    async_stats: EventStats,
    /// The snapshot's device blob (a cut recording carries it: it cannot go live either).
    devices: Vec<u8>,
    /// Virtual clock for time-stamp reads (log version 2; restored from the snapshot).
    clock: Option<VirtualClock>,
    /// `scissors`: the part of this replay being written into a new recording.
    cut: Option<Cut>,
    /// The recorded board's isa-debugcon port (its output is reconstructed from port writes).
    debugcon: Option<u16>,
}

/// A recording being cut out of a replay (`scissors`): every log entry the replay consumes in
/// `[start, end]` is written again, after a snapshot taken at `start`.
pub(crate) struct Cut {
    pub start: u64,
    pub end: u64,
    pub name: PathBuf,
    pub overwrite: bool,
    pub recorder: Option<Recorder>,
}

impl Replay {
    /// Read ahead until the next asynchronous entry (or the end of the log).
    fn fill(&mut self) -> Result<(), String> {
        while self.next_async.is_none() && !self.eof {
            match self.reader.next_entry() {
                Ok(Some(e)) => {
                    if e.event.is_synchronous() {
                        self.queue.entries.push_back(e);
                    } else {
                        self.next_async = Some(e);
                    }
                }
                Ok(None) => self.eof = true,
                Err(e) => return Err(format!("reading the nondet log of {}: {e}", self.name.display())),
            }
        }
        Ok(())
    }
}

enum Mode {
    Live(Box<Live>),
    Replay(Box<Replay>),
    /// A replay ended: there are no devices, so the machine cannot go live.
    Dead,
}

/// The device-side state stored in a snapshot: board and virtual clock.
#[derive(Serialize, Deserialize)]
struct DeviceState {
    board: Vec<u8>,
    clock: VirtualClock,
}

/// A whole emulated machine.
pub struct Machine {
    config: MachineConfig,
    cpu: Cpu,
    ram: GuestRam,
    mode: Mode,
    tap: ConsoleTap,
    paused: bool,
    boot: Option<BootImage>,
    /// What the board is built with beyond `config` (kept for resets; a replay's board comes from
    /// its snapshot).
    devices: PcDevices,
    opts: RunOptions,
    console: Vec<u8>,
    /// Host time and virtual time when pacing (sleep=on) was last anchored.
    pace: (Instant, u64),
    /// Stop requested by a monitor command, returned by `run` at the next slice boundary.
    pending_stop: Option<Stop>,
    /// Analysis plugins, if any are loaded.
    plugins: Option<Plugins>,
    /// The console line being written (live runs), to notice a Linux kernel panic.
    console_line: Vec<u8>,
    /// A recording could not be finished (trailer write failed): the run must end with an error
    /// whatever else ended it, so that a lost recording never exits 0.
    record_failure: Option<String>,
    /// isa-debugcon output reconstructed by a replay, not yet handed to the host.
    debug_out: Vec<u8>,
    /// Instruction count of the last guest reset (live runs), to notice a reset loop.
    reset_at: Option<u64>,
}

/// The CPU a machine of `arch` has: the i386 PC a P6-class 32-bit CPU, the x86_64 PC one with
/// long mode. A replay builds its CPU from the recording's architecture the same way.
pub(crate) fn cpu_config(arch: GuestArch) -> CpuConfig {
    match arch {
        GuestArch::X86_64 => CpuConfig { model: CpuModel::X86_64 },
        // No ARM machine exists yet; an ARM recording is refused before a CPU is built.
        GuestArch::I386 | GuestArch::Arm => CpuConfig { model: CpuModel::I386 },
    }
}

impl Machine {
    /// Power on a live PC with `config`, loading `boot` (multiboot kernel) into RAM.
    pub fn new_live(config: MachineConfig, boot: Option<BootImage>, opts: RunOptions) -> Result<Self, String> {
        Machine::new_live_with_devices(config, boot, opts, PcDevices::default())
    }

    /// Power on a live PC like [`Machine::new_live`], with the board's fw_cfg command line and
    /// optional devices from `devices`. They reach a recording through the board state in its
    /// snapshot, so a replay needs nothing more.
    pub fn new_live_with_devices(
        config: MachineConfig,
        boot: Option<BootImage>,
        opts: RunOptions,
        devices: PcDevices,
    ) -> Result<Self, String> {
        if boot.is_some() && devices.bios.is_some() {
            // QEMU would hand the kernel to the firmware through fw_cfg and its linuxboot option
            // ROM; this board has neither the option ROM nor the fw_cfg kernel items.
            return Err("a kernel (-kernel) and firmware (-bios) cannot be combined: boot the kernel \
                        directly (without -bios) or run the firmware alone (without -kernel)"
                .into());
        }
        let mut ram = GuestRam::new(0, config.ram_size).map_err(|e| format!("cannot create guest RAM: {e}"))?;
        let board = PcBoard::with_devices(
            PcConfig { ram_size: config.ram_size, rtc_base_unix: config.rtc_base_unix },
            &devices,
        );
        map_firmware(&mut ram, &board)?;
        let mut cpu = Cpu::new(cpu_config(config.arch));
        cpu.set_engine(opts.engine);
        cpu.set_jit_hot_threshold(opts.jit_hot);
        let mut m = Machine {
            cpu,
            ram,
            mode: Mode::Live(Box::new(Live { board, clock: VirtualClock::default(), recorder: None })),
            tap: ConsoleTap::default(),
            paused: opts.start_paused,
            boot,
            devices,
            pace: (Instant::now(), 0),
            opts,
            config,
            console: Vec::new(),
            pending_stop: None,
            plugins: None,
            console_line: Vec::new(),
            record_failure: None,
            debug_out: Vec::new(),
            reset_at: None,
        };
        m.load_boot_image()?;
        Ok(m)
    }

    /// A machine that replays recording `name` (from its two files alone).
    pub fn new_replay(name: &Path, opts: RunOptions, expect_arch: GuestArch) -> Result<Self, String> {
        let (config, mut cpu, mut ram, tap, replay) = rrfiles::open_replay(name, expect_arch)?;
        cpu.set_engine(opts.engine);
        cpu.set_jit_hot_threshold(opts.jit_hot);
        let replay = replay_state(name, replay, &mut ram)?;
        Ok(Machine {
            config,
            cpu,
            ram,
            mode: Mode::Replay(Box::new(replay)),
            tap,
            paused: opts.start_paused,
            boot: None,
            devices: PcDevices::default(),
            pace: (Instant::now(), 0),
            opts,
            console: Vec::new(),
            pending_stop: None,
            plugins: None,
            console_line: Vec::new(),
            record_failure: None,
            debug_out: Vec::new(),
            reset_at: None,
        })
    }

    fn load_boot_image(&mut self) -> Result<(), String> {
        if let Some(rom) = &self.devices.bios {
            // Firmware boot: the CPU starts at its reset vector (CS:IP = F000:FFF0, CS.base =
            // 0xffff0000) in the ROM the board maps below 4 GiB. The ISA alias below 1 MiB is
            // RAM here and gets the image's last 128 KiB.
            let (base, alias) = rom.isa_alias();
            self.ram.write(base, alias).map_err(|e| format!("cannot map the firmware below 1 MiB: {e}"))?;
            self.cpu.invalidate_code(base, alias.len() as u64);
            return Ok(());
        }
        let Some(boot) = &self.boot else { return Ok(()) };
        if is_linux_bzimage(&boot.kernel) {
            return self.load_linux_image();
        }
        let modules: Vec<ailuro_boot::Module> = boot
            .modules
            .iter()
            .map(|(name, data)| ailuro_boot::Module { name: name.clone(), data: data.clone() })
            .collect();
        let entry = ailuro_boot::load_multiboot(&mut self.ram, &boot.kernel, &self.config.cmdline, &modules)
            .map_err(|e| format!("cannot load kernel: {e}"))?;
        self.cpu.enter_flat_protected_mode(entry.eip);
        self.cpu.set_gpr(ailuro_x86::Gpr::Rax, entry.eax as u64);
        self.cpu.set_gpr(ailuro_x86::Gpr::Rbx, entry.ebx as u64);
        self.cpu.set_gpr(ailuro_x86::Gpr::Rsi, entry.esi as u64);
        self.cpu.invalidate_code(0, self.ram.size());
        Ok(())
    }

    /// Linux boot protocol: bzImage at its 32-bit entry point, initrd, command line, zero page,
    /// and the ACPI tables the board's devices match (no firmware runs).
    fn load_linux_image(&mut self) -> Result<(), String> {
        let Some(boot) = &self.boot else { return Ok(()) };
        let hdr = ailuro_boot::parse_setup_header(&boot.kernel).map_err(|e| format!("cannot load kernel: {e}"))?;
        if self.config.arch == GuestArch::I386 && hdr.xloadflags & ailuro_boot::linux::XLF_KERNEL_64 != 0 {
            return Err("cannot load kernel: this bzImage is an x86_64 kernel (it has the 64-bit entry point); \
                        ailuro-system-i386 runs 32-bit kernels: use ailuro-system-x86_64"
                .to_string());
        }
        let initrd = match boot.modules.as_slice() {
            [] => None,
            [(_, data)] => Some(data.as_slice()),
            _ => return Err("a Linux kernel takes one -initrd file, not a comma-separated list".to_string()),
        };
        let entry = ailuro_boot::load_linux(&mut self.ram, &boot.kernel, initrd, &self.config.cmdline)
            .map_err(|e| format!("cannot load kernel: {e}"))?;
        let rsdp = ailuro_boot::build_acpi_tables(&mut self.ram, &ailuro_boot::AcpiConfig::default())
            .map_err(|e| format!("cannot build ACPI tables: {e}"))?;
        ailuro_boot::set_boot_params_rsdp(&mut self.ram, entry.zero_page, rsdp)
            .map_err(|e| format!("cannot write the zero page: {e}"))?;
        self.cpu.enter_flat_protected_mode(entry.entry.eip);
        self.cpu.set_gdtr(ailuro_x86::DescTable { base: u64::from(entry.gdt_base), limit: u32::from(entry.gdt_limit) });
        self.cpu.set_gpr(ailuro_x86::Gpr::Rsi, u64::from(entry.zero_page));
        self.cpu.invalidate_code(0, self.ram.size());
        Ok(())
    }

    /// The machine configuration.
    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Instructions retired since power-on (or since the start of the replayed recording's
    /// snapshot, in replay).
    pub fn icount(&self) -> u64 {
        self.cpu.icount()
    }

    /// Hash of CPU state and RAM: what record and replay compare.
    pub fn state_hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.cpu.state_hash());
        h.update(&self.ram.hash());
        *h.finalize().as_bytes()
    }

    /// The CPU (for monitors and tests).
    pub fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    /// Guest RAM (for monitors and tests).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Whether a recording is in progress.
    pub fn is_recording(&self) -> bool {
        matches!(&self.mode, Mode::Live(l) if l.recorder.is_some())
    }

    /// Whether the machine runs live (with devices), recording or not.
    pub fn is_live(&self) -> bool {
        matches!(self.mode, Mode::Live(_))
    }

    /// Whether a replay is in progress.
    pub fn is_replaying(&self) -> bool {
        matches!(self.mode, Mode::Replay(_))
    }

    /// Start recording into `name` (`NAME-rr-snp` + `NAME-rr-nondet.log`). Refuses to overwrite an
    /// existing recording unless `overwrite`.
    pub fn begin_record(&mut self, name: &Path, overwrite: bool) -> Result<(), String> {
        let Mode::Live(live) = &mut self.mode else {
            return Err("begin_record: only a live machine can be recorded (a replay cannot go live)".into());
        };
        if live.recorder.is_some() {
            return Err("begin_record: a recording is already in progress (end_record first)".into());
        }
        let devices = postcard::to_allocvec(&DeviceState { board: live.board.save_state(), clock: live.clock.clone() })
            .map_err(|e| format!("cannot serialize device state: {e}"))?;
        let recorder = rrfiles::create_recording(
            name,
            overwrite,
            &self.config,
            &self.cpu,
            &self.ram,
            &devices,
            &self.tap,
            CHECKPOINT_INTERVAL,
        )?;
        live.recorder = Some(recorder);
        Ok(())
    }

    /// Finish the recording in progress, writing its trailer. Returns a one-line summary.
    pub fn end_record(&mut self, reason: ailuro_rr::EndReason) -> Result<String, String> {
        let hash = self.state_hash();
        let icount = self.cpu.icount();
        let Mode::Live(live) = &mut self.mode else { return Err("end_record: no recording in progress".into()) };
        let Some(rec) = live.recorder.take() else { return Err("end_record: no recording in progress".into()) };
        let r = rrfiles::finish_recording(rec, icount, hash, reason);
        if let Err(e) = &r {
            self.record_failure.get_or_insert_with(|| e.clone());
        }
        r
    }

    fn finish_recording_if_any(&mut self, reason: ailuro_rr::EndReason, host: &mut dyn Host) {
        if self.is_recording() {
            match self.end_record(reason) {
                Ok(msg) => host.message(&msg),
                Err(e) => host.message(&format!("error: {e}")),
            }
        }
    }

    /// Replace the machine's execution with a replay of `name` (monitor `begin_replay`).
    pub fn begin_replay(&mut self, name: &Path) -> Result<(), String> {
        if self.is_recording() {
            return Err("begin_replay: a recording is in progress (end_record first)".into());
        }
        let (config, mut cpu, mut ram, tap, replay) = rrfiles::open_replay(name, self.config.arch)?;
        cpu.set_engine(self.opts.engine);
        cpu.set_jit_hot_threshold(self.opts.jit_hot);
        self.mode = Mode::Replay(Box::new(replay_state(name, replay, &mut ram)?));
        self.config = config;
        self.cpu = cpu;
        self.ram = ram;
        self.tap = tap;
        Ok(())
    }

    /// Run until something ends the run (guest exit, quit, replay end, divergence, error).
    pub fn run(&mut self, host: &mut dyn Host) -> Stop {
        let stop = self.run_inner(host);
        let stop = self.finish_plugins(stop, host);
        match self.record_failure.take() {
            Some(e) if !matches!(stop, Stop::Error(_) | Stop::Divergence(_)) => Stop::Error(e),
            _ => stop,
        }
    }

    /// Load analysis plugins (before `run`). Machine-level plugins (`scissors`) are configured
    /// here; their errors come back before anything runs.
    pub fn set_plugins(&mut self, mut set: ailuro_plugin::PluginSet) -> Result<(), String> {
        let tap = self.tap.clone();
        set.with_mut::<crate::console_plugin::ConsolePlugin>(|c| c.set_tap(tap));
        if let Some(s) = set.get::<crate::scissors::Scissors>() {
            let s = s.clone();
            self.set_cut(s.start, s.end, &s.name, s.overwrite)?;
        }
        self.plugins = Some(Plugins::new(set));
        Ok(())
    }

    /// `info processes`: the guest's process list from the `osi_linux` plugin.
    pub fn info_processes(&self) -> Result<String, String> {
        let osi = self
            .plugins
            .as_ref()
            .and_then(|p| p.set.get::<ailuro_osi::OsiLinux>())
            .ok_or("info processes needs the osi_linux plugin (-panda osi_linux)")?;
        let view = self.cpu.observer_view();
        Ok(osi.process_listing_with(&view, &self.ram).trim_end().to_string())
    }

    /// First and last instruction count of the recording being replayed.
    pub fn replay_range(&self) -> Option<(u64, u64)> {
        match &self.mode {
            Mode::Replay(rp) => Some((rp.start_icount, rp.end_icount.unwrap_or(u64::MAX))),
            _ => None,
        }
    }

    /// Names of the loaded plugins, in dispatch order.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.plugins.as_ref().map(|p| p.set.names()).unwrap_or_default()
    }

    fn finish_plugins(&mut self, stop: Stop, host: &mut dyn Host) -> Stop {
        let Some(pl) = self.plugins.as_mut() else { return stop };
        match pl.finish(&self.cpu, &self.ram) {
            Ok(lines) => {
                for l in lines {
                    host.message(&l);
                }
                stop
            }
            Err(e) => match stop {
                Stop::Divergence(_) | Stop::Error(_) => {
                    host.message(&format!("plugin error: {e}"));
                    stop
                }
                _ => Stop::Error(e),
            },
        }
    }

    /// Plugins asked to stop (or failed) during the last slice.
    fn plugin_stop(&mut self) -> Option<Stop> {
        match self.plugins.as_mut()?.take_stop()? {
            Ok(reason) => Some(Stop::PluginStop(format!("{reason} (at instruction {})", self.cpu.icount()))),
            Err(e) => Some(Stop::Error(e)),
        }
    }

    fn run_inner(&mut self, host: &mut dyn Host) -> Stop {
        self.pace = (Instant::now(), self.virtual_now());
        // What the log reader noticed but could work around (e.g. bytes after the trailer).
        if let Mode::Replay(rp) = &self.mode {
            for w in rp.reader.warnings() {
                host.message(&format!("warning: {w}"));
            }
        }
        if let Some(pl) = self.plugins.as_mut() {
            if let Err(e) = pl.ensure_started(&self.cpu, &self.ram) {
                return Stop::Error(e);
            }
        }
        loop {
            if let Some(stop) = self.pending_stop.take() {
                return stop;
            }
            // The host could not deliver output (console to a full disk or a closed pipe): end
            // the run as an error, finishing a recording in progress so that nothing is lost.
            if let Some(e) = host.take_failure() {
                self.finish_recording_if_any(ailuro_rr::EndReason::Error, host);
                return Stop::Error(e);
            }
            // Host events: cheap poll while running, blocking wait while paused.
            let timeout = if self.paused { None } else { Some(Duration::ZERO) };
            match host.next_event(timeout) {
                Some(ev) => {
                    self.handle_host_event(ev, host);
                    continue;
                }
                None if self.paused => {
                    // No event source left and nothing can resume us.
                    self.finish_recording_if_any(ailuro_rr::EndReason::Quit, host);
                    return Stop::Quit;
                }
                None => {}
            }
            let step = match &mut self.mode {
                Mode::Live(_) => self.step_live(host),
                Mode::Replay(_) => self.step_replay(host),
                Mode::Dead => {
                    self.paused = true;
                    None
                }
            };
            let step = step.or_else(|| self.plugin_stop());
            if let Some(stop) = step {
                if matches!(self.mode, Mode::Replay(_)) {
                    host.replay_done();
                    self.mode = Mode::Dead;
                }
                return stop;
            }
        }
    }

    fn virtual_now(&self) -> u64 {
        match &self.mode {
            Mode::Live(l) => l.clock.now(self.cpu.icount()),
            _ => 0,
        }
    }

    fn flush_console(&mut self, host: &mut dyn Host) {
        if !self.console.is_empty() {
            host.console_output(&self.console);
            self.console.clear();
        }
        if !self.debug_out.is_empty() {
            host.debugcon_output(&self.debug_out);
            self.debug_out.clear();
        }
    }

    /// One slice of live execution. Returns `Some` when the run must end.
    fn step_live(&mut self, host: &mut dyn Host) -> Option<Stop> {
        let Mode::Live(live) = &mut self.mode else { unreachable!("step_live on a live machine") };
        let icount = self.cpu.icount();
        let now = live.clock.now(icount);
        live.board.advance_to(now);

        let debug = live.board.take_debugcon_output();
        if !debug.is_empty() {
            host.debugcon_output(&debug);
        }

        let out = live.board.take_serial_output();
        if !out.is_empty() {
            host.console_output(&out);
            if let Some(line) = self.watch_console(&out) {
                let msg = format!("guest kernel panic at instruction {icount}: {line}");
                host.message(&msg);
                if self.config.no_reboot {
                    self.finish_recording_if_any(ailuro_rr::EndReason::Error, host);
                    return Some(Stop::Shutdown(msg));
                }
            }
        }
        let Mode::Live(live) = &mut self.mode else { unreachable!() };
        // The first request wins: each of them ends or resets the machine.
        if let Some(req) = live.board.take_requests().into_iter().next() {
            match req {
                BoardRequest::DebugExit(status) => {
                    self.finish_recording_if_any(ailuro_rr::EndReason::GuestExit(status), host);
                    return Some(Stop::GuestExit(status));
                }
                BoardRequest::PowerOff => {
                    self.finish_recording_if_any(ailuro_rr::EndReason::PowerOff, host);
                    return Some(Stop::PowerOff);
                }
                BoardRequest::Reset => return self.guest_reset("the guest requested a reset", false, host),
            }
        }
        let Mode::Live(live) = &mut self.mode else { unreachable!() };

        if let Some(rec) = live.recorder.as_mut() {
            if let Some(e) = rec.error.take() {
                let msg = format!("recording stopped: cannot write the nondet log: {e}");
                live.recorder = None;
                return Some(Stop::Error(msg));
            }
            if rec.last_flush.elapsed() >= Duration::from_secs(1) {
                rec.last_flush = Instant::now();
                if let Err(e) = rec.writer.flush() {
                    rec.error = Some(e);
                }
            }
            if icount >= rec.next_checkpoint {
                let mut cpu_hash = [0u8; 16];
                cpu_hash.copy_from_slice(&self.cpu.state_hash()[..16]);
                rec.log(icount, Event::Checkpoint { pc: self.cpu.pc(), cpu_hash });
                rec.next_checkpoint = icount + CHECKPOINT_INTERVAL;
            }
        }
        let level = live.board.intr_level();
        if level != self.cpu.intr() {
            self.cpu.set_intr(level);
            if let Some(rec) = live.recorder.as_mut() {
                rec.log(icount, Event::IrqLine { line: 0, level });
            }
        }
        // NMI (an NMI IPI through the local APIC, or an IOAPIC entry in NMI delivery mode): an
        // edge, latched by the CPU. Logged as line 1 rising so that the replay raises it before
        // the same instruction.
        if live.board.take_nmi() {
            self.cpu.raise_nmi();
            if let Some(rec) = live.recorder.as_mut() {
                rec.log(icount, Event::IrqLine { line: NMI_LINE, level: true });
            }
        }

        let deadline = live.board.next_deadline_ns();
        let mut stop_at = icount + SLICE;
        if let Some(d) = deadline {
            stop_at = stop_at.min(live.clock.icount_at(d).max(icount + 1));
        }
        if let Some(rec) = &live.recorder {
            stop_at = stop_at.min(rec.next_checkpoint.max(icount + 1));
        }
        let exit = {
            let mut p = LivePlatform {
                board: &mut live.board,
                clock: &live.clock,
                recorder: live.recorder.as_mut(),
                tap: &mut self.tap,
            };
            match self.plugins.as_mut() {
                Some(pl) => pl.run(&mut self.cpu, &mut self.ram, &mut p, stop_at),
                None => self.cpu.run(&mut self.ram, &mut p, stop_at),
            }
        };
        match exit {
            RunExit::Limit | RunExit::Platform => None,
            RunExit::Halted => {
                if self.cpu.icount() != icount {
                    return None; // HLT just retired: re-evaluate the interrupt line first
                }
                // Idle: nothing can wake the CPU before the next device deadline.
                let Mode::Live(live) = &mut self.mode else { unreachable!() };
                match deadline {
                    Some(d) if d > now => {
                        if self.opts.sleep {
                            let host_target = self.pace.0 + Duration::from_nanos(d.saturating_sub(self.pace.1));
                            let wait = host_target.saturating_duration_since(Instant::now());
                            if !wait.is_zero() {
                                if let Some(ev) = host.next_event(Some(wait)) {
                                    self.handle_host_event(ev, host);
                                    return None;
                                }
                            }
                        }
                        let Mode::Live(live) = &mut self.mode else { unreachable!() };
                        live.clock.jump_to(d, icount);
                        if let Some(rec) = live.recorder.as_mut() {
                            rec.log(icount, Event::Clock { now_ns: live.clock.now(icount) });
                        }
                        None
                    }
                    Some(_) => None,
                    None => {
                        let _ = live;
                        // Only host input (or the monitor) can change anything now.
                        match host.next_event(None) {
                            Some(ev) => {
                                self.handle_host_event(ev, host);
                                None
                            }
                            None => {
                                host.message("the guest is halted and nothing can wake it; stopping");
                                self.finish_recording_if_any(ailuro_rr::EndReason::Quit, host);
                                Some(Stop::Quit)
                            }
                        }
                    }
                }
            }
            RunExit::Shutdown { reason } => self.guest_reset(&format!("CPU shutdown: {reason}"), true, host),
        }
    }

    /// Follow the console line by line; returns a Linux kernel panic line when one is complete.
    /// (A panicking kernel either spins forever or, with `panic=N`, resets like a clean reboot;
    /// its console line is the only sign. With `-no-reboot` the run then ends with status 2.)
    fn watch_console(&mut self, out: &[u8]) -> Option<String> {
        let mut found = None;
        for &b in out {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.console_line).trim_end().to_string();
                let body = match line.strip_prefix('[') {
                    Some(rest) => rest.split_once("] ").map_or("", |(_, t)| t),
                    None => line.as_str(),
                };
                if body.starts_with("Kernel panic - not syncing") {
                    found.get_or_insert(line.clone());
                }
                self.console_line.clear();
            } else if self.console_line.len() < 512 {
                self.console_line.push(b);
            }
        }
        found
    }

    fn guest_reset(&mut self, why: &str, triple: bool, host: &mut dyn Host) -> Option<Stop> {
        let at = self.cpu.icount();
        // A triple fault ends the recording on an instruction that did not retire; the replay
        // must know that to reproduce the shutdown before comparing the final state.
        let reason = if triple { ailuro_rr::EndReason::Shutdown } else { ailuro_rr::EndReason::Reset };
        self.finish_recording_if_any(reason, host);
        if self.config.no_reboot || (self.boot.is_none() && self.devices.bios.is_none()) {
            host.message(&format!("{why} at instruction {at}; exiting (-no-reboot)"));
            let why = format!("{why} at instruction {at}");
            return Some(if triple { Stop::Shutdown(why) } else { Stop::Reboot(why) });
        }
        // A machine that shuts down again without retiring one instruction since its last reset
        // would reset forever (e.g. firmware whose first instruction cannot execute): stop.
        if triple && self.reset_at == Some(at) {
            let why = format!("{why} at instruction {at}, again right after a reset; stopping");
            host.message(&why);
            return Some(Stop::Shutdown(why));
        }
        self.reset_at = Some(at);
        host.message(&format!("{why} at instruction {at}; resetting the machine"));
        self.cpu.reset();
        self.ram.as_mut_slice().fill(0);
        let board = PcBoard::with_devices(
            PcConfig { ram_size: self.config.ram_size, rtc_base_unix: self.config.rtc_base_unix },
            &self.devices,
        );
        self.mode =
            Mode::Live(Box::new(Live { board, clock: VirtualClock::new(0, self.cpu.icount()), recorder: None }));
        self.tap = ConsoleTap::default();
        if let Err(e) = self.load_boot_image() {
            return Some(Stop::Error(e));
        }
        None
    }

    /// One slice of replay. Returns `Some` when the replay ends.
    fn step_replay(&mut self, host: &mut dyn Host) -> Option<Stop> {
        let Mode::Replay(rp) = &mut self.mode else { unreachable!("step_replay on a replaying machine") };
        if let Err(e) = rp.fill() {
            return Some(Stop::Error(e));
        }
        let icount = self.cpu.icount();
        let pc = self.cpu.pc();
        if let Some(stop) = self.cut_begin_if_due() {
            return Some(stop);
        }
        let Mode::Replay(rp) = &mut self.mode else { unreachable!() };
        // Apply every asynchronous entry due before this instruction.
        // A synchronous entry logged at this same instruction count comes first: it was consumed
        // between two asynchronous entries (e.g. the interrupt acknowledge between the line going
        // up and down), so the CPU must run (deliver the interrupt) before the next one applies.
        while rp.next_async.as_ref().is_some_and(|a| a.icount <= icount) {
            if let Some(s) = rp.queue.entries.front() {
                if s.icount >= icount {
                    break;
                }
                return Some(Stop::Divergence(Divergence {
                    icount,
                    pc,
                    expected: describe(s),
                    found: "execution went past it without performing it".into(),
                }));
            }
            let a = rp.next_async.take().expect("checked");
            if a.icount < icount {
                return Some(Stop::Divergence(Divergence {
                    icount,
                    pc,
                    expected: describe(&a),
                    found: "the replay is already past that instruction".into(),
                }));
            }
            rp.async_stats.add(&a.event);
            if let Some(r) = rp.cut.as_mut().and_then(|c| c.recorder.as_mut()) {
                r.log(a.icount, a.event.clone());
            }
            match a.event {
                Event::IrqLine { line: 0, level } => self.cpu.set_intr(level),
                Event::IrqLine { line: NMI_LINE, level: true } => self.cpu.raise_nmi(),
                Event::IrqLine { line, .. } => {
                    return Some(Stop::Error(format!("interrupt line {line} is not supported on this machine")));
                }
                Event::Dma { addr, ref data } => {
                    if let Err(e) = self.ram.write(addr, data) {
                        return Some(Stop::Error(format!("DMA entry at instruction {}: {e}", a.icount)));
                    }
                    self.cpu.invalidate_code(addr, data.len() as u64);
                    if let Some(pl) = self.plugins.as_mut() {
                        pl.dma(&self.cpu, &self.ram, addr, data);
                    }
                }
                Event::Checkpoint { pc: want_pc, cpu_hash } => {
                    let h = self.cpu.state_hash();
                    if want_pc != pc || h[..16] != cpu_hash {
                        return Some(Stop::Divergence(Divergence {
                            icount,
                            pc,
                            expected: format!("checkpoint: pc {want_pc:#x}, CPU state hash {}", hex(&cpu_hash)),
                            found: format!("pc {pc:#x}, CPU state hash {}", hex(&h[..16])),
                        }));
                    }
                }
                Event::Reset => self.cpu.reset(),
                Event::HostEvent { .. } => {}
                Event::Clock { now_ns } => match rp.clock.as_mut() {
                    Some(c) => c.jump_to(now_ns, a.icount),
                    None => return Some(Stop::Error("a version-1 log contains a Clock entry".into())),
                },
                _ => unreachable!("synchronous entries are queued"),
            }
            if let Err(e) = rp.fill() {
                return Some(Stop::Error(e));
            }
        }

        if let Some(stop) = self.cut_end_if_due() {
            return Some(stop);
        }
        let Mode::Replay(rp) = &mut self.mode else { unreachable!() };
        // The end of the recording?
        let total = rp.end_icount.map(|e| e - rp.start_icount);
        host.replay_progress(icount - rp.start_icount, total);
        // A recording that ended in a CPU shutdown ends on the faulting instruction, which did not
        // retire: run it once more and expect the shutdown before the final comparison.
        let shutdown_due = rp.end_reason == Some(ailuro_rr::EndReason::Shutdown) && !rp.shutdown_reproduced;
        match rp.end_icount {
            Some(end) if icount >= end && rp.next_async.is_none() && !shutdown_due => {
                return Some(self.finish_replay());
            }
            Some(end) if shutdown_due && icount > end => {
                return Some(Stop::Divergence(Divergence {
                    icount,
                    pc,
                    expected: format!("a CPU shutdown (triple fault) at instruction {end}, where the recording ended"),
                    found: "the instruction retired".into(),
                }));
            }
            None if rp.eof && rp.next_async.is_none() && rp.queue.entries.is_empty() => {
                return Some(Stop::Divergence(Divergence {
                    icount,
                    pc,
                    expected: "more of the recording (its log has no trailer: the recording was cut short)".into(),
                    found: "the end of the log's last complete chunk".into(),
                }));
            }
            _ => {}
        }

        let mut stop_at = icount + SLICE;
        if let Some(a) = &rp.next_async {
            // Equal only when synchronous entries at this count must be consumed first; the CPU
            // returns right after a delivery, so one more instruction is the most it can run.
            stop_at = stop_at.min(a.icount.max(icount + 1));
        }
        if let Some(c) = &rp.cut {
            stop_at = stop_at.min(if c.recorder.is_none() { c.start } else { c.end }.max(icount + 1));
        }
        if let Some(end) = rp.end_icount {
            stop_at = stop_at.min(if shutdown_due && icount >= end { end + 1 } else { end });
        } else if rp.eof && rp.next_async.is_none() {
            // Incomplete log: execute up to its last synchronous entry, then report.
            if let Some(last) = rp.queue.entries.back() {
                stop_at = stop_at.min(last.icount + 1);
            }
        }
        let exit = self.run_replay_cpu(stop_at);
        self.flush_console(host);
        let Mode::Replay(rp) = &mut self.mode else { unreachable!() };
        if let Some(d) = rp.queue.divergence.take() {
            return Some(Stop::Divergence(d));
        }
        let now = self.cpu.icount();
        match exit {
            RunExit::Limit | RunExit::Platform => None,
            RunExit::Halted if now != icount => None,
            RunExit::Halted => {
                let expected = match &rp.next_async {
                    Some(a) => describe(a),
                    None => match rp.end_icount {
                        Some(end) => format!("execution to continue to instruction {end}"),
                        None => "more of the recording".into(),
                    },
                };
                Some(Stop::Divergence(Divergence {
                    icount: now,
                    pc: self.cpu.pc(),
                    expected,
                    found: "the CPU halted with nothing to wake it".into(),
                }))
            }
            RunExit::Shutdown { reason } => {
                if rp.end_icount == Some(now) {
                    rp.shutdown_reproduced = true;
                    None
                } else {
                    Some(Stop::Divergence(Divergence {
                        icount: now,
                        pc: self.cpu.pc(),
                        expected: "the recording to continue".into(),
                        found: format!("CPU shutdown ({reason})"),
                    }))
                }
            }
        }
    }

    /// Cut a recording `[start, end]` out of this replay (the `scissors` plugin).
    pub fn set_cut(&mut self, start: u64, end: u64, name: &Path, overwrite: bool) -> Result<(), String> {
        let Mode::Replay(rp) = &mut self.mode else {
            return Err("scissors: works only on a replay (-replay NAME)".into());
        };
        let last = rp.end_icount.unwrap_or(u64::MAX);
        if start < rp.start_icount || start >= end || end > last {
            return Err(format!(
                "scissors: the range [{start}, {end}] is not inside the recording [{}, {}] (start < end)",
                rp.start_icount, last
            ));
        }
        if !overwrite {
            let (snp, log) = ailuro_rr::recording_paths(name);
            if snp.exists() || log.exists() {
                return Err(format!(
                    "scissors: recording {} already exists; refusing to overwrite it (add overwrite=true)",
                    name.display()
                ));
            }
        }
        rp.cut = Some(Cut { start, end, name: name.to_path_buf(), overwrite, recorder: None });
        Ok(())
    }

    /// At the cut's start: write the new recording's snapshot and open its log.
    fn cut_begin_if_due(&mut self) -> Option<Stop> {
        let Mode::Replay(rp) = &mut self.mode else { return None };
        let c = rp.cut.as_mut()?;
        if c.recorder.is_some() || self.cpu.icount() < c.start {
            return None;
        }
        if self.cpu.icount() > c.start {
            return Some(Stop::Error(format!("scissors: the replay passed instruction {} unnoticed", c.start)));
        }
        match rrfiles::create_recording(
            &c.name,
            c.overwrite,
            &self.config,
            &self.cpu,
            &self.ram,
            &rp.devices,
            &self.tap,
            u64::MAX,
        ) {
            Ok(r) => {
                c.recorder = Some(r);
                None
            }
            Err(e) => Some(Stop::Error(format!("scissors: {e}"))),
        }
    }

    /// At the cut's end: finish the new recording and end the replay.
    fn cut_end_if_due(&mut self) -> Option<Stop> {
        let Mode::Replay(rp) = &self.mode else { return None };
        let c = rp.cut.as_ref()?;
        if c.recorder.is_none() || self.cpu.icount() < c.end {
            return None;
        }
        let hash = self.state_hash();
        let Mode::Replay(rp) = &mut self.mode else { return None };
        let c = rp.cut.as_mut()?;
        let rec = c.recorder.take().expect("checked");
        let (start, end) = (c.start, c.end);
        rp.cut = None;
        Some(match rrfiles::finish_recording(rec, end, hash, ailuro_rr::EndReason::EndRecord) {
            Ok(msg) => Stop::PluginStop(format!("scissors: {msg} (cut [{start}, {end}])")),
            Err(e) => Stop::Error(format!("scissors: {e}")),
        })
    }

    fn run_replay_cpu(&mut self, stop_at: u64) -> RunExit {
        let Mode::Replay(rp) = &mut self.mode else { unreachable!() };
        let relog = rp.cut.as_mut().and_then(|c| c.recorder.as_mut());
        let mut p = ReplayPlatform {
            queue: &mut rp.queue,
            tap: &mut self.tap,
            console: &mut self.console,
            relog,
            clock: rp.clock.as_ref(),
            debugcon: rp.debugcon,
            debug_out: &mut self.debug_out,
        };
        match self.plugins.as_mut() {
            Some(pl) => pl.run(&mut self.cpu, &mut self.ram, &mut p, stop_at),
            None => self.cpu.run(&mut self.ram, &mut p, stop_at),
        }
    }

    fn finish_replay(&mut self) -> Stop {
        let hash = self.state_hash();
        let Mode::Replay(rp) = &mut self.mode else { unreachable!() };
        let icount = self.cpu.icount();
        if let Some(s) = rp.queue.entries.front() {
            return Stop::Divergence(Divergence {
                icount,
                pc: self.cpu.pc(),
                expected: describe(s),
                found: "the end of the recording".into(),
            });
        }
        if let Some(want) = rp.final_hash {
            if want != hash {
                return Stop::Divergence(Divergence {
                    icount,
                    pc: self.cpu.pc(),
                    expected: format!("final CPU+RAM state hash {}", hex(&want)),
                    found: format!("state hash {}", hex(&hash)),
                });
            }
        }
        let mut stats = rp.queue.stats.clone();
        for k in 0..stats.count.len() {
            stats.count[k] += rp.async_stats.count[k];
            stats.bytes[k] += rp.async_stats.bytes[k];
        }
        // Exact encoded sizes come from the log's own statistics.
        if let Some(t) = rp.reader.trailer() {
            for ks in &t.kind_stats {
                if let Some(b) = stats.bytes.get_mut(ks.kind as usize) {
                    *b = ks.bytes;
                }
            }
        }
        Stop::ReplayFinished(Box::new(ReplaySummary {
            name: rp.name.clone(),
            instructions: icount - rp.start_icount,
            seconds: rp.started.elapsed().as_secs_f64(),
            stats,
            final_hash: hash,
            log_bytes: std::fs::metadata(ailuro_rr::recording_paths(&rp.name).1).map(|m| m.len()).unwrap_or(0),
            end_reason: rp.end_reason,
            engine: self.cpu.engine(),
            jit: self.cpu.jit_stats(),
        }))
    }

    fn handle_host_event(&mut self, ev: HostEvent, host: &mut dyn Host) {
        match ev {
            HostEvent::SerialInput(bytes) => {
                if let Mode::Live(live) = &mut self.mode {
                    live.board.serial_input(&bytes);
                }
            }
            HostEvent::SerialInputClosed => {}
            HostEvent::Terminate(why) => {
                let at = self.cpu.icount();
                let what = match &self.mode {
                    Mode::Replay(rp) => format!(
                        "{why}; replay of {} interrupted at instruction {} of {}",
                        rp.name.display(),
                        at - rp.start_icount,
                        rp.end_icount.map(|e| (e - rp.start_icount).to_string()).unwrap_or_else(|| "?".into())
                    ),
                    _ => format!("{why} at instruction {at}"),
                };
                host.message(&what);
                self.finish_recording_if_any(ailuro_rr::EndReason::Quit, host);
                self.request_stop(Stop::Terminated(what));
            }
            HostEvent::Command { line, reply } => {
                let text = crate::monitor::execute(self, &line, host);
                if let Some(r) = reply {
                    let _ = r.send(text);
                } else if !text.is_empty() {
                    host.message(&text);
                }
            }
        }
    }

    /// Pause or resume (monitor `stop`/`cont`).
    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            self.pace = (Instant::now(), self.virtual_now());
        }
        self.paused = paused;
    }

    /// Whether the machine is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Ask `run` to return `stop` at the next slice boundary.
    pub fn request_stop(&mut self, stop: Stop) {
        self.pending_stop = Some(stop);
    }

    /// End a replay in progress early (monitor `end_replay`).
    pub fn end_replay(&mut self) -> Result<String, String> {
        let Mode::Replay(rp) = &self.mode else { return Err("end_replay: no replay in progress".into()) };
        let msg = format!(
            "replay of {} ended at instruction {} of {}; the machine is stopped (a replay cannot go live)",
            rp.name.display(),
            self.cpu.icount() - rp.start_icount,
            rp.end_icount.map(|e| (e - rp.start_icount).to_string()).unwrap_or_else(|| "?".into())
        );
        self.mode = Mode::Dead;
        self.paused = true;
        Ok(msg)
    }

    /// One-line description of the record/replay state (for `info status`).
    pub fn rr_status(&self) -> String {
        match &self.mode {
            Mode::Live(l) => match &l.recorder {
                Some(r) => format!(
                    "recording {} ({} instructions so far)",
                    r.name.display(),
                    self.cpu.icount() - r.start_icount
                ),
                None => "live (not recording)".into(),
            },
            Mode::Replay(r) => format!(
                "replaying {} (instruction {} of {})",
                r.name.display(),
                self.cpu.icount() - r.start_icount,
                r.end_icount.map(|e| (e - r.start_icount).to_string()).unwrap_or_else(|| "?".into())
            ),
            Mode::Dead => "replay ended; machine stopped".into(),
        }
    }
}

fn replay_state(name: &Path, r: rrfiles::OpenedReplay, ram: &mut GuestRam) -> Result<Replay, String> {
    let (board, clock) = device_state_from(&r.devices)?;
    // The firmware ROM travels in the board state; the CPU fetches from it in replay too.
    map_firmware(ram, &board)?;
    let clock = if r.reader.version() >= 2 { Some(clock) } else { None };
    let debugcon = board.debugcon().map(|d| d.port);
    let mut rp = Replay {
        name: name.to_path_buf(),
        reader: r.reader,
        start_icount: r.start_icount,
        end_icount: r.end_icount,
        final_hash: r.final_hash,
        end_reason: r.end_reason,
        shutdown_reproduced: false,
        queue: SyncQueue { entries: VecDeque::new(), divergence: None, stats: EventStats::default() },
        next_async: None,
        eof: false,
        started: Instant::now(),
        async_stats: EventStats::default(),
        clock,
        devices: r.devices,
        cut: None,
        debugcon,
    };
    rp.fill()?;
    Ok(rp)
}

/// Map the board's firmware ROM (`-bios`), if any, read-only below 4 GiB in `ram`, where the CPU
/// fetches and reads it directly (QEMU maps it as ROM memory too).
fn map_firmware(ram: &mut GuestRam, board: &PcBoard) -> Result<(), String> {
    if let Some(fw) = board.firmware() {
        ram.map_rom(fw.high_base(), fw.bytes().into())
            .map_err(|e| format!("cannot map the firmware below 4 GiB: {e}"))?;
    }
    Ok(())
}

pub(crate) fn device_state_from(bytes: &[u8]) -> Result<(PcBoard, VirtualClock), String> {
    let d: DeviceState = postcard::from_bytes(bytes).map_err(|e| format!("corrupt device state in snapshot: {e}"))?;
    let board = PcBoard::load_state(&d.board).map_err(|e| format!("corrupt board state in snapshot: {e}"))?;
    Ok((board, d.clock))
}
