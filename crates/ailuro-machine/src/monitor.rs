//! Monitor commands (QEMU/PANDA style), executed by the run loop between slices.

use std::path::Path;

use crate::host::Host;
use crate::machine::{Machine, Stop};

/// Help text listing every command.
pub const HELP: &str = "\
begin_record [-f] NAME  start recording to NAME-rr-snp + NAME-rr-nondet.log (-f: overwrite)
end_record              finish the recording and pause the guest (cont resumes)
begin_replay NAME       replace this machine's execution by a replay of NAME
end_replay              stop the replay in progress
cont | c                resume execution
stop                    pause execution
info status             run state and record/replay state
info registers          CPU registers
info plugins            analysis plugins loaded with -panda
info processes          Linux guest processes (needs -panda osi_linux)
quit | q                quit the emulator (finishing a recording in progress)
help                    this text";

/// Execute one monitor command line; returns the reply (possibly empty). Malformed commands get
/// an error reply; the monitor keeps running.
pub fn execute(m: &mut Machine, line: &str, host: &mut dyn Host) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&cmd, args)) = words.split_first() else { return String::new() };
    let result: Result<String, String> = match (cmd, args) {
        ("help" | "?", _) => Ok(HELP.to_string()),
        ("begin_record", _) => {
            let (force, rest): (bool, Vec<&str>) = match args {
                ["-f", rest @ ..] => (true, rest.to_vec()),
                rest => (false, rest.to_vec()),
            };
            match rest.as_slice() {
                [name] => m.begin_record(Path::new(name), force).map(|()| format!("recording to {name}")),
                _ => Err("usage: begin_record [-f] NAME".into()),
            }
        }
        ("end_record", []) => m.end_record(ailuro_rr::EndReason::EndRecord).map(|s| {
            m.set_paused(true);
            format!("{s}; guest paused (cont resumes)")
        }),
        ("begin_replay", [name]) => m.begin_replay(Path::new(name)).map(|()| format!("replaying {name}")),
        ("begin_replay", _) => Err("usage: begin_replay NAME".into()),
        ("end_replay", []) => m.end_replay(),
        ("cont" | "c", []) => {
            if m.is_paused() && !m.is_replaying() && !m.is_live() {
                Err("cont: the replay has ended; nothing to run (a replay cannot go live)".into())
            } else {
                m.set_paused(false);
                Ok(String::new())
            }
        }
        ("stop", []) => {
            m.set_paused(true);
            Ok(String::new())
        }
        ("info", ["status"]) => {
            Ok(format!("VM status: {}\n{}", if m.is_paused() { "paused" } else { "running" }, m.rr_status()))
        }
        ("info", ["registers"]) => Ok(m.cpu().info_registers()),
        ("info", ["processes"]) => m.info_processes(),
        ("info", ["jit"]) => Ok(info_jit(m.cpu())),
        ("info", ["plugins"]) => Ok(match m.plugin_names() {
            v if v.is_empty() => "no plugins loaded (load them with -panda NAME:k=v)".to_string(),
            v => format!("loaded plugins (dispatch order): {}", v.join(", ")),
        }),
        ("info", _) => Err("usage: info status | info registers | info plugins | info processes | info jit".into()),
        ("quit" | "q", []) => {
            if m.is_recording() {
                match m.end_record(ailuro_rr::EndReason::Quit) {
                    Ok(msg) => host.message(&msg),
                    Err(e) => host.message(&format!("error: {e}")),
                }
            }
            m.request_stop(Stop::Quit);
            Ok(String::new())
        }
        ("end_record" | "end_replay" | "cont" | "c" | "stop" | "quit" | "q", _) => {
            Err(format!("{cmd}: takes no arguments"))
        }
        _ => Err(format!("unknown command: '{cmd}' (try 'help')")),
    };
    match result {
        Ok(s) => s,
        Err(e) => format!("Error: {e}"),
    }
}

/// `info jit`: the translating engine's counters (QEMU's command of that name shows its
/// translator's statistics).
fn info_jit(cpu: &ailuro_x86::Cpu) -> String {
    let s = cpu.jit_stats();
    if cpu.engine() == ailuro_x86::Engine::Interpreter {
        return "engine: interpreter (-accel interp): nothing is compiled\n".into();
    }
    let total = cpu.icount().max(1);
    format!(
        "engine: jit\n\
         compiled blocks: {} ({} guest instructions, {} bytes of host code)\n\
         compile time: {:.3} s\n\
         instructions run compiled: {} of {} ({:.1}%)\n\
         compiled blocks run: {} (of which loop iterations in compiled code: {}), left early: {}\n\
         code cache flushes: {}\n",
        s.blocks_compiled,
        s.guest_insns_compiled,
        s.code_bytes,
        s.compile_ns as f64 / 1e9,
        s.insns_compiled,
        total,
        100.0 * s.insns_compiled as f64 / total as f64,
        s.blocks_run,
        s.loop_iterations,
        s.side_exits,
        s.flushes
    )
}
