//! `memsavep`: at a chosen point of the replay, write guest-physical memory as a raw image and
//! stop (PANDA's `memsavep`).
//!
//! The image covers guest-physical addresses from 0 to the end of RAM: byte `i` of the file is
//! guest-physical address `i`, as volatility-style tools expect of a raw physical dump. Addresses
//! below RAM's base (none on a PC) and all-zero 64 KiB blocks are left as holes of the file (they
//! read as zeros and take no disk space).

use std::any::Any;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use ailuro_bus::GuestRam;
use ailuro_plugin::{ArgInfo, Args, Cx, LoadCx, Plugin, PluginInfo};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "memsavep",
    about: "write guest-physical memory as a raw image at a point of the replay, then stop",
    args: ARGS,
    deps: &[],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "percent", help: "where: this percentage (0-100) of the replay's instructions" },
    ArgInfo { key: "icount", help: "where: this instruction count (instead of percent)" },
    ArgInfo { key: "file", help: "output file (default memsavep.raw)" },
    ArgInfo { key: "overwrite", help: "true: replace an existing file (default false)" },
];

fn make(args: &Args, lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let percent = args.f64("percent")?;
    let icount = args.u64("icount")?;
    let file = args.path("file").unwrap_or_else(|| PathBuf::from("memsavep.raw"));
    let overwrite = args.bool("overwrite", false)?;
    let target = match (percent, icount, lcx.replay_range) {
        (Some(_), Some(_), _) => return Err("plugin memsavep: give percent= or icount=, not both".to_string()),
        (None, None, _) => return Err("plugin memsavep: percent=P or icount=N is required".to_string()),
        (Some(_), None, None) => {
            return Err("plugin memsavep: percent= needs a replay (use icount= in a live run)".to_string())
        }
        (Some(p), None, Some((rs, re))) => {
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("plugin memsavep: percent={p} is not between 0 and 100"));
            }
            let len = re.saturating_sub(rs);
            rs + ((len as f64 * p / 100.0) as u64).min(len)
        }
        (None, Some(n), Some((rs, re))) => {
            if n < rs || n > re {
                return Err(format!(
                    "plugin memsavep: icount={n} is outside the recording (it covers instructions {rs}..{re})"
                ));
            }
            n
        }
        (None, Some(n), None) => n,
    };
    if !overwrite && file.exists() {
        return Err(format!("plugin memsavep: {} already exists (add overwrite=true to replace it)", file.display()));
    }
    Ok(Box::new(MemSave { target, file, overwrite, done: None }))
}

/// The `memsavep` plugin.
pub struct MemSave {
    target: u64,
    file: PathBuf,
    overwrite: bool,
    /// Summary once the image is written.
    done: Option<String>,
}

/// Size of the blocks the image is written in (all-zero blocks become holes).
const BLOCK: usize = 64 << 10;

/// Write `ram` as a raw physical image (address 0 to the end of RAM) into `f`.
fn write_image(f: &mut File, ram: &GuestRam) -> std::io::Result<()> {
    let mut pos = ram.base();
    for chunk in ram.as_slice().chunks(BLOCK) {
        if chunk.iter().any(|&b| b != 0) {
            f.seek(SeekFrom::Start(pos))?;
            f.write_all(chunk)?;
        }
        pos += chunk.len() as u64;
    }
    f.set_len(ram.end())?;
    f.sync_all()
}

impl MemSave {
    /// The instruction count at which the image is written.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Has the image been written?
    pub fn done(&self) -> bool {
        self.done.is_some()
    }

    fn dump(&mut self, cx: &mut Cx) -> Result<(), String> {
        let Some(ram) = cx.ram() else { return Err("guest RAM is not available here".to_string()) };
        let mut f = crate::create_file(&self.file, self.overwrite)?;
        if let Err(e) = write_image(&mut f, ram) {
            drop(f);
            let _ = std::fs::remove_file(&self.file);
            return Err(format!("cannot write {}: {e}", self.file.display()));
        }
        let path = self.file.display().to_string();
        let (end, base) = (ram.end(), ram.base());
        cx.log("memsavep", "image", |r| {
            r.field("file", path.as_str()).field("size", end).field("ram_base", base).field("ram_size", ram.size())
        });
        self.done = Some(format!(
            "memsavep: wrote guest-physical memory 0x0..{end:#x} ({end} bytes) at instruction {} to {path}",
            cx.icount
        ));
        // The run loop adds where it stopped.
        cx.request_stop(format!("memsavep: memory saved to {path}"));
        Ok(())
    }
}

