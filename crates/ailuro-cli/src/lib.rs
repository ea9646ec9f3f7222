//! The `ailuro-system-*` front end: QEMU-style options, serial and monitor backends, and the
//! driver that runs a [`Machine`] and turns how it stopped into an exit status.

pub mod options;
mod tty;

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::thread;
use std::time::Duration;

use ailuro_machine::machine::PcDevices;
use ailuro_machine::{BootImage, GuestArch, Host, HostEvent, Machine, MachineConfig, RunOptions, Stop};
use ailuro_toolio::say;

use options::{DebugconSpec, MonitorSpec, SerialSpec};

/// Prompt printed by the monitor.
pub const PROMPT: &str = "(ailuro) ";
const DEFAULT_RAM: u64 = 128 << 20;

/// Run the emulator for `arch` with the process's arguments; returns the exit status.
pub fn main_for(arch: GuestArch) -> i32 {
    let prog = format!("ailuro-system-{}", arch.name());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&prog, arch, &args) {
        Ok(status) => status,
        Err(e) => {
            say(&format!("{prog}: {e}"));
            1
        }
    }
}

/// Bytes to stdout for the interactive monitor/console threads, ignoring errors (the run loop
/// learns about a broken console from the console writer itself).
fn out(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(bytes).and_then(|()| o.flush());
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} '{}': {e}", path.display()))
}

