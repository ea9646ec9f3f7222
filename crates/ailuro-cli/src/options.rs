//! QEMU-style command-line options (`-m 128 -kernel FILE -serial stdio ...`).

use std::path::PathBuf;

/// Where the guest's COM1 goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialSpec {
    /// Standard input/output.
    Stdio,
    /// Standard input/output shared with the monitor (Ctrl-A c switches).
    MonStdio,
    /// Output appended to a file (created or truncated); no input.
    File(PathBuf),
    /// Discarded.
    Null,
}

/// Where QEMU's isa-debugcon output goes (`-debugcon`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebugconSpec {
    /// Standard output (shared with the console).
    Stdio,
    /// Written to a file (created or truncated).
    File(PathBuf),
    /// Discarded (the device is still there).
    Null,
}

/// Where the monitor listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorSpec {
    /// No monitor.
    None,
    /// Standard input/output.
    Stdio,
    /// A Unix socket the emulator listens on.
    Unix(PathBuf),
}

/// Everything the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// RAM size in bytes, if given.
    pub ram_size: Option<u64>,
    /// `-kernel`.
    pub kernel: Option<PathBuf>,
    /// `-initrd` (comma-separated list of module specs "FILE [args]", `,,` for a comma; see
    /// [`split_module_list`]).
    pub initrd: Option<String>,
    /// `-append`.
    pub append: Option<String>,
    /// Serial backend, if given.
    pub serial: Option<SerialSpec>,
    /// Monitor, if given.
    pub monitor: Option<MonitorSpec>,
    /// `-nographic`.
    pub nographic: bool,
    /// `-S`.
    pub start_paused: bool,
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// `-replay NAME`.
    pub replay: Option<PathBuf>,
    /// `-record NAME[,overwrite=on]`.
    pub record: Option<(PathBuf, bool)>,
    /// `-icount sleep=on|off` (None: default).
    pub sleep: Option<bool>,
    /// `-rtc base=...` as Unix seconds.
    pub rtc_base: Option<i64>,
    /// `-panda NAME:k=v,...` values, in order (each may list several plugins with `;`).
    pub plugins: Vec<String>,
    /// `-pandalog FILE`.
    pub pandalog: Option<PathBuf>,
    /// `-device pc-testdev`.
    pub pc_testdev: bool,
    /// `-bios FILE`: system firmware started at the reset vector instead of a kernel.
    pub bios: Option<PathBuf>,
    /// `-debugcon CHARDEV`: QEMU's isa-debugcon and where its output goes.
    pub debugcon: Option<DebugconSpec>,
    /// `-global isa-debugcon.iobase=N`: the debugcon's port (QEMU's default 0xe9).
    pub debugcon_iobase: Option<u16>,
    /// `-accel jit|tcg|interp`: execution engine (None: the default, the translator).
    pub engine: Option<ailuro_machine::Engine>,
    /// `-accel jit,hot=N`: dispatches of a block before it is compiled.
    pub jit_hot: Option<u16>,
    /// `-h`/`-help`.
    pub help: bool,
    /// `-version`.
    pub version: bool,
}

