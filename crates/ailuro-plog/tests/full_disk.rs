//! A real full disk (a 64 KiB tmpfs): creating a plog there, and filling it while writing, leave no
//! file behind. Needs root to mount; skipped (with a note) otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use ailuro_plog::{PlogError, PlogHeader, PlogWriter};

/// A mounted tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let root = Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.trim_ascii() == b"0");
        if !root {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_no_plog_behind() {
    let d = tempfile::TempDir::new().unwrap();
    let Some(fs) = Tmpfs::mount(d.path()) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let p = fs.0.join("run.plog");
    let h = PlogHeader::new("full disk test");

    // The disk fills up during the run: the error comes back and the file is gone.
    let mut w = PlogWriter::create(&p, &h, false).unwrap();
    w.set_chunk_size(4096);
    let mut n = 0u64;
    let err = loop {
        // Incompressible text, so that the disk really fills.
        let text: String = (0..200).map(|i| char::from(b'a' + ((n * 7919 + i * 104_729) % 26) as u8)).collect();
        if let Err(e) = w.record(n, n, "p", "k").field("text", text.as_str()).emit() {
            break e;
        }
        n += 1;
        assert!(n < 10_000_000, "the disk never filled");
    };
    assert!(matches!(err, PlogError::Io { .. }), "{err}");
    assert!(!p.exists(), "an unfinishable plog was left behind");
    assert!(w.finish().is_err());

    // The disk is full before the run: create fails and leaves nothing.
    let filler = fs.0.join("filler");
    let _ = std::fs::write(&filler, vec![0x55u8; 1 << 20]);
    for overwrite in [false, true] {
        let e = PlogWriter::create(&p, &h, overwrite).err().expect("create on a full disk");
        assert!(matches!(e, PlogError::Io { .. }), "{e}");
        assert!(!p.exists(), "a failed create left a file (overwrite {overwrite})");
    }
    let left: Vec<_> = std::fs::read_dir(&fs.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("filler")]);
    // Space again: the rerun works.
    std::fs::remove_file(&filler).unwrap();
    PlogWriter::create(&p, &h, false).unwrap().finish().unwrap();
    drop(fs);
}