fn host_unix_time() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn run(prog: &str, arch: GuestArch, args: &[String]) -> Result<i32, String> {
    let o = options::parse(args)?;
    if o.help {
        return print_stdout(&format!("{}\n", options::usage(prog)));
    }
    if o.version {
        return print_stdout(&format!("{prog} {} (Ailuro)\n", env!("CARGO_PKG_VERSION")));
    }
    if o.plugins.iter().any(|v| v == "help" || v == "?") {
        return print_stdout(&plugin_help());
    }
    let serial = o.serial.clone().unwrap_or(if o.nographic && o.monitor.is_none() {
        SerialSpec::MonStdio
    } else {
        SerialSpec::Stdio
    });
    let monitor = o.monitor.clone().unwrap_or(MonitorSpec::None);
    if monitor == MonitorSpec::Stdio && matches!(serial, SerialSpec::Stdio | SerialSpec::MonStdio) {
        return Err("-monitor stdio and -serial stdio cannot share stdio; use -serial mon:stdio, or put one \
                    of them elsewhere"
            .into());
    }
    if o.start_paused && monitor == MonitorSpec::None && serial != SerialSpec::MonStdio {
        return Err("-S starts the machine paused, but there is no monitor to continue it; add -monitor stdio, \
                    -monitor unix:PATH,server,nowait or -serial mon:stdio (or leave out -S)"
            .into());
    }
    let run_opts = RunOptions {
        sleep: o.sleep.unwrap_or(true),
        start_paused: o.start_paused,
        engine: o.engine.unwrap_or_default(),
        jit_hot: o.jit_hot,
    };

    let machine = if let Some(name) = &o.replay {
        for (given, what) in [
            (o.kernel.is_some(), "-kernel"),
            (o.initrd.is_some(), "-initrd"),
            (o.append.is_some(), "-append"),
            (o.record.is_some(), "-record"),
            (o.rtc_base.is_some(), "-rtc"),
            // The recording's board state says which devices the guest had.
            (o.pc_testdev, "-device pc-testdev"),
            // The firmware is in the recording's snapshot.
            (o.bios.is_some(), "-bios"),
            (o.debugcon_iobase.is_some(), "-global isa-debugcon.iobase"),
        ] {
            if given {
                return Err(format!("{what} conflicts with -replay: a replay runs from its recording alone"));
            }
        }
        let m = Machine::new_replay(name, run_opts, arch)?;
        if let Some(size) = o.ram_size {
            if size != m.config().ram_size {
                return Err(format!(
                    "-m {} MiB conflicts with the recording, which was made with {} MiB (-replay needs no -m)",
                    size >> 20,
                    m.config().ram_size >> 20
                ));
            }
        }
        m
    } else {
        // As QEMU: -initrd and -append belong to -kernel.
        if o.kernel.is_none() {
            for (given, what) in [(o.initrd.is_some(), "-initrd"), (o.append.is_some(), "-append")] {
                if given {
                    return Err(format!("{what} is only allowed with -kernel"));
                }
            }
        }
        let bios = match &o.bios {
            Some(path) => {
                let bytes = read_file("firmware (-bios)", path)?;
                Some(ailuro_pc::FirmwareImage::new(bytes).map_err(|e| format!("-bios {}: {e}", path.display()))?)
            }
            None => None,
        };
        if bios.is_some() && o.kernel.is_some() {
            // QEMU would pass the kernel to the firmware through fw_cfg and its linuxboot option
            // ROM; this board has neither, so say so rather than ignore one of the two.
            return Err("-bios and -kernel cannot be combined here (QEMU hands the kernel to the firmware \
                        through fw_cfg and its linuxboot option ROM, which this machine lacks): boot the \
                        kernel directly without -bios, or run the firmware without -kernel"
                .into());
        }
        let debugcon = o.debugcon.as_ref().map(|_| o.debugcon_iobase.unwrap_or(ailuro_pc::DEBUGCON_DEFAULT_PORT));
        let ram_size = o.ram_size.unwrap_or(DEFAULT_RAM);
        if let Some(rom) = bios {
            let config = MachineConfig {
                arch,
                ram_size,
                rtc_base_unix: o.rtc_base.unwrap_or_else(host_unix_time),
                cmdline: String::new(),
                no_reboot: o.no_reboot,
            };
            let devices = PcDevices { cmdline: String::new(), pc_testdev: o.pc_testdev, bios: Some(rom), debugcon };
            let mut m = Machine::new_live_with_devices(config, None, run_opts, devices)?;
            if let Some((name, overwrite)) = &o.record {
                m.begin_record(name, *overwrite)?;
            }
            return finish_run(prog, &o, m, &serial, &monitor);
        }
        let kernel_path = o.kernel.as_ref().ok_or("no -kernel or -bios given: nothing to run")?;
        let kernel = read_file("kernel", kernel_path)?;
        let mut modules = Vec::new();
        if let Some(list) = &o.initrd {
            // Each module's string (its command line) is the whole spec, file name included,
            // with `,,` unescaped: what QEMU's multiboot loader passes.
            for spec in options::split_module_list(list)? {
                let data = read_file("initrd", Path::new(options::module_file(&spec)))?;
                modules.push((spec, data));
            }
        }
        let append = o.append.clone().unwrap_or_default();
        let config = MachineConfig {
            arch,
            ram_size: o.ram_size.unwrap_or(DEFAULT_RAM),
            rtc_base_unix: o.rtc_base.unwrap_or_else(host_unix_time),
            // The path as given on the command line (QEMU passes its argument unchanged).
            cmdline: MachineConfig::guest_cmdline(&kernel, &kernel_path.to_string_lossy(), &append),
            no_reboot: o.no_reboot,
        };
        let devices = PcDevices { cmdline: append, pc_testdev: o.pc_testdev, bios: None, debugcon };
        let mut m = Machine::new_live_with_devices(config, Some(BootImage { kernel, modules }), run_opts, devices)?;
        if let Some((name, overwrite)) = &o.record {
            m.begin_record(name, *overwrite)?;
        }
        m
    };
    finish_run(prog, &o, machine, &serial, &monitor)
}

/// Load plugins, run `machine` with the CLI's host and turn how it stopped into an exit status.
fn finish_run(
    prog: &str,
    o: &options::Options,
    mut machine: Machine,
    serial: &SerialSpec,
    monitor: &MonitorSpec,
) -> Result<i32, String> {
    if !o.plugins.is_empty() {
        load_plugins(prog, o, &mut machine)?;
    } else if o.pandalog.is_some() {
        return Err("-pandalog needs at least one -panda plugin".into());
    }

    let mut host = CliHost::start(prog, serial, monitor, o.debugcon.as_ref(), machine.is_replaying())?;
    let stop = machine.run(&mut host);
    let status = report(prog, &stop);
    match host.finish() {
        Ok(()) => Ok(status),
        Err(e) => {
            if let Some(e) = e {
                say(&format!("{prog}: {e}"));
            }
            Ok(if status == 0 { 1 } else { status })
        }
    }
}