/// Usage text.
pub fn usage(prog: &str) -> String {
    format!(
        "usage: {prog} [options]
  -m SIZE                 guest RAM (MiB, or with M/G suffix; default 128)
  -kernel FILE            kernel to boot: multiboot ELF or Linux bzImage
  -bios FILE              system firmware (e.g. SeaBIOS's bios.bin; a multiple of 64 KiB, at most
                          16 MiB), mapped read-only below 4 GiB with its last 128 KiB also at
                          0xe0000-0xfffff; the CPU starts at the reset vector (no -kernel)
  -initrd FILE[,FILE...]  multiboot modules (each 'FILE args' may carry a command line; ',,'
                          stands for a comma)
  -append CMDLINE         kernel command line (a multiboot kernel sees 'KERNEL CMDLINE', as in
                          QEMU; also offered through fw_cfg)
  -nographic, -display none
                          no display (this emulator never has one); -nographic defaults the
                          serial port and the monitor to stdio, multiplexed (Ctrl-A c switches,
                          Ctrl-A x quits)
  -serial stdio|mon:stdio|file:PATH|null
  -debugcon stdio|file:PATH|null
                          QEMU's isa-debugcon (port 0xe9; SeaBIOS logs to 0x402: add
                          -global isa-debugcon.iobase=0x402); a replay shows the recorded
                          device's output here
  -monitor stdio|unix:PATH,server,nowait|none
  -S                      start paused (use 'cont' on the monitor)
  -accel jit|tcg|interp[,hot=N]
                          execution engine: hot code compiled to host code (jit, default; tcg is
                          accepted as its name) or the interpreter alone; a recording made with
                          either replays with either. hot=N: compile a block once it has been
                          reached N times (1-65535, default {hot})
  -no-reboot              exit instead of rebooting
  -record NAME[,overwrite=on]
                          record from the first instruction to the end of the run
  -replay NAME            replay NAME-rr-snp + NAME-rr-nondet.log (needs no other option)
  -icount sleep=on|off    idle guest time follows host time (on, default) or races ahead (off)
  -rtc base=utc|YYYY-MM-DD[THH:MM:SS]|UNIXSECONDS
                          RTC time at power-on (default: host time, recorded in the snapshot)
  -panda NAME[:KEY=VAL,...][;NAME2...]
                          load analysis plugins (repeatable; -panda help lists them)
  -pandalog FILE          write the plugins' structured output to FILE (ailuro-plog dump FILE)
  -device isa-debug-exit[,iobase=0xf4,iosize=N]
                          accepted for QEMU compatibility (always present at 0xf4)
  -device pc-testdev      QEMU's test device (ports 0xe0-0xeb, IRQ lines at 0x2000-0x2017,
                          64 KiB of memory at 0xff000000), as kvm-unit-tests use it
                          (QEMU's fw_cfg at ports 0x510/0x511 is always present, as on QEMU's pc)
  -version, -h",
        hot = ailuro_machine::DEFAULT_JIT_HOT
    )
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.strip_prefix("size=").unwrap_or(s);
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("invalid RAM size '{s}': unknown suffix '{c}'")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1 << 20),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid RAM size '{s}'"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("RAM size '{s}' is too large"))?;
    if bytes < (2 << 20) || bytes % 4096 != 0 {
        return Err(format!("invalid RAM size '{s}': at least 2 MiB, in whole 4 KiB pages"));
    }
    if bytes > (3 << 30) {
        return Err(format!("RAM size '{s}' is too large for this machine (at most 3 GiB below the PCI hole)"));
    }
    Ok(bytes)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn parse_rtc(spec: &str) -> Result<Option<i64>, String> {
    for part in spec.split(',') {
        if let Some(base) = part.strip_prefix("base=") {
            if base == "utc" || base == "localtime" {
                return Ok(None);
            }
            if let Ok(n) = base.parse::<i64>() {
                return Ok(Some(n));
            }
            let bad = || format!("invalid -rtc base '{base}' (expected utc, YYYY-MM-DD[THH:MM:SS] or Unix seconds)");
            let (date, time) = base.split_once('T').unwrap_or((base, "00:00:00"));
            let d: Vec<i64> = date.split('-').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
            let t: Vec<i64> = time.split(':').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
            if d.len() != 3 || t.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
                return Err(bad());
            }
            if !(0..24).contains(&t[0]) || !(0..60).contains(&t[1]) || !(0..60).contains(&t[2]) {
                return Err(bad());
            }
            return Ok(Some(days_from_civil(d[0], d[1], d[2]) * 86400 + t[0] * 3600 + t[1] * 60 + t[2]));
        } else if part.starts_with("clock=") || part.starts_with("driftfix=") {
            continue;
        } else {
            return Err(format!("invalid -rtc option '{part}'"));
        }
    }
    Ok(None)
}

fn parse_serial(s: &str) -> Result<SerialSpec, String> {
    Ok(match s {
        "stdio" => SerialSpec::Stdio,
        "mon:stdio" => SerialSpec::MonStdio,
        "null" | "none" => SerialSpec::Null,
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => SerialSpec::File(PathBuf::from(p)),
            _ => return Err(format!("-serial {s}: unsupported backend (stdio, mon:stdio, file:PATH, null)")),
        },
    })
}

fn parse_debugcon(s: &str) -> Result<DebugconSpec, String> {
    Ok(match s {
        "stdio" => DebugconSpec::Stdio,
        "null" => DebugconSpec::Null,
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => DebugconSpec::File(PathBuf::from(p)),
            _ => return Err(format!("-debugcon {s}: unsupported backend (stdio, file:PATH, null)")),
        },
    })
}

