//! Glue between the machine and the recording files of `ailuro-rr`.

use std::path::Path;

use ailuro_bus::GuestRam;
use ailuro_rr::{Arch, EndReason, LogEnd, LogReader, SnapshotHeader};
use ailuro_x86::Cpu;

use crate::config::{GuestArch, MachineConfig};
use crate::platforms::{EventStats, Recorder};
use crate::tap::ConsoleTap;

/// Text identifying the writer of recordings.
fn creator() -> String {
    format!("ailuro {}", env!("CARGO_PKG_VERSION"))
}

fn rr_arch(a: GuestArch) -> Arch {
    match a {
        GuestArch::I386 => Arch::I386,
        GuestArch::X86_64 => Arch::X86_64,
        GuestArch::Arm => Arch::Arm,
    }
}

/// Write the snapshot and open the log of a new recording.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_recording(
    name: &Path,
    overwrite: bool,
    config: &MachineConfig,
    cpu: &Cpu,
    ram: &GuestRam,
    devices: &[u8],
    tap: &ConsoleTap,
    checkpoint_interval: u64,
) -> Result<Recorder, String> {
    let icount = cpu.icount();
    let header = SnapshotHeader {
        arch: rr_arch(config.arch),
        ram_base: ram.base(),
        ram_size: ram.size(),
        start_icount: icount,
        machine_config: config.to_bytes(),
        creator: creator(),
    };
    let console = postcard::to_allocvec(tap).map_err(|e| format!("cannot serialize console state: {e}"))?;
    // Both files or neither: the targets are checked first (an existing file, a symbolic link,
    // a directory), and a log that cannot be created takes its snapshot back.
    let writer = ailuro_rr::create_recording(name, &header, &cpu.save_state(), devices, &console, ram, overwrite)
        .map_err(|e| match e {
            ailuro_rr::RecordingError::AlreadyExists { path, .. } => format!(
                "begin_record: {} already exists; refusing to overwrite a recording (ask explicitly: \
                 `begin_record -f NAME` on the monitor, `-record NAME,overwrite=on` on the command line)",
                path.display()
            ),
            e => format!("begin_record: {e}"),
        })?;
    Ok(Recorder {
        writer,
        name: name.to_path_buf(),
        start_icount: icount,
        next_checkpoint: icount + checkpoint_interval,
        stats: EventStats::default(),
        error: None,
        last_flush: std::time::Instant::now(),
    })
}

/// Write the trailer of a recording; returns a one-line summary.
pub(crate) fn finish_recording(
    rec: Recorder,
    end_icount: u64,
    final_state_hash: [u8; 32],
    reason: EndReason,
) -> Result<String, String> {
    if let Some(e) = rec.error {
        return Err(format!("the recording {} is incomplete: {e}", rec.name.display()));
    }
    let trailer = rec
        .writer
        .finish(LogEnd { end_icount, reason, final_state_hash })
        .map_err(|e| format!("cannot finish the recording {}: {e}", rec.name.display()))?;
    Ok(format!(
        "recording {} complete: {} instructions, {} events",
        rec.name.display(),
        end_icount - rec.start_icount,
        trailer.entry_count
    ))
}

/// What a replay starts from.
pub(crate) struct OpenedReplay {
    pub reader: LogReader,
    /// The snapshot's device-state blob (carried into recordings cut from this one).
    pub devices: Vec<u8>,
    pub start_icount: u64,
    pub end_icount: Option<u64>,
    pub final_hash: Option<[u8; 32]>,
    pub end_reason: Option<EndReason>,
}

/// Open both files of recording `name` and restore CPU, RAM and console state from the snapshot.
pub(crate) fn open_replay(
    name: &Path,
    expect: GuestArch,
) -> Result<(MachineConfig, Cpu, GuestRam, ConsoleTap, OpenedReplay), String> {
    let (snp, log) = ailuro_rr::recording_paths(name);
    // Check the header before RAM is allocated: a recording claims its RAM size, and a forged
    // one must not make this host allocate more than any machine of this kind has.
    let head = ailuro_rr::read_snapshot_header(&snp).map_err(|e| format!("cannot replay {}: {e}", name.display()))?;
    // The architecture first: a recording made by the other PC binary is the likeliest mistake,
    // and the answer names the binary that replays it.
    if head.arch != rr_arch(expect) {
        return Err(format!(
            "cannot replay {}: it is a recording of an {} guest and this is ailuro-system-{}; \
             replay it with ailuro-system-{}",
            name.display(),
            head.arch.name(),
            expect.name(),
            head.arch.name()
        ));
    }
    if head.ram_size > expect.max_ram() {
        return Err(format!(
            "cannot replay {}: the snapshot claims {} MiB of RAM; this machine has at most {} MiB",
            name.display(),
            head.ram_size >> 20,
            expect.max_ram() >> 20
        ));
    }
    let (snapshot, ram) =
        ailuro_rr::read_snapshot(&snp).map_err(|e| format!("cannot replay {}: {e}", name.display()))?;
    let h = &snapshot.header;
    let config = MachineConfig::from_bytes(&h.machine_config).map_err(|e| {
        format!("cannot replay {}: corrupt machine configuration in {}: {e}", name.display(), snp.display())
    })?;
    if config.ram_size != ram.size() || config.arch != expect {
        return Err(format!(
            "cannot replay {}: the snapshot's machine configuration contradicts its header",
            name.display()
        ));
    }
    let mut cpu = Cpu::new(crate::machine::cpu_config(expect));
    cpu.load_state(&snapshot.cpu)
        .map_err(|e| format!("cannot replay {}: corrupt CPU state in {}: {e}", name.display(), snp.display()))?;
    if cpu.icount() != h.start_icount {
        return Err(format!(
            "cannot replay {}: CPU state in {} is at instruction {}, header says {}",
            name.display(),
            snp.display(),
            cpu.icount(),
            h.start_icount
        ));
    }
    let tap: ConsoleTap = postcard::from_bytes(&snapshot.console)
        .map_err(|e| format!("cannot replay {}: corrupt console state in {}: {e}", name.display(), snp.display()))?;
    // The device state is not needed to replay, but a corrupt one means a corrupt snapshot.
    crate::machine::device_state_from(&snapshot.devices)
        .map_err(|e| format!("cannot replay {}: {e}", name.display()))?;

    let reader = LogReader::open(&log).map_err(|e| format!("cannot replay {}: {e}", name.display()))?;
    let lh = reader.header();
    if lh.arch != h.arch {
        return Err(format!(
            "cannot replay {}: the log is for {} but the snapshot for {}",
            name.display(),
            lh.arch.name(),
            h.arch.name()
        ));
    }
    if lh.snapshot_hash != snapshot.file_hash {
        return Err(format!(
            "cannot replay {}: {} does not belong to {} (snapshot hash mismatch)",
            name.display(),
            log.display(),
            snp.display()
        ));
    }
    if lh.start_icount != h.start_icount {
        return Err(format!("cannot replay {}: log and snapshot start at different instructions", name.display()));
    }
    let (end_icount, final_hash, end_reason) = match reader.trailer() {
        Some(t) => (Some(t.end_icount), Some(t.final_state_hash), Some(t.reason)),
        None => (None, None, None),
    };
    Ok((
        config,
        cpu,
        ram,
        tap,
        OpenedReplay {
            reader,
            devices: snapshot.devices.clone(),
            start_icount: h.start_icount,
            end_icount,
            final_hash,
            end_reason,
        },
    ))
}
