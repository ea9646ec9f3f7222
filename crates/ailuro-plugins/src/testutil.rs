//! A fake CPU for driving plugins directly in tests.

use ailuro_bus::observe::CpuView;
use ailuro_bus::GuestRam;

pub const REG_NAMES: &[&str] = &["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags"];

/// A CPU whose state the test sets field by field. Virtual addresses map to physical
/// `vaddr - virt_base` when at or above `virt_base` and below `virt_base + mapped`, else unmapped.
#[derive(Clone, Debug)]
pub struct FakeCpu {
    pub pc: u64,
    pub icount: u64,
    pub asid: u64,
    pub kernel: bool,
    pub regs: [u64; 10],
    pub virt_base: u64,
    pub mapped: u64,
}

impl Default for FakeCpu {
    fn default() -> Self {
        FakeCpu { pc: 0x1000, icount: 0, asid: 0, kernel: true, regs: [0; 10], virt_base: 0, mapped: 1 << 20 }
    }
}

impl CpuView for FakeCpu {
    fn pc(&self) -> u64 {
        self.pc
    }
    fn icount(&self) -> u64 {
        self.icount
    }
    fn asid(&self) -> u64 {
        self.asid
    }
    fn in_kernel(&self) -> bool {
        self.kernel
    }
    fn reg(&self, n: usize) -> u64 {
        self.regs.get(n).copied().unwrap_or(0)
    }
    fn reg_names(&self) -> &'static [&'static str] {
        REG_NAMES
    }
    fn virt_to_phys(&self, _: &GuestRam, vaddr: u64) -> Option<u64> {
        (vaddr >= self.virt_base && vaddr - self.virt_base < self.mapped).then(|| vaddr - self.virt_base)
    }
}

/// A plugin log in `dir` for a test.
pub fn plog(dir: &std::path::Path) -> ailuro_plog::PlogWriter {
    let header = ailuro_plog::PlogHeader::new("ailuro-plugins test");
    ailuro_plog::PlogWriter::create(dir.join("test.plog"), &header, false).unwrap()
}

/// All records of the plugin log in `dir`.
pub fn read_plog(dir: &std::path::Path) -> Vec<ailuro_plog::OwnedRecord> {
    let r = ailuro_plog::PlogReader::open(dir.join("test.plog")).unwrap();
    r.map(|x| x.unwrap()).collect()
}