/// Print `text` on stdout for informational options (-h, -version, -panda help): exit status 0,
/// or 1 with a message when stdout cannot take it.
fn print_stdout(text: &str) -> Result<i32, String> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map(|()| 0)
        .map_err(|e| format!("cannot write to standard output: {e}"))
}

/// Every plugin this front end can load.
fn plugin_registry() -> Vec<ailuro_plugin::PluginInfo> {
    let mut registry = ailuro_plugins::registry();
    registry.extend(ailuro_osi::registry());
    registry.push(ailuro_machine::scissors::info());
    registry.push(ailuro_machine::console_plugin::info());
    registry
}

/// `-panda help`: the plugins and their arguments.
fn plugin_help() -> String {
    let mut s = String::from("available plugins (-panda NAME:KEY=VAL,...):\n");
    for p in plugin_registry() {
        s += &format!("  {:<14} {}\n", p.name, p.about);
        for a in p.args {
            s += &format!("      {:<12} {}\n", a.key, a.help);
        }
    }
    s
}

/// `-panda` / `-pandalog`: create the plugins (every argument checked before the run starts).
fn load_plugins(prog: &str, o: &options::Options, machine: &mut Machine) -> Result<(), String> {
    let registry = plugin_registry();
    let mut specs = Vec::new();
    for v in &o.plugins {
        specs.extend(ailuro_plugin::parse_plugin_list(v).map_err(|e| format!("-panda {v}: {e}"))?);
    }
    let lcx = ailuro_plugin::LoadCx {
        recording: o.replay.clone(),
        replay_range: machine.replay_range(),
        arch: machine.config().arch.name().to_string(),
    };
    let mut set = ailuro_plugin::PluginSet::load(&registry, &specs, &lcx)?;
    if let Some(path) = &o.pandalog {
        let mut header = ailuro_plog::PlogHeader::new(format!("{prog} {}", env!("CARGO_PKG_VERSION")))
            .with("plugins", set.names().join(","));
        if let Some(r) = &o.replay {
            header = header.with("recording", r.display().to_string());
        }
        let w = ailuro_plog::PlogWriter::create(path, &header, false)
            .map_err(|e| format!("-pandalog {}: {e}", path.display()))?;
        set.set_plog(w);
    }
    machine.set_plugins(set)
}

fn report(prog: &str, stop: &Stop) -> i32 {
    match stop {
        Stop::PluginStop(why) => say(&format!("{prog}: stopped by a plugin: {why}")),
        Stop::ReplayFinished(s) => say(&s.report()),
        Stop::Divergence(d) => say(&format!("{prog}: {d}")),
        Stop::Shutdown(why) | Stop::Reboot(why) => say(&format!("{prog}: {why}")),
        Stop::Error(e) => say(&format!("{prog}: error: {e}")),
        // Already said when it happened.
        Stop::Terminated(_) => {}
        Stop::GuestExit(_) | Stop::PowerOff | Stop::Quit => {}
    }
    stop.exit_status()
}

enum Console {
    Stdout(std::io::Stdout),
    File(File),
    Null,
}

/// The CLI's [`Host`]: console to stdout/file, messages to stderr, events from input threads.
struct CliHost {
    console: Console,
    /// Where isa-debugcon output goes (`-debugcon`; discarded without it).
    debugcon: Console,
    events: Option<std::sync::mpsc::Receiver<HostEvent>>,
    progress: Option<indicatif::ProgressBar>,
    tty: Option<tty::RawMode>,
    socket: Option<PathBuf>,
    /// The first failure to write console output; ends the run (see [`Host::take_failure`]).
    failure: Option<String>,
    /// Whether `failure` was already handed to the run loop.
    failure_reported: bool,
    /// Where console output goes, for messages.
    console_name: String,
}

