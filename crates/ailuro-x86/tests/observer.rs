//! The observer seam: callbacks arrive as documented and observing never changes execution.

use ailuro_bus::observe::{hook, CpuObserver, CpuView, MemAccess};
use ailuro_x86::{Cpu, CpuConfig, GuestRam, Platform, ProgramPoint, RunExit};
use iced_x86::code_asm::*;

struct NoDevices;

impl Platform for NoDevices {
    fn io_read(&mut self, _: ProgramPoint, _: u16, _: u8) -> u32 {
        0
    }
    fn io_write(&mut self, _: ProgramPoint, _: u16, _: u8, _: u32) {}
    fn mmio_read(&mut self, _: ProgramPoint, _: u64, _: u8) -> u64 {
        0
    }
    fn mmio_write(&mut self, _: ProgramPoint, _: u64, _: u8, _: u64) {}
    fn read_timestamp(&mut self, _: ProgramPoint) -> u64 {
        0
    }
    fn interrupt_ack(&mut self, _: ProgramPoint) -> u32 {
        0
    }
}

#[derive(Default)]
struct Recorder {
    hooks: u32,
    insns: Vec<(u64, u64)>,
    after: Vec<u64>,
    blocks: Vec<u64>,
    block_ends: Vec<u64>,
    writes: Vec<MemAccess>,
    reads: Vec<MemAccess>,
}

impl CpuObserver for Recorder {
    fn hooks(&self) -> u32 {
        self.hooks
    }
    fn before_insn(&mut self, cpu: &dyn CpuView, _: &GuestRam) {
        self.insns.push((cpu.icount(), cpu.pc()));
    }
    fn after_insn(&mut self, _: &dyn CpuView, _: &GuestRam, pc: u64) {
        self.after.push(pc);
    }
    fn before_block(&mut self, cpu: &dyn CpuView, _: &GuestRam) {
        self.blocks.push(cpu.pc());
    }
    fn after_block(&mut self, _: &dyn CpuView, _: &GuestRam, pc: u64) {
        self.block_ends.push(pc);
    }
    fn mem_read(&mut self, _: &dyn CpuView, _: &GuestRam, a: &MemAccess) {
        self.reads.push(*a);
    }
    fn mem_write(&mut self, _: &dyn CpuView, _: &GuestRam, a: &MemAccess) {
        self.writes.push(*a);
    }
}

const CODE: u64 = 0x1000;
const DATA: u64 = 0x8000;

/// for ecx in 3..0: [DATA + ecx*4] = ecx * 16, then one unaligned page-crossing store, then hlt.
fn program() -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    let mut top = a.create_label();
    a.mov(ecx, 3u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.mov(eax, ecx).unwrap();
    a.shl(eax, 4u32).unwrap();
    a.mov(dword_ptr(ecx * 4 + DATA as u32), eax).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.mov(eax, dword_ptr(DATA as u32 + 4)).unwrap();
    a.mov(dword_ptr(DATA as u32 + 0xffe), 0x1122_3344u32).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

fn run(obs: &mut Recorder) -> (Cpu, GuestRam) {
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    ram.write(CODE, &program()).unwrap();
    let mut cpu = Cpu::new(CpuConfig::default());
    cpu.enter_flat_protected_mode(CODE as u32);
    cpu.invalidate_code(0, ram.size());
    loop {
        match cpu.run_observed(&mut ram, &mut NoDevices, 1000, obs) {
            RunExit::Halted => break,
            RunExit::Limit => panic!("program did not halt"),
            _ => {}
        }
    }
    (cpu, ram)
}

#[test]
fn callbacks_follow_execution_and_do_not_change_it() {
    let mut plain = Recorder::default();
    let (cpu0, ram0) = run(&mut plain);
    assert!(plain.insns.is_empty() && plain.writes.is_empty(), "no hooks wanted, none called");

    let mut obs = Recorder { hooks: hook::ALL, ..Default::default() };
    let (cpu1, ram1) = run(&mut obs);
    assert_eq!(cpu0.state_hash(), cpu1.state_hash(), "observing changed the CPU state");
    assert_eq!(ram0.as_slice(), ram1.as_slice(), "observing changed RAM");

    // 1 + 3 * 5 + 3 (mov, mov, hlt) instructions, each reported once, in order, with its icount.
    let n = cpu1.icount();
    assert_eq!(n, 19);
    assert_eq!(obs.insns.len() as u64, n);
    assert!(obs.insns.iter().enumerate().all(|(k, (ic, _))| *ic == k as u64));
    assert_eq!(obs.after.len() as u64, n);
    assert_eq!(obs.insns.iter().map(|x| x.1).collect::<Vec<_>>(), obs.after);
    // Blocks: the start, then after each of the 3 jnz (taken twice, not taken once).
    assert_eq!(obs.blocks.len(), 4, "{:x?}", obs.blocks);
    assert_eq!(obs.blocks[0], CODE);
    assert_eq!(obs.blocks[1], obs.blocks[2], "loop head");
    assert_eq!(obs.block_ends.len(), 3, "the 3 jnz: {:x?}", obs.block_ends);

    // Stores: 3 loop stores, then the page-crossing store reported per page.
    let vals: Vec<(u64, u64)> = obs.writes.iter().map(|w| (w.vaddr, w.value)).collect();
    assert_eq!(
        vals,
        vec![(DATA + 12, 48), (DATA + 8, 32), (DATA + 4, 16), (DATA + 0xffe, 0x3344), (DATA + 0x1000, 0x1122)]
    );
    assert!(obs.writes.iter().all(|w| w.ram && w.paddr == w.vaddr));
    assert_eq!(obs.reads.len(), 1);
    assert_eq!((obs.reads[0].vaddr, obs.reads[0].value, obs.reads[0].size), (DATA + 4, 16, 4));
}