/// A port number in decimal or 0x-hex.
fn parse_port(s: &str) -> Option<u16> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_monitor(s: &str) -> Result<MonitorSpec, String> {
    if s == "stdio" {
        return Ok(MonitorSpec::Stdio);
    }
    if s == "none" || s == "null" {
        return Ok(MonitorSpec::None);
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        let mut parts = rest.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("-monitor {s}: missing socket path"));
        }
        let mut server = false;
        for p in parts {
            match p {
                "server" | "server=on" => server = true,
                "nowait" | "wait=off" => {}
                "wait" | "wait=on" => return Err(format!("-monitor {s}: 'wait' is not supported; use nowait")),
                _ => return Err(format!("-monitor {s}: unknown option '{p}'")),
            }
        }
        if !server {
            return Err(format!("-monitor {s}: only server sockets are supported (add ',server,nowait')"));
        }
        return Ok(MonitorSpec::Unix(PathBuf::from(path)));
    }
    Err(format!("-monitor {s}: unsupported backend (stdio, unix:PATH,server,nowait, none)"))
}

/// Parse the arguments after the program name. Options may be written with one or two dashes.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        ram_size: None,
        kernel: None,
        initrd: None,
        append: None,
        serial: None,
        monitor: None,
        nographic: false,
        start_paused: false,
        no_reboot: false,
        replay: None,
        record: None,
        sleep: None,
        rtc_base: None,
        plugins: Vec::new(),
        pandalog: None,
        pc_testdev: false,
        bios: None,
        debugcon: None,
        debugcon_iobase: None,
        engine: None,
        jit_hot: None,
        help: false,
        version: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("{arg}: unexpected argument (options start with '-'; try -h)"));
        };
        let mut value = |opt: &str| -> Result<String, String> {
            it.next().cloned().ok_or_else(|| format!("-{opt} requires an argument"))
        };
        match name {
            "m" => o.ram_size = Some(parse_size(&value(name)?)?),
            "kernel" => o.kernel = Some(PathBuf::from(value(name)?)),
            "bios" => {
                let v = value(name)?;
                if v.is_empty() {
                    return Err("-bios requires a file name".into());
                }
                o.bios = Some(PathBuf::from(v));
            }
            "debugcon" => o.debugcon = Some(parse_debugcon(&value(name)?)?),
            "global" => {
                let v = value(name)?;
                let port = v
                    .strip_prefix("isa-debugcon.iobase=")
                    .ok_or_else(|| format!("-global {v}: unsupported (isa-debugcon.iobase=N is accepted)"))?;
                o.debugcon_iobase = Some(parse_port(port).ok_or_else(|| format!("-global {v}: invalid port"))?);
            }
            "initrd" => o.initrd = Some(value(name)?),
            "append" => o.append = Some(value(name)?),
            "nographic" => o.nographic = true,
            "display" => {
                let v = value(name)?;
                if v != "none" {
                    return Err(format!("-display {v}: this emulator has no display; use -display none"));
                }
            }
            "serial" => o.serial = Some(parse_serial(&value(name)?)?),
            "monitor" => o.monitor = Some(parse_monitor(&value(name)?)?),
            "S" => o.start_paused = true,
            "accel" => {
                let v = value(name)?;
                // QEMU spells the engine `-accel NAME[,PROP=VALUE...]`.
                let (engine, props) = v.split_once(',').unwrap_or((&v, ""));
                let engine = match engine {
                    "jit" | "tcg" => ailuro_machine::Engine::Jit,
                    "interp" | "interpreter" => ailuro_machine::Engine::Interpreter,
                    _ => return Err(format!("-accel {v}: unknown engine (jit, tcg = jit, or interp)")),
                };
                for prop in props.split(',').filter(|p| !p.is_empty()) {
                    match prop.split_once('=') {
                        Some(("hot", n)) if engine == ailuro_machine::Engine::Jit => {
                            o.jit_hot = Some(n.parse::<u16>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                                format!("-accel {v}: hot={n}: expected a number of dispatches from 1 to 65535")
                            })?);
                        }
                        _ => return Err(format!("-accel {v}: unknown property {prop} (the translator takes hot=N)")),
                    }
                }
                o.engine = Some(engine);
            }
            "no-reboot" => o.no_reboot = true,
            "replay" => {
                let v = value(name)?;
                // QEMU lets a later option override an earlier one; for a recording that would
                // silently replay something else than the user may think, so refuse instead.
                if let Some(prev) = &o.replay {
                    return Err(format!(
                        "-replay given twice ('{}' and '{v}'); a run replays one recording",
                        prev.display()
                    ));
                }
                o.replay = Some(PathBuf::from(v));
            }
            "record" => {
                let v = value(name)?;
                if let Some((prev, _)) = &o.record {
                    return Err(format!(
                        "-record given twice ('{}' and '{v}'); a run records into one recording",
                        prev.display()
                    ));
                }
                let mut parts = v.split(',');
                let n = parts.next().unwrap_or_default().to_string();
                if n.is_empty() {
                    return Err("-record requires a recording name".into());
                }
                let mut overwrite = false;
                for p in parts {
                    match p {
                        "overwrite=on" | "overwrite" => overwrite = true,
                        "overwrite=off" => overwrite = false,
                        _ => return Err(format!("-record {v}: unknown option '{p}' (overwrite=on)")),
                    }
                }
                o.record = Some((PathBuf::from(n), overwrite));
            }
            "icount" => {
                let v = value(name)?;
                for p in v.split(',') {
                    match p {
                        "sleep=on" => o.sleep = Some(true),
                        "sleep=off" => o.sleep = Some(false),
                        // The instruction count is always exact here; shift has no meaning.
                        _ if p.starts_with("shift=") || p == "auto" => {}
                        _ => return Err(format!("-icount {v}: unsupported option '{p}' (sleep=on|off)")),
                    }
                }
            }
            "rtc" => o.rtc_base = parse_rtc(&value(name)?)?,
            "panda" => o.plugins.push(value(name)?),
            "pandalog" => {
                let v = value(name)?;
                if o.pandalog.is_some() {
                    return Err(format!("-pandalog given twice (second: '{v}'); plugins write one log"));
                }
                o.pandalog = Some(PathBuf::from(v));
            }
            "device" => {
                let v = value(name)?;
                let mut parts = v.split(',');
                match parts.next() {
                    Some("isa-debug-exit") => {}
                    Some("pc-testdev") => {
                        if let Some(p) = parts.next() {
                            return Err(format!("-device {v}: pc-testdev has no property '{p}'"));
                        }
                        o.pc_testdev = true;
                        continue;
                    }
                    _ => {
                        return Err(format!(
                            "-device {v}: unsupported device (isa-debug-exit and pc-testdev are accepted)"
                        ))
                    }
                }
                for p in parts {
                    match p.split_once('=') {
                        Some(("iobase", b)) if b == "0xf4" || b == "244" => {}
                        Some(("iosize", _)) => {}
                        _ => return Err(format!("-device {v}: unsupported property '{p}' (iobase must be 0xf4)")),
                    }
                }
            }
            "smp" => {
                let v = value(name)?;
                if v != "1" && v != "cpus=1" {
                    return Err(format!("-smp {v}: only one CPU is supported"));
                }
            }
            "machine" | "M" => {
                let v = value(name)?;
                if !["pc", "q35", "isapc"].contains(&v.split(',').next().unwrap_or_default()) {
                    return Err(format!("-machine {v}: unsupported machine (pc)"));
                }
            }
            "h" | "help" => o.help = true,
            "version" | "V" => o.version = true,
            _ => return Err(format!("{arg}: invalid option (try -h)")),
        }
    }
    Ok(o)
}