impl Plugin for MemSave {
    fn name(&self) -> &'static str {
        "memsavep"
    }

    fn wake_at(&self) -> Option<u64> {
        self.done.is_none().then_some(self.target)
    }

    fn start(&mut self, cx: &mut Cx) -> Result<(), String> {
        if cx.icount > self.target {
            return Err(format!("the run starts at instruction {}, after icount={}", cx.icount, self.target));
        }
        Ok(())
    }

    fn at_icount(&mut self, cx: &mut Cx) {
        if self.done.is_none() && cx.icount >= self.target {
            if let Err(e) = self.dump(cx) {
                cx.fail(format!("memsavep: {e}"));
                self.done = Some(format!("memsavep: failed: {e}"));
            }
        }
    }

    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        if self.done.is_none() {
            if cx.icount != self.target {
                return Err(format!(
                    "the run ended at instruction {} without reaching icount={}; no image written",
                    cx.icount, self.target
                ));
            }
            // The point is the very end of the replay.
            self.dump(cx)?;
        }
        Ok(self.done.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{plog, read_plog, FakeCpu};
    use ailuro_bus::ProgramPoint;
    use ailuro_plugin::{parse_plugin_list, PluginSet};

    fn load(spec: &str, range: Option<(u64, u64)>) -> Result<PluginSet, String> {
        let lcx = LoadCx { replay_range: range, arch: "i386".into(), ..LoadCx::default() };
        PluginSet::load(&crate::registry(), &parse_plugin_list(spec)?, &lcx)
    }

    fn ram() -> GuestRam {
        let mut ram = GuestRam::new(0, 1 << 20).unwrap();
        ram.write(0x0, b"real-mode IVT").unwrap();
        ram.write(0x7c00, &[0x55; 512]).unwrap();
        ram.write(0xf_fff0, b"end of RAM").unwrap();
        ram
    }

    #[test]
    fn image_equals_ram_and_stop_is_requested() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.raw");
        let mut set = load(&format!("memsavep:percent=50,file={}", file.display()), Some((1000, 2000))).unwrap();
        set.set_plog(plog(dir.path()));
        assert_eq!(set.wake_at(), Some(1500));
        let ram = ram();
        let mut cpu = FakeCpu { icount: 1000, ..FakeCpu::default() };
        set.start(ProgramPoint { icount: 1000, pc: 0 }, &cpu, &ram).unwrap();
        assert!(!set.wants_stop());
        cpu.icount = 1500;
        set.wake(&cpu, &ram);
        assert!(set.wants_stop());
        assert_eq!(set.control.stop.as_deref(), Some(&*format!("memsavep: memory saved to {}", file.display())));
        assert_eq!(set.wake_at(), None);
        assert_eq!(std::fs::read(&file).unwrap(), ram.as_slice());
        let out = set.finish(ProgramPoint { icount: 1500, pc: 0 }, &cpu, &ram).unwrap();
        assert!(out[0]
            .starts_with("memsavep: wrote guest-physical memory 0x0..0x100000 (1048576 bytes) at instruction 1500"));
        let recs = read_plog(dir.path());
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].kind.as_str(), recs[0].icount), ("image", 1500));
        assert_eq!(recs[0].get("size").unwrap().as_u64(), Some(1 << 20));

        // The file now exists: refused without overwrite=true, replaced with it.
        let e = load(&format!("memsavep:icount=1200,file={}", file.display()), Some((1000, 2000))).err().unwrap();
        assert!(e.contains("already exists") && e.contains("overwrite=true"), "{e}");
        let mut set =
            load(&format!("memsavep:icount=2000,overwrite=true,file={}", file.display()), Some((1000, 2000))).unwrap();
        let mut ram2 = GuestRam::new(0, 1 << 20).unwrap();
        ram2.write(0x1234, b"x").unwrap();
        cpu.icount = 1000;
        set.start(ProgramPoint { icount: 1000, pc: 0 }, &cpu, &ram2).unwrap();
        // The replay ends exactly at the point: the image is written at finish.
        cpu.icount = 2000;
        let out = set.finish(ProgramPoint { icount: 2000, pc: 0 }, &cpu, &ram2).unwrap();
        assert!(out[0].contains("at instruction 2000"), "{}", out[0]);
        assert_eq!(std::fs::read(&file).unwrap(), ram2.as_slice());
    }

    #[test]
    fn ram_above_zero_is_placed_at_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("arm.raw");
        let mut set = load(&format!("memsavep:icount=0,file={}", file.display()), None).unwrap();
        let mut ram = GuestRam::new(0x10_0000, 0x2_0000).unwrap();
        ram.write(0x10_0000, b"first").unwrap();
        ram.write(0x11_fffb, b"last!").unwrap();
        let cpu = FakeCpu::default();
        set.start(ProgramPoint::default(), &cpu, &ram).unwrap();
        set.wake(&cpu, &ram);
        let img = std::fs::read(&file).unwrap();
        assert_eq!(img.len(), 0x12_0000);
        assert!(img[..0x10_0000].iter().all(|&b| b == 0));
        assert_eq!(&img[0x10_0000..], ram.as_slice());
    }

    #[test]
    fn points_outside_the_recording_and_bad_arguments() {
        let r = Some((100, 200));
        for (spec, want) in [
            ("memsavep:icount=201", "icount=201 is outside the recording (it covers instructions 100..200)"),
            ("memsavep:icount=99", "outside the recording"),
            ("memsavep:percent=101", "not between 0 and 100"),
            ("memsavep:percent=5,icount=5", "not both"),
            ("memsavep", "percent=P or icount=N is required"),
            ("memsavep:percent=x", "not a number"),
        ] {
            let e = load(spec, r).err().unwrap();
            assert!(e.contains(want), "{spec}: {e}");
        }
        let e = load("memsavep:percent=5", None).err().unwrap();
        assert!(e.contains("needs a replay"), "{e}");
        // A run that ends before the point is an error at finish.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("never.raw");
        let mut set = load(&format!("memsavep:icount=150,file={}", file.display()), r).unwrap();
        let ram = ram();
        let cpu = FakeCpu { icount: 120, ..FakeCpu::default() };
        set.start(ProgramPoint { icount: 100, pc: 0 }, &cpu, &ram).unwrap();
        let e = set.finish(ProgramPoint { icount: 120, pc: 0 }, &cpu, &ram).unwrap_err();
        assert!(e.contains("without reaching icount=150"), "{e}");
        assert!(!file.exists());
    }
}
