//! Found by this harness: a snapshot may describe a huge all-zero RAM with a consistent page map
//! in a small file (a 2 MiB snapshot for 64 GiB; an `.rr` of 6 KiB for 16 GiB, since xz
//! compresses the page map), and the emulator allocated the whole RAM before checking anything,
//! aborting the process when the host could not provide it. Now the emulator checks the claimed
//! RAM size against what its machine has before allocating (`rrfiles::open_replay`), and guest
//! RAM allocation is fallible (`GuestRam::new` returns `RamError::NoHostMemory`). The library
//! reader `ailuro_rr::read_snapshot` still trusts sizes up to the format's limit (its callers
//! bound them), so only the emulator's path, the `replay` target, is held to the harness's
//! allocation limit here.
//!
//! A test binary of its own: the huge-claim mutator is switched on for the whole process.

use ailuro_fuzz::{targets, Config, Limits};

#[test]
fn huge_ram_claims_are_refused_before_allocation() {
    ailuro_fuzz::snapshot::HUGE_RAM_CLAIMS.store(true, std::sync::atomic::Ordering::Relaxed);
    let cfg = Config {
        seed: 1,
        iterations: 400,
        out_dir: ailuro_fuzz::default_out_dir(),
        limits: Limits::default(),
        corpus_dir: None,
        max_failures: 5,
    };
    let s = ailuro_fuzz::run_target(targets::by_name("replay").unwrap(), &cfg);
    let failures: Vec<_> = s.failures.iter().map(|f| format!("{} ({})", f.message, f.input.display())).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(s.errors.keys().any(|e| e.contains("claims")), "huge claims reached the check: {:?}", s.errors.keys());
}