/// Split a `-initrd` value into module specs ("FILE [args]") as QEMU's multiboot loader does:
/// commas separate modules and `,,` stands for a literal comma (QEMU's option-value escape), so a
/// module's command line may contain commas. Empty specs (e.g. a trailing comma) are refused,
/// where QEMU would fail to open a file named "".
pub fn split_module_list(list: &str) -> Result<Vec<String>, String> {
    let mut specs = Vec::new();
    let mut cur = String::new();
    let mut chars = list.chars().peekable();
    loop {
        match chars.next() {
            Some(',') if chars.peek() == Some(&',') => {
                chars.next();
                cur.push(',');
            }
            c @ (Some(',') | None) => {
                if cur.is_empty() {
                    return Err(format!(
                        "-initrd {list}: empty module name (separate modules with one ',' and write ',,' for a comma)"
                    ));
                }
                specs.push(std::mem::take(&mut cur));
                if c.is_none() {
                    return Ok(specs);
                }
            }
            Some(c) => cur.push(c),
        }
    }
}

/// The file name of a module spec: everything before the first space (QEMU: the rest is the
/// module's command line).
pub fn module_file(spec: &str) -> &str {
    spec.split(' ').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Options, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_qemu_style_options() {
        let o = p("-m 64 -kernel k.elf -serial file:/tmp/x -monitor unix:/tmp/m,server,nowait -S -no-reboot").unwrap();
        assert_eq!(o.ram_size, Some(64 << 20));
        assert_eq!(o.kernel, Some(PathBuf::from("k.elf")));
        assert_eq!(o.serial, Some(SerialSpec::File("/tmp/x".into())));
        assert_eq!(o.monitor, Some(MonitorSpec::Unix("/tmp/m".into())));
        assert!(o.start_paused && o.no_reboot);
        assert_eq!(p("--m 1G").unwrap().ram_size, Some(1 << 30));
        assert_eq!(p("-record foo,overwrite=on").unwrap().record, Some(("foo".into(), true)));
    }

    #[test]
    fn rejects_bad_options_clearly() {
        assert!(p("-bogus").unwrap_err().contains("invalid option"));
        assert!(p("-m").unwrap_err().contains("requires an argument"));
        assert!(p("-m 12Q").unwrap_err().contains("unknown suffix"));
        assert!(p("-m 0").is_err());
        assert!(p("-serial tcp:1").is_err());
        assert!(p("-monitor unix:/x").unwrap_err().contains("server"));
        assert!(p("-device e1000").is_err());
        assert!(p("-rtc base=2020-13-01").is_err());
        assert!(p("kernel").is_err());
        assert!(p("-accel kvm").unwrap_err().contains("unknown engine"));
        assert!(p("-accel jit,hot=0").unwrap_err().contains("1 to 65535"));
        assert!(p("-accel jit,hot=70000").unwrap_err().contains("1 to 65535"));
        assert!(p("-accel jit,thread=multi").unwrap_err().contains("unknown property"));
        assert!(p("-accel interp,hot=4").unwrap_err().contains("unknown property"));
    }

    #[test]
    fn parses_the_engine_and_its_tiering_threshold() {
        let o = p("-accel tcg,hot=16").unwrap();
        assert_eq!((o.engine, o.jit_hot), (Some(ailuro_machine::Engine::Jit), Some(16)));
        let o = p("-accel interp").unwrap();
        assert_eq!((o.engine, o.jit_hot), (Some(ailuro_machine::Engine::Interpreter), None));
    }

    #[test]
    fn refuses_a_second_recording_or_replay_or_plugin_log() {
        assert!(p("-replay a -replay b").unwrap_err().contains("-replay given twice"));
        assert!(p("-record a -record b,overwrite=on").unwrap_err().contains("-record given twice"));
        assert!(p("-pandalog a -pandalog b").unwrap_err().contains("-pandalog given twice"));
    }

    #[test]
    fn devices() {
        assert!(p("-device pc-testdev").unwrap().pc_testdev);
        assert!(!p("-device isa-debug-exit,iobase=0xf4,iosize=0x4").unwrap().pc_testdev);
        assert!(p("-device pc-testdev,foo=1").unwrap_err().contains("no property"));
        assert!(p("-device e1000").unwrap_err().contains("pc-testdev"));
    }

    #[test]
    fn module_lists_with_escaped_commas() {
        assert_eq!(split_module_list("a").unwrap(), ["a"]);
        assert_eq!(split_module_list("a x=1,b").unwrap(), ["a x=1", "b"]);
        assert_eq!(split_module_list("m1 a,,b,m2 c,,,,d").unwrap(), ["m1 a,b", "m2 c,,d"]);
        assert_eq!(split_module_list("m,,,n").unwrap(), ["m,", "n"]);
        assert!(split_module_list("a,").is_err());
        assert!(split_module_list("").is_err());
        assert!(split_module_list("a,,,,").is_ok());
        assert_eq!(module_file("dir/m1 a b"), "dir/m1");
        assert_eq!(module_file("m2"), "m2");
    }

    #[test]
    fn firmware_and_debugcon() {
        let o = p("-bios b.bin -debugcon file:/tmp/d -global isa-debugcon.iobase=0x402").unwrap();
        assert_eq!(o.bios, Some(PathBuf::from("b.bin")));
        assert_eq!(o.debugcon, Some(DebugconSpec::File("/tmp/d".into())));
        assert_eq!(o.debugcon_iobase, Some(0x402));
        assert_eq!(p("-debugcon stdio -global isa-debugcon.iobase=233").unwrap().debugcon_iobase, Some(0xe9));
        assert!(p("-bios").unwrap_err().contains("requires an argument"));
        assert!(p("-debugcon tcp:1").unwrap_err().contains("unsupported backend"));
        assert!(p("-global isa-debugcon.iobase=0x10000").unwrap_err().contains("invalid port"));
        assert!(p("-global foo.bar=1").unwrap_err().contains("unsupported"));
    }

    #[test]
    fn rtc_base_dates() {
        assert_eq!(p("-rtc base=1970-01-02").unwrap().rtc_base, Some(86400));
        assert_eq!(p("-rtc base=2000-03-01T12:00:00").unwrap().rtc_base, Some(951_912_000));
        assert_eq!(p("-rtc base=utc").unwrap().rtc_base, None);
    }
}
