//! Machine-level properties: a live run without host input is deterministic, and a recording
//! replays to the same instruction count and CPU+RAM hash as the run that made it.

use std::path::PathBuf;

use ailuro_machine::{BootImage, ChannelHost, GuestArch, Machine, MachineConfig, RunOptions, Stop};

fn boot(name: &str, cmdline: &str) -> (MachineConfig, BootImage) {
    let path = ailuro_guests::guest_path(name).expect("bundled guest built");
    let kernel = std::fs::read(path).unwrap();
    let config = MachineConfig {
        arch: GuestArch::I386,
        ram_size: 16 << 20,
        rtc_base_unix: 1_700_000_000,
        cmdline: cmdline.into(),
        no_reboot: true,
    };
    (config, BootImage { kernel, modules: vec![] })
}

/// Run to the end; returns (stop, console, instructions, state hash).
fn run(m: &mut Machine) -> (Stop, Vec<u8>, u64, [u8; 32]) {
    let mut console = Vec::new();
    let stop = {
        let mut host = ChannelHost::new(None, |b: &[u8]| console.extend_from_slice(b), |_: &str| {});
        m.run(&mut host)
    };
    (stop, console, m.icount(), m.state_hash())
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ailuro-machine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn live_runs_without_input_are_deterministic() {
    for g in ["timer", "apic", "clock"] {
        let (config, image) = boot(g, "");
        let opts = RunOptions { sleep: false, start_paused: false, engine: Default::default(), jit_hot: None };
        let mut a = Machine::new_live(config.clone(), Some(image.clone()), opts.clone()).unwrap();
        let mut b = Machine::new_live(config, Some(image), opts).unwrap();
        let (sa, ca, na, ha) = run(&mut a);
        let (sb, cb, nb, hb) = run(&mut b);
        assert!(matches!(sa, Stop::GuestExit(1)), "{g}: {sa:?}");
        assert!(matches!(sb, Stop::GuestExit(1)), "{g}: {sb:?}");
        assert_eq!((ca, na, ha), (cb, nb, hb), "{g}: two live runs differ");
    }
}

#[test]
fn record_then_replay_reaches_the_same_state() {
    let dir = tmp("rr");
    let (config, image) = boot("paging", "");
    let mut live = Machine::new_live(
        config,
        Some(image),
        RunOptions { sleep: false, start_paused: false, engine: Default::default(), jit_hot: None },
    )
    .unwrap();
    let name = dir.join("paging");
    live.begin_record(&name, false).unwrap();
    assert!(live.is_recording());
    let (stop, console, n_rec, h_rec) = run(&mut live);
    assert!(matches!(stop, Stop::GuestExit(1)), "{stop:?}");
    assert!(!live.is_recording(), "guest exit finishes the recording");

    let mut rp = Machine::new_replay(&name, RunOptions::default(), GuestArch::I386).unwrap();
    let (stop, console_rp, n_rp, h_rp) = run(&mut rp);
    match stop {
        Stop::ReplayFinished(s) => assert_eq!(s.final_hash, h_rec),
        other => panic!("replay did not finish: {other:?}"),
    }
    assert_eq!(console_rp, console);
    assert_eq!(n_rp, n_rec);
    assert_eq!(h_rp, h_rec);

    // The wrong architecture is refused with a message naming the right binary.
    let err = Machine::new_replay(&name, RunOptions::default(), GuestArch::X86_64).err().unwrap();
    assert!(err.contains("i386") && err.contains("ailuro-system-i386"), "{err}");
}