impl CliHost {
    fn start(
        prog: &str,
        serial: &SerialSpec,
        monitor: &MonitorSpec,
        debugcon: Option<&DebugconSpec>,
        replaying: bool,
    ) -> Result<Self, String> {
        let (tx, rx) = channel();
        spawn_signal_watcher(prog, tx.clone())?;
        let console_name = match serial {
            SerialSpec::File(p) => p.display().to_string(),
            _ => "standard output".to_string(),
        };
        let console = match serial {
            SerialSpec::Stdio | SerialSpec::MonStdio => Console::Stdout(std::io::stdout()),
            SerialSpec::File(p) => {
                Console::File(File::create(p).map_err(|e| format!("-serial file:{}: cannot create: {e}", p.display()))?)
            }
            SerialSpec::Null => Console::Null,
        };
        let debugcon = match debugcon {
            Some(DebugconSpec::Stdio) => Console::Stdout(std::io::stdout()),
            Some(DebugconSpec::File(p)) => Console::File(
                File::create(p).map_err(|e| format!("-debugcon file:{}: cannot create: {e}", p.display()))?,
            ),
            Some(DebugconSpec::Null) | None => Console::Null,
        };
        let stdin_tty = std::io::stdin().is_terminal();
        let mut raw = None;
        match (serial, monitor) {
            (SerialSpec::MonStdio, _) => {
                if stdin_tty {
                    raw = tty::RawMode::enter(false);
                }
                spawn_stdin_mux(tx.clone(), stdin_tty);
            }
            (SerialSpec::Stdio, _) => {
                if stdin_tty {
                    raw = tty::RawMode::enter(true);
                }
                spawn_stdin_serial(tx.clone());
            }
            (_, MonitorSpec::Stdio) => spawn_stdin_monitor(tx.clone()),
            _ => {}
        }
        let mut socket = None;
        if let MonitorSpec::Unix(path) = monitor {
            spawn_unix_monitor(path, tx.clone())?;
            socket = Some(path.clone());
        }
        drop(tx);
        let progress = if replaying && std::io::stderr().is_terminal() {
            let pb = indicatif::ProgressBar::new(0);
            pb.set_style(
                indicatif::ProgressStyle::with_template("replay {bar:40} {percent:>3}% {pos}/{len} insns, eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Some(pb)
        } else {
            None
        };
        Ok(CliHost {
            console,
            debugcon,
            events: Some(rx),
            progress,
            tty: raw,
            socket,
            failure: None,
            failure_reported: false,
            console_name,
        })
    }

    /// Flush and close everything; an error if console output was lost (so the exit status is
    /// not 0 when, e.g., a replayed console went to a full disk), with the message unless the run
    /// loop has already reported it.
    fn finish(&mut self) -> Result<(), Option<String>> {
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
        let flushed = match &mut self.console {
            Console::Stdout(s) => s.flush(),
            Console::File(f) => f.flush().and_then(|()| f.sync_data()),
            Console::Null => Ok(()),
        };
        if let Console::File(f) = &mut self.debugcon {
            if let Err(e) = f.flush().and_then(|()| f.sync_data()) {
                self.failure.get_or_insert_with(|| format!("cannot write the -debugcon file: {e}"));
            }
        }
        self.tty = None;
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
        if let Err(e) = flushed {
            self.failure.get_or_insert_with(|| format!("cannot write the console to {}: {e}", self.console_name));
        }
        match &self.failure {
            Some(_) if self.failure_reported => Err(None),
            Some(e) => Err(Some(e.clone())),
            None => Ok(()),
        }
    }
}

impl Host for CliHost {
    fn console_output(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        let r = match &mut self.console {
            Console::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(bytes).and_then(|()| l.flush())
            }
            Console::File(f) => f.write_all(bytes),
            Console::Null => Ok(()),
        };
        if let Err(e) = r {
            self.failure = Some(format!("cannot write the console to {}: {e}", self.console_name));
        }
    }

    fn debugcon_output(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        let r = match &mut self.debugcon {
            Console::Stdout(s) => {
                let mut l = s.lock();
                l.write_all(bytes).and_then(|()| l.flush())
            }
            Console::File(f) => f.write_all(bytes),
            Console::Null => Ok(()),
        };
        if let Err(e) = r {
            self.failure = Some(format!("cannot write the -debugcon output: {e}"));
        }
    }

    fn take_failure(&mut self) -> Option<String> {
        if self.failure_reported {
            return None;
        }
        let f = self.failure.clone()?;
        self.failure_reported = true;
        Some(f)
    }

    fn next_event(&mut self, timeout: Option<Duration>) -> Option<HostEvent> {
        let rx = self.events.as_ref()?;
        let r = match timeout {
            Some(t) if t.is_zero() => {
                rx.try_recv().map_err(|e| matches!(e, std::sync::mpsc::TryRecvError::Disconnected))
            }
            Some(t) => rx.recv_timeout(t).map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
            None => rx.recv().map_err(|_| true),
        };
        match r {
            Ok(ev) => Some(ev),
            Err(true) => {
                self.events = None;
                None
            }
            Err(false) => None,
        }
    }

    fn message(&mut self, text: &str) {
        match &self.progress {
            Some(pb) => pb.suspend(|| say(text)),
            None => say(text),
        }
    }

    fn replay_progress(&mut self, done: u64, total: Option<u64>) {
        if let Some(pb) = &self.progress {
            if let Some(t) = total {
                pb.set_length(t);
            }
            pb.set_position(done);
        }
    }

    fn replay_done(&mut self) {
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
    }
}

/// Send a monitor command and wait for its reply.
fn command(tx: &Sender<HostEvent>, line: String) -> Option<String> {
    let (rtx, rrx) = channel();
    tx.send(HostEvent::Command { line, reply: Some(rtx) }).ok()?;
    rrx.recv().ok()
}

/// Watch for SIGINT, SIGTERM and SIGHUP: the first one ends the run the way `quit` does (a
/// recording in progress is finished), with QEMU's message; a second one, if the first could
/// not end the run, terminates the process at once.
fn spawn_signal_watcher(prog: &str, tx: Sender<HostEvent>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::iterator::SignalsInfo;
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let prog = prog.to_string();
    thread::spawn(move || {
        let mut seen = false;
        for origin in signals.forever() {
            let sig = origin.signal;
            if seen {
                say(&format!("{prog}: signal {sig} again; exiting at once"));
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
            seen = true;
            let from = match origin.process {
                Some(p) => {
                    let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).unwrap_or_default();
                    let comm = comm.trim();
                    if comm.is_empty() {
                        format!(" from pid {}", p.pid)
                    } else {
                        format!(" from pid {} ({comm})", p.pid)
                    }
                }
                None => String::new(),
            };
            if tx.send(HostEvent::Terminate(format!("{prog}: terminating on signal {sig}{from}"))).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// What one read of a monitor line gave.
enum MonitorLine {
    /// A complete line (without its line ending).
    Line(String),
    /// A complete line that is not UTF-8: answered with an error, the connection stays.
    NotUtf8,
    /// End of input. A last line without its newline is dropped: a command is executed only
    /// once the user has finished typing it (a `quit` cut off by a closed connection must not
    /// quit).
    End,
}

fn read_monitor_line(r: &mut impl BufRead) -> MonitorLine {
    let mut buf = Vec::new();
    match r.read_until(b'\n', &mut buf) {
        Ok(0) | Err(_) => MonitorLine::End,
        Ok(_) if buf.last() != Some(&b'\n') => MonitorLine::End,
        Ok(_) => {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            match String::from_utf8(buf) {
                Ok(s) => MonitorLine::Line(s),
                Err(_) => MonitorLine::NotUtf8,
            }
        }
    }
}

/// Reply to a monitor line that is not UTF-8.
const NOT_UTF8: &str = "Error: the command line is not valid UTF-8; it was ignored";

fn spawn_stdin_serial(tx: Sender<HostEvent>) {
    thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(HostEvent::SerialInputClosed);
                    return;
                }
                Ok(n) => {
                    if tx.send(HostEvent::SerialInput(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// stdio shared by the serial console and the monitor, switched with Ctrl-A c as in QEMU.
fn spawn_stdin_mux(tx: Sender<HostEvent>, tty: bool) {
    thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        let mut escape = false;
        let mut monitor = false;
        let mut line = Vec::new();
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(HostEvent::SerialInputClosed);
                    return;
                }
                Ok(n) => n,
            };
            let mut serial = Vec::new();
            for &b in &buf[..n] {
                if escape {
                    escape = false;
                    match b {
                        b'x' => {
                            let _ = command(&tx, "quit".into());
                            return;
                        }
                        b'c' => {
                            monitor = !monitor;
                            if monitor {
                                out(format!("\r\n{PROMPT}").as_bytes());
                            }
                            continue;
                        }
                        0x01 => {}
                        _ => continue,
                    }
                } else if b == 0x01 {
                    escape = true;
                    continue;
                }
                if !monitor {
                    serial.push(b);
                    continue;
                }
                match b {
                    b'\r' | b'\n' => {
                        if tty {
                            out(b"\r\n");
                        }
                        let reply = match String::from_utf8(std::mem::take(&mut line)) {
                            Ok(text) => command(&tx, text),
                            Err(_) => Some(NOT_UTF8.to_string()),
                        };
                        if let Some(reply) = reply {
                            if !reply.is_empty() {
                                out(format!("{}\r\n", reply.replace('\n', "\r\n")).as_bytes());
                            }
                        }
                        out(PROMPT.as_bytes());
                    }
                    0x7f | 0x08 => {
                        if line.pop().is_some() && tty {
                            out(b"\x08 \x08");
                        }
                    }
                    _ => {
                        line.push(b);
                        if tty {
                            out(&[b]);
                        }
                    }
                }
            }
            if !serial.is_empty() && tx.send(HostEvent::SerialInput(serial)).is_err() {
                return;
            }
        }
    });
}

fn spawn_stdin_monitor(tx: Sender<HostEvent>) {
    thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        out(PROMPT.as_bytes());
        loop {
            let reply = match read_monitor_line(&mut input) {
                MonitorLine::End => return,
                MonitorLine::NotUtf8 => NOT_UTF8.to_string(),
                MonitorLine::Line(line) => match command(&tx, line) {
                    Some(reply) => reply,
                    None => return,
                },
            };
            if !reply.is_empty() {
                out(format!("{reply}\n").as_bytes());
            }
            out(PROMPT.as_bytes());
        }
    });
}

fn spawn_unix_monitor(path: &Path, tx: Sender<HostEvent>) -> Result<(), String> {
    // A stale socket from an earlier run would make bind fail; only ever remove a socket.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        } else {
            return Err(format!("-monitor unix:{}: the path exists and is not a socket", path.display()));
        }
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("-monitor unix:{}: cannot listen: {e}", path.display()))?;
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else { return };
                let _ = write!(out, "Ailuro monitor - type 'help' for more information\n{PROMPT}");
                let mut input = BufReader::new(conn);
                loop {
                    let reply = match read_monitor_line(&mut input) {
                        MonitorLine::End => break,
                        MonitorLine::NotUtf8 => NOT_UTF8.to_string(),
                        MonitorLine::Line(line) => match command(&tx, line) {
                            Some(reply) => reply,
                            None => break,
                        },
                    };
                    let text = if reply.is_empty() { String::new() } else { format!("{reply}\n") };
                    if write!(out, "{text}{PROMPT}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut r = input;
        let mut v = Vec::new();
        loop {
            match read_monitor_line(&mut r) {
                MonitorLine::Line(l) => v.push(l),
                MonitorLine::NotUtf8 => v.push("<not utf-8>".into()),
                MonitorLine::End => return v,
            }
        }
    }

    #[test]
    fn monitor_lines_need_their_newline_and_utf8() {
        assert_eq!(lines(b"info status\r\nquit"), ["info status"]);
        assert_eq!(lines(b"a\n\xff\xfe\nb\n"), ["a", "<not utf-8>", "b"]);
        assert!(lines(b"quit").is_empty());
        assert!(lines(b"").is_empty());
    }
}
