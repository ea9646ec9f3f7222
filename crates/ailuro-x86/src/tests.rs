//! Unit tests: small snippets assembled with iced-x86's CodeAssembler, run against a test Platform.
//! Expected values come from the Intel SDM's instruction descriptions.

use super::*;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// Platform that records outward traffic and answers reads with fixed values.
#[derive(Default)]
pub(crate) struct TestPlat {
    pub io_writes: Vec<(u16, u8, u32)>,
    pub io_read_value: u32,
    pub mmio_writes: Vec<(u64, u8, u64)>,
    pub mmio_read_value: u64,
    pub tsc: u64,
    pub vector: u32,
    pub acks: Vec<ProgramPoint>,
    /// Where time-stamp reads happened (the translator must report the interpreter's points).
    pub tsc_reads: Vec<ProgramPoint>,
    pub calls: usize,
}

impl Platform for TestPlat {
    fn io_read(&mut self, _at: ProgramPoint, _port: u16, _size: u8) -> u32 {
        self.calls += 1;
        self.io_read_value
    }
    fn io_write(&mut self, _at: ProgramPoint, port: u16, size: u8, value: u32) {
        self.calls += 1;
        self.io_writes.push((port, size, value));
    }
    fn mmio_read(&mut self, _at: ProgramPoint, _addr: u64, _size: u8) -> u64 {
        self.calls += 1;
        self.mmio_read_value
    }
    fn mmio_write(&mut self, _at: ProgramPoint, addr: u64, size: u8, value: u64) {
        self.calls += 1;
        self.mmio_writes.push((addr, size, value));
    }
    fn read_timestamp(&mut self, at: ProgramPoint) -> u64 {
        self.calls += 1;
        self.tsc_reads.push(at);
        self.tsc += 1000;
        self.tsc
    }
    fn interrupt_ack(&mut self, at: ProgramPoint) -> u32 {
        self.calls += 1;
        self.acks.push(at);
        self.vector
    }
}

pub(crate) const CODE: u64 = 0x10_0000;
pub(crate) const USER_CODE: u64 = 0x20_0000;
pub(crate) const GDT: u64 = 0x1000;
pub(crate) const IDT: u64 = 0x2000;
pub(crate) const STUBS: u64 = 0x3000;
pub(crate) const TSS: u64 = 0x5000;
pub(crate) const STACK: u64 = 0x8_0000;
pub(crate) const STACK0: u64 = 0x7_0000;

pub(crate) fn desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let (base, limit) = (u64::from(base), u64::from(limit));
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (u64::from(access) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (u64::from(flags & 0xf) << 52)
        | ((base >> 24) << 56)
}

pub(crate) fn gate(sel: u16, off: u32, typ: u8) -> u64 {
    u64::from(off & 0xffff) | (u64::from(sel) << 16) | (u64::from(typ) << 40) | (u64::from(off >> 16) << 48)
}

pub(crate) fn asm(bits: u32, base: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(base).unwrap()
}

pub(crate) struct Env {
    pub cpu: Cpu,
    pub ram: GuestRam,
    pub p: TestPlat,
}

impl Env {
    /// Flat 32-bit protected mode at CODE with a GDT (0x10 code, 0x18 data, 0x23 user code,
    /// 0x2b user data, 0x30 TSS), an IDT whose every vector v is an interrupt gate to a `hlt` stub
    /// at STUBS + 16*v, and ESP = STACK.
    pub fn flat(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
        let mut ram = GuestRam::new(0, 8 << 20).unwrap();
        let code = asm(32, CODE, f);
        ram.write(CODE, &code).unwrap();
        let gdt = [
            0,
            0,
            desc(0, 0xfffff, 0x9a, 0xc),
            desc(0, 0xfffff, 0x92, 0xc),
            desc(0, 0xfffff, 0xfa, 0xc),
            desc(0, 0xfffff, 0xf2, 0xc),
            desc(TSS as u32, 0x67, 0x89, 0),
        ];
        for (k, d) in gdt.iter().enumerate() {
            ram.write_u64(GDT + 8 * k as u64, *d).unwrap();
        }
        for v in 0..256u64 {
            let typ = if v == 0x80 { 0xee } else { 0x8e };
            ram.write_u64(IDT + 8 * v, gate(0x10, (STUBS + 16 * v) as u32, typ)).unwrap();
            ram.write(STUBS + 16 * v, &[0xf4]).unwrap();
        }
        ram.write_u32(TSS + 4, STACK0 as u32).unwrap();
        ram.write_u32(TSS + 8, 0x18).unwrap();
        // I/O map base 0x68 = beyond the TSS limit: no I/O bitmap.
        ram.write(TSS + 0x66, &[0x68, 0]).unwrap();
        let mut cpu = Cpu::new(CpuConfig::i386());
        cpu.enter_flat_protected_mode(CODE as u32);
        cpu.s.gdtr = DescTable { base: GDT, limit: 8 * gdt.len() as u32 - 1 };
        cpu.s.idtr = DescTable { base: IDT, limit: 256 * 8 - 1 };
        cpu.s.tr = prot::desc_to_seg(0x30, desc(TSS as u32, 0x67, 0x8b, 0));
        cpu.set_gpr(Gpr::Rsp, STACK);
        Env { cpu, ram, p: TestPlat::default() }
    }

    /// Run until HLT or shutdown (Platform exits just continue).
    pub fn run(&mut self) -> RunExit {
        let limit = self.cpu.icount() + 1_000_000;
        loop {
            match self.cpu.run(&mut self.ram, &mut self.p, limit) {
                RunExit::Platform => continue,
                e => return e,
            }
        }
    }

    /// Run and expect to stop in the exception stub of `vector`.
    pub fn run_expect_vector(&mut self, vector: u8) {
        let e = self.run();
        assert_eq!(e, RunExit::Halted, "{}", self.cpu.info_registers());
        assert_eq!(self.stub_vector(), Some(vector), "{}", self.cpu.info_registers());
    }

    pub fn stub_vector(&self) -> Option<u8> {
        let pc = self.cpu.pc();
        if (STUBS..STUBS + 256 * 16).contains(&pc) && (pc - STUBS) % 16 == 1 {
            Some(((pc - STUBS) / 16) as u8)
        } else {
            None
        }
    }

    pub fn r(&self, g: Gpr) -> u32 {
        self.cpu.gpr(g) as u32
    }

    pub fn stack(&self, k: u64) -> u32 {
        let top = self.cpu.gpr(Gpr::Rsp);
        self.ram.read_u32(top + 4 * k).unwrap()
    }

    pub fn status(&self) -> u64 {
        self.cpu.rflags() & STATUS
    }
}

pub(crate) fn run_flat_pub(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    run_flat(f)
}

fn run_flat(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = Env::flat(f);
    let x = e.run();
    assert_eq!(x, RunExit::Halted, "{}", e.cpu.info_registers());
    e
}

// ---------------------------------------------------------------- arithmetic flags

#[test]
fn add_flags_edges() {
    let e = run_flat(|a| {
        a.mov(eax, 0x7fff_ffff)?;
        a.add(eax, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x8000_0000);
    assert_eq!(e.status(), OF | SF | AF | PF);
    let e = run_flat(|a| {
        a.mov(eax, -1)?;
        a.add(eax, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0);
    assert_eq!(e.status(), CF | ZF | AF | PF);
    let e = run_flat(|a| {
        a.mov(al, 0x80)?;
        a.add(al, 0x80)?;
        a.hlt()
    });
    assert_eq!(e.status(), CF | ZF | PF | OF);
}

#[test]
fn adc_sbb_use_carry() {
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(eax, -1)?;
        a.adc(eax, 0)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0);
    assert_eq!(e.status(), CF | ZF | AF | PF);
    let e = run_flat(|a| {
        a.stc()?;
        a.xor(eax, eax)?;
        a.stc()?;
        a.sbb(eax, 0)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0xffff_ffff);
    assert_eq!(e.status(), CF | SF | AF | PF);
    // 0x7fffffff - (-1) - 0 overflows.
    let e = run_flat(|a| {
        a.clc()?;
        a.mov(eax, 0x7fff_ffff)?;
        a.mov(ecx, -1)?;
        a.sbb(eax, ecx)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x8000_0000);
    assert_eq!(e.status() & (OF | CF | SF), OF | CF | SF);
}

#[test]
fn sub_cmp_neg_inc_dec_flags() {
    let e = run_flat(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.sub(eax, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x7fff_ffff);
    assert_eq!(e.status(), OF | AF | PF);
    let e = run_flat(|a| {
        a.xor(eax, eax)?;
        a.cmp(eax, 1)?;
        a.hlt()
    });
    assert_eq!(e.status(), CF | SF | AF | PF);
    let e = run_flat(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.neg(eax)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x8000_0000);
    assert_eq!(e.status(), OF | CF | SF | PF);
    let e = run_flat(|a| {
        a.xor(eax, eax)?;
        a.neg(eax)?;
        a.hlt()
    });
    assert_eq!(e.status(), ZF | PF);
    // INC/DEC keep CF.
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(eax, 0x7fff_ffff)?;
        a.inc(eax)?;
        a.hlt()
    });
    assert_eq!(e.status(), CF | OF | SF | AF | PF);
    let e = run_flat(|a| {
        a.clc()?;
        a.mov(ecx, 0x8000_0000u32 as i32)?;
        a.dec(ecx)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rcx), 0x7fff_ffff);
    assert_eq!(e.status(), OF | AF | PF);
}

#[test]
fn logic_clears_cf_of() {
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(eax, 0xf0)?;
        a.and(eax, 0x0f)?;
        a.hlt()
    });
    assert_eq!(e.status(), ZF | PF);
    let e = run_flat(|a| {
        a.mov(ax, 0x8001u16 as i32)?;
        a.test(ax, ax)?;
        a.not(ax)?;
        a.hlt()
    });
    assert_eq!(e.status(), SF);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x7ffe);
}

// ---------------------------------------------------------------- shifts and rotates

#[test]
fn shifts_by_zero_one_n_and_width() {
    // Count 0: flags untouched.
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(eax, 0)?;
        a.mov(cl, 32)?;
        a.shl(eax, cl)?;
        a.hlt()
    });
    assert_eq!(e.status() & CF, CF);
    let e = run_flat(|a| {
        a.mov(al, 0x80)?;
        a.shl(al, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0);
    assert_eq!(e.status() & (CF | OF | ZF), CF | OF | ZF);
    let e = run_flat(|a| {
        a.mov(al, 0x81)?;
        a.shr(al, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x40);
    assert_eq!(e.status() & (CF | OF), CF | OF);
    let e = run_flat(|a| {
        a.mov(al, 0x80)?;
        a.sar(al, 7)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0xff);
    assert_eq!(e.status() & (CF | OF), 0);
    // 16-bit shift by 16: result 0, CF = last bit out = original bit 0.
    let e = run_flat(|a| {
        a.mov(ax, 1)?;
        a.mov(cl, 16)?;
        a.shl(ax, cl)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0);
    assert_eq!(e.status() & (CF | ZF), CF | ZF);
    let e = run_flat(|a| {
        a.mov(eax, 0x1234_5678)?;
        a.shr(eax, 4)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x0123_4567);
    assert_eq!(e.status() & CF, CF);
}

#[test]
fn rotates() {
    let e = run_flat(|a| {
        a.clc()?;
        a.mov(al, 0x81)?;
        a.rol(al, 8)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x81);
    assert_eq!(e.status() & CF, CF);
    let e = run_flat(|a| {
        a.mov(eax, 0x8000_0001u32 as i32)?;
        a.ror(eax, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0xc000_0000);
    assert_eq!(e.status() & (CF | OF), CF);
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(al, 0x01)?;
        a.rcr(al, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x80);
    assert_eq!(e.status() & (CF | OF), CF | OF);
    let e = run_flat(|a| {
        a.stc()?;
        a.mov(al, 0x80)?;
        a.rcl(al, 1)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x01);
    assert_eq!(e.status() & (CF | OF), CF | OF);
    // RCL 8-bit by 9 is a no-op (count mod 9 == 0).
    let e = run_flat(|a| {
        a.clc()?;
        a.mov(al, 0x5a)?;
        a.rcl(al, 9)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x5a);
    assert_eq!(e.status() & CF, 0);
}

#[test]
fn shld_shrd() {
    let e = run_flat(|a| {
        a.mov(eax, 0x1234_5678)?;
        a.mov(edx, 0x9abc_def0u32 as i32)?;
        a.shld(eax, edx, 8)?;
        a.mov(ecx, 0x1234_5678)?;
        a.shrd(ecx, edx, 8)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0x3456_789a);
    assert_eq!(e.r(Gpr::Rcx), 0xf012_3456);
    assert_eq!(e.status() & CF, 0); // last bit out of SHRD: bit 7 of 0x12345678 = 0
}

// ---------------------------------------------------------------- multiply and divide

#[test]
fn mul_imul_forms() {
    let e = run_flat(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.mov(ecx, 4)?;
        a.mul(ecx)?;
        a.hlt()
    });
    assert_eq!((e.r(Gpr::Rdx), e.r(Gpr::Rax)), (2, 0));
    assert_eq!(e.status() & (CF | OF), CF | OF);
    let e = run_flat(|a| {
        a.mov(eax, -3)?;
        a.mov(ecx, 5)?;
        a.imul(ecx)?;
        a.hlt()
    });
    assert_eq!((e.r(Gpr::Rdx), e.r(Gpr::Rax)), (0xffff_ffff, (-15i32) as u32));
    assert_eq!(e.status() & (CF | OF), 0);
    let e = run_flat(|a| {
        a.mov(ecx, 0x10000)?;
        a.imul_3(eax, ecx, 0x10000)?;
        a.mov(ebx, 7)?;
        a.imul_2(ebx, ecx)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 0);
    assert_eq!(e.r(Gpr::Rbx), 0x70000);
    assert_eq!(e.status() & (CF | OF), 0);
    let e = run_flat(|a| {
        a.mov(al, 0x80u8 as i32)?;
        a.mov(cl, 2)?;
        a.imul(cl)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0xff00);
    assert_eq!(e.status() & (CF | OF), CF | OF);
}

#[test]
fn div_idiv_and_de() {
    let e = run_flat(|a| {
        a.mov(edx, 1)?;
        a.mov(eax, 5)?;
        a.mov(ecx, 2)?;
        a.div(ecx)?;
        a.hlt()
    });
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rdx)), (0x8000_0002, 1));
    let e = run_flat(|a| {
        a.mov(eax, -7)?;
        a.cdq()?;
        a.mov(ecx, 2)?;
        a.idiv(ecx)?;
        a.hlt()
    });
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rdx)), ((-3i32) as u32, (-1i32) as u32));
    let mut e = Env::flat(|a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)?;
        a.hlt()
    });
    e.run_expect_vector(0);
    assert_eq!(u64::from(e.stack(0)), CODE + 2, "#DE is a fault: EIP of the div");
    assert_eq!(e.cpu.icount(), 2, "faulting div does not retire (xor + stub hlt)");
    // Quotient overflow: INT_MIN / -1.
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.cdq()?;
        a.mov(ecx, -1)?;
        a.idiv(ecx)?;
        a.hlt()
    });
    e.run_expect_vector(0);
    let mut e = Env::flat(|a| {
        a.mov(ax, 0x1000)?;
        a.mov(cl, 0x10)?;
        a.div(cl)?;
        a.hlt()
    });
    e.run_expect_vector(0);
}

// ---------------------------------------------------------------- bit operations

#[test]
fn bit_ops() {
    let e = run_flat(|a| {
        a.mov(eax, 0x10)?;
        a.bt(eax, 4)?;
        a.setc(bl)?;
        a.bts(eax, 0)?;
        a.btr(eax, 4)?;
        a.btc(eax, 31)?;
        a.mov(ecx, 0x0100_0000)?;
        a.bsf(edx, ecx)?;
        a.bsr(esi, eax)?;
        a.mov(edi, 0x1122_3344)?;
        a.bswap(edi)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbx) & 0xff, 1);
    assert_eq!(e.r(Gpr::Rax), 0x8000_0001);
    assert_eq!(e.r(Gpr::Rdx), 24);
    assert_eq!(e.r(Gpr::Rsi), 31);
    assert_eq!(e.r(Gpr::Rdi), 0x4433_2211);
    // BSF of zero: ZF=1, destination unchanged.
    let e = run_flat(|a| {
        a.mov(edx, 77)?;
        a.xor(ecx, ecx)?;
        a.bsf(edx, ecx)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rdx), 77);
    assert_eq!(e.status() & ZF, ZF);
    // BTS with a register bit offset reaches beyond the operand (and backwards when negative).
    let mut e = Env::flat(|a| {
        a.mov(ebx, 0x40_0000)?;
        a.mov(ecx, 35)?;
        a.bts(dword_ptr(ebx), ecx)?;
        a.mov(ecx, -1)?;
        a.bts(dword_ptr(ebx), ecx)?;
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.ram.read_u32(0x40_0004).unwrap(), 8);
    assert_eq!(e.ram.read_u32(0x3f_fffc).unwrap(), 0x8000_0000);
}

// ---------------------------------------------------------------- data movement, conditionals

#[test]
fn movzx_movsx_lea_xchg_cmov_setcc() {
    let e = run_flat(|a| {
        a.mov(ecx, 0xff80)?;
        a.movzx(eax, cl)?;
        a.movsx(ebx, cl)?;
        a.movsx(edx, cx)?;
        a.lea(esi, ptr(ebx + ecx * 4 + 0x10))?;
        a.mov(edi, 1)?;
        a.xchg(edi, ecx)?;
        a.cmp(edi, ecx)?;
        a.cmovb(ebp, ecx)?;
        a.setl(ah)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x80);
    assert_eq!((e.r(Gpr::Rax) >> 8) & 0xff, 0);
    assert_eq!(e.r(Gpr::Rbx), 0xffff_ff80);
    assert_eq!(e.r(Gpr::Rdx), 0xffff_ff80);
    assert_eq!(e.r(Gpr::Rsi), 0xffff_ff80u32.wrapping_add(0xff80 * 4 + 0x10));
    assert_eq!(e.r(Gpr::Rbp), 0);
    let e = run_flat(|a| {
        a.mov(eax, 5)?;
        a.mov(ecx, 9)?;
        a.cmp(eax, ecx)?;
        a.cmovl(edx, ecx)?;
        a.setg(bl)?;
        a.setle(bh)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rdx), 9);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0x0100);
}

#[test]
fn xadd_cmpxchg_cmpxchg8b() {
    let e = run_flat(|a| {
        a.mov(dword_ptr(0x40_0000), 10)?;
        a.mov(ecx, 5)?;
        a.xadd(dword_ptr(0x40_0000), ecx)?;
        a.mov(eax, 15)?;
        a.mov(edx, 99)?;
        a.cmpxchg(dword_ptr(0x40_0000), edx)?;
        a.setz(bl)?;
        a.mov(eax, 1)?;
        a.cmpxchg(dword_ptr(0x40_0000), edx)?;
        a.setz(bh)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rcx), 10);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap(), 99);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0x0001);
    assert_eq!(e.r(Gpr::Rax), 99);
    let e = run_flat(|a| {
        a.mov(dword_ptr(0x40_0000), 1)?;
        a.mov(dword_ptr(0x40_0004), 2)?;
        a.mov(eax, 1)?;
        a.mov(edx, 2)?;
        a.mov(ebx, 3)?;
        a.mov(ecx, 4)?;
        a.cmpxchg8b(qword_ptr(0x40_0000))?;
        a.hlt()
    });
    assert_eq!(e.ram.read_u64(0x40_0000).unwrap(), 0x4_0000_0003);
    assert_eq!(e.status() & ZF, ZF);
}

#[test]
fn conversions_and_flag_ops() {
    let e = run_flat(|a| {
        a.mov(eax, 0x80)?;
        a.cbw()?;
        a.cwde()?;
        a.cdq()?;
        a.mov(ecx, eax)?;
        a.mov(eax, 0)?;
        a.stc()?;
        a.lahf()?;
        a.cmc()?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rcx), 0xffff_ff80);
    assert_eq!(e.r(Gpr::Rdx), 0xffff_ffff);
    assert_eq!((e.r(Gpr::Rax) >> 8) & 0xff, 0x03);
    assert_eq!(e.status() & CF, 0);
}

// ---------------------------------------------------------------- BCD

#[test]
fn bcd_adjusts() {
    // SDM examples: 79 + 35 = 114 (DAA), 35 - 47 = -12 -> 88 borrow (DAS).
    let e = run_flat(|a| {
        a.mov(al, 0x79)?;
        a.add(al, 0x35)?;
        a.daa()?;
        a.mov(bl, al)?;
        a.mov(al, 0x35)?;
        a.sub(al, 0x47)?;
        a.das()?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbx) & 0xff, 0x14);
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x88);
    assert_eq!(e.status() & CF, CF);
    let e = run_flat(|a| {
        a.mov(ax, 6)?;
        a.add(al, 5)?;
        a.aaa()?;
        a.mov(bx, ax)?;
        a.mov(al, 63)?;
        a.aam(10)?;
        a.mov(cx, ax)?;
        a.aad(10)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0x0101);
    assert_eq!(e.r(Gpr::Rcx) & 0xffff, 0x0603);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 63);
    let mut e = Env::flat(|a| {
        a.aam(0)?;
        a.hlt()
    });
    e.run_expect_vector(0);
}

// ---------------------------------------------------------------- control flow and stack

#[test]
fn call_ret_loop_jecxz() {
    let e = run_flat(|a| {
        let mut f = a.create_label();
        let mut top = a.create_label();
        let mut done = a.create_label();
        a.xor(eax, eax)?;
        a.mov(ecx, 10)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.loop_(top)?;
        a.jecxz(done)?;
        a.hlt()?;
        a.set_label(&mut done)?;
        a.call(f)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.mov(ebx, dword_ptr(esp))?;
        a.ret_1(4)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 55);
    assert_eq!(e.r(Gpr::Rsp) as u64, STACK + 4);
    // 2 + 10*2 + jecxz + call + mov + ret + hlt
    assert_eq!(e.cpu.icount(), 2 + 20 + 1 + 1 + 2 + 1);
}

#[test]
fn push_pop_pusha_enter_leave() {
    let e = run_flat(|a| {
        a.mov(eax, 1)?;
        a.mov(ecx, 2)?;
        a.mov(edx, 3)?;
        a.mov(ebx, 4)?;
        a.mov(ebp, 6)?;
        a.mov(esi, 7)?;
        a.mov(edi, 8)?;
        a.pushad()?;
        a.mov(esi, dword_ptr(esp + 12))?; // saved ESP
        a.xor(eax, eax)?;
        a.mov(edi, 0)?;
        a.popad()?;
        a.push(0x1234)?;
        a.pop(word_ptr(0x40_0000))?;
        a.pop(word_ptr(0x40_0002))?;
        a.pushfd()?;
        a.pop(ecx)?;
        a.enter(8, 0)?;
        a.mov(edx, ebp)?;
        a.leave()?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 1);
    assert_eq!(e.r(Gpr::Rdi), 8);
    assert_eq!(e.r(Gpr::Rsi), 7);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap(), 0x1234);
    assert_eq!(e.r(Gpr::Rcx) & 2, 2);
    assert_eq!(u64::from(e.r(Gpr::Rdx)), STACK - 4);
    assert_eq!(u64::from(e.r(Gpr::Rsp)), STACK);
    assert_eq!(e.r(Gpr::Rbp), 6);
}

#[test]
fn indirect_jmp_and_call() {
    let e = run_flat(|a| {
        a.mov(eax, (CODE + 0x30) as i32)?;
        a.call(eax)?;
        a.hlt()?;
        a.db(&[0x90; 0x30])?;
        a.hlt()
    });
    // call eax lands in the nop sled at CODE+0x30 and runs to the hlt at CODE+0x38.
    assert_eq!(e.cpu.pc(), CODE + 0x39);
    assert_eq!(u64::from(e.stack(0)), CODE + 7);
    assert_eq!(e.cpu.icount(), 2 + 8 + 1);
    let mut e = Env::flat(|a| {
        a.mov(dword_ptr(0x40_0000), (CODE + 0x20) as i32)?;
        a.jmp(dword_ptr(0x40_0000))?;
        a.db(&[0x90; 0x30])?;
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.icount(), 2 + 0x20 + 1);
}

// ---------------------------------------------------------------- strings

#[test]
fn rep_movs_counts_each_iteration() {
    let mut e = Env::flat(|a| {
        a.mov(esi, 0x40_0000)?;
        a.mov(edi, 0x40_1000)?;
        a.mov(ecx, 5)?;
        a.cld()?;
        a.rep().movsb()?;
        a.hlt()
    });
    e.ram.write(0x40_0000, b"hello").unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    let mut buf = [0u8; 5];
    e.ram.read(0x40_1000, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(e.cpu.icount(), 4 + 5 + 1);
    assert_eq!(e.r(Gpr::Rcx), 0);
    // Zero count retires once.
    let e = run_flat(|a| {
        a.xor(ecx, ecx)?;
        a.rep().stosd()?;
        a.hlt()
    });
    assert_eq!(e.cpu.icount(), 3);
}

#[test]
fn rep_stops_at_limit_between_iterations() {
    let mut e = Env::flat(|a| {
        a.mov(edi, 0x40_0000)?;
        a.mov(ecx, 100)?;
        a.mov(eax, 0x5a)?;
        a.rep().stosb()?;
        a.hlt()
    });
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 10), RunExit::Limit);
    assert_eq!(e.cpu.icount(), 10);
    assert_eq!(e.r(Gpr::Rcx), 93);
    assert_eq!(e.cpu.pc(), CODE + 15, "EIP stays on the rep instruction");
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.icount(), 3 + 100 + 1);
}

#[test]
fn repe_cmps_and_repne_scas() {
    let mut e = Env::flat(|a| {
        a.mov(esi, 0x40_0000)?;
        a.mov(edi, 0x40_1000)?;
        a.mov(ecx, 8)?;
        a.repe().cmpsb()?;
        a.mov(ebx, ecx)?;
        a.mov(edi, 0x40_0000)?;
        a.mov(ecx, 8)?;
        a.mov(al, b'c' as i32)?;
        a.repne().scasb()?;
        a.hlt()
    });
    e.ram.write(0x40_0000, b"abcdefgh").unwrap();
    e.ram.write(0x40_1000, b"abcxefgh").unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rbx), 4, "stopped after the 4th compare");
    assert_eq!(e.r(Gpr::Rcx), 5);
    assert_eq!(e.r(Gpr::Rdi), 0x40_0003);
    assert_eq!(e.status() & ZF, ZF);
}

#[test]
fn lods_std_and_outs_ins() {
    let mut e = Env::flat(|a| {
        a.mov(esi, 0x40_0003)?;
        a.std()?;
        a.lodsb()?;
        a.cld()?;
        a.mov(esi, 0x40_0000)?;
        a.mov(dx, 0x3f8)?;
        a.mov(ecx, 3)?;
        a.rep().outsb()?;
        a.mov(edi, 0x40_0100)?;
        a.mov(ecx, 2)?;
        a.rep().insw()?;
        a.hlt()
    });
    e.ram.write(0x40_0000, b"xyzw").unwrap();
    e.p.io_read_value = 0xbeef;
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax) & 0xff, u32::from(b'w'));
    assert_eq!(e.r(Gpr::Rsi), 0x40_0003);
    assert_eq!(
        e.p.io_writes,
        vec![(0x3f8, 1, u32::from(b'x')), (0x3f8, 1, u32::from(b'y')), (0x3f8, 1, u32::from(b'z'))]
    );
    assert_eq!(e.ram.read_u32(0x40_0100).unwrap(), 0xbeef_beef);
}

// ---------------------------------------------------------------- platform, exits

#[test]
fn io_returns_platform_exit_after_instruction() {
    let mut e = Env::flat(|a| {
        a.mov(al, 0x41)?;
        a.out(0xe9, al)?;
        a.mov(dx, 0x60)?;
        a.in_(eax, dx)?;
        a.hlt()
    });
    e.p.io_read_value = 0x1234_5678;
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.cpu.icount(), 2);
    assert_eq!(e.p.io_writes, vec![(0xe9, 1, 0x41)]);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.r(Gpr::Rax), 0x1234_5678);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Halted);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Halted, "still halted, nothing executed");
    assert_eq!(e.cpu.icount(), 5);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 5), RunExit::Limit);
}

#[test]
fn mmio_and_rdtsc_cpuid_msr() {
    let mut e = Env::flat(|a| {
        a.mov(dword_ptr(0xfee0_0080u32 as i32), 0x55)?;
        a.mov(ebx, dword_ptr(0xfee0_0030u32 as i32))?;
        a.rdtsc()?;
        a.mov(esi, eax)?;
        a.mov(ecx, 0x174)?;
        a.mov(eax, 0x10)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.rdmsr()?;
        a.mov(edi, eax)?;
        a.mov(eax, 1)?;
        a.cpuid()?;
        a.hlt()
    });
    e.p.mmio_read_value = 0x0005_0014;
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.p.mmio_writes, vec![(0xfee0_0080, 4, 0x55)]);
    assert_eq!(e.r(Gpr::Rbx), 0);
    assert_eq!(e.r(Gpr::Rsi), 1000);
    assert_eq!(e.r(Gpr::Rdi), 0x10);
    assert_eq!(e.r(Gpr::Rax), CPUID_SIGNATURE);
    let feat = e.r(Gpr::Rdx);
    assert_ne!(feat & 1, 0, "FPU advertised");
    assert_ne!(feat & (1 << 11), 0, "SEP");
    assert_ne!(feat & (1 << 6), 0, "PAE");
    assert_ne!(feat & (1 << 23), 0, "MMX");
}

#[test]
fn fetch_from_non_ram_is_shutdown() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0xf000_0000u32 as i32)?;
        a.jmp(eax)
    });
    match e.run() {
        RunExit::Shutdown { reason } => assert!(reason.contains("non-RAM"), "{reason}"),
        x => panic!("{x:?}"),
    }
}

// ---------------------------------------------------------------- interrupts

#[test]
fn hlt_wakes_on_intr_with_if() {
    let mut e = Env::flat(|a| {
        a.sti()?;
        a.hlt()?;
        a.hlt()
    });
    e.p.vector = 0x20;
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Halted);
    assert!(e.cpu.is_halted());
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Halted);
    e.cpu.set_intr(true);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.p.acks, vec![ProgramPoint { icount: 2, pc: CODE + 2 }]);
    assert!(!e.cpu.is_halted());
    assert_eq!(e.cpu.pc(), STUBS + 16 * 0x20);
    assert_eq!(u64::from(e.stack(0)), CODE + 2, "return address after the hlt");
    assert_eq!(e.cpu.rflags() & IF, 0, "interrupt gate clears IF");
    e.cpu.set_intr(false);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Halted);
}

#[test]
fn sti_shadow_delays_interrupt_by_one_instruction() {
    let mut e = Env::flat(|a| {
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    e.p.vector = 0x21;
    e.cpu.set_intr(true);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.p.acks[0].icount, 2, "taken after sti and the following nop");
}

#[test]
fn int_n_retires_then_delivers() {
    let mut e = Env::flat(|a| {
        a.nop()?;
        a.int(0x40)?;
        a.hlt()
    });
    e.run_expect_vector(0x40);
    assert_eq!(e.cpu.icount(), 3, "nop + int + stub hlt");
    assert_eq!(u64::from(e.stack(0)), CODE + 3);
    assert_eq!(e.stack(1), 0x10);
}

#[test]
fn ud2_and_gp_error_code() {
    let mut e = Env::flat(|a| a.ud2());
    e.run_expect_vector(6);
    assert_eq!(u64::from(e.stack(0)), CODE);
    assert_eq!(e.cpu.icount(), 1);
    // Loading a selector beyond the GDT limit: #GP(selector).
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x80)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0x80);
    assert_eq!(u64::from(e.stack(1)), CODE + 5);
    // Loading a code selector into SS: #GP(sel).
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x10)?;
        a.mov(ss, ax)?;
        a.hlt()
    });
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0x10);
    // Null DS is fine to load but faults on use.
    let mut e = Env::flat(|a| {
        a.xor(eax, eax)?;
        a.mov(ds, ax)?;
        a.mov(ebx, dword_ptr(0x1000))?;
        a.hlt()
    });
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0);
}

#[test]
fn segment_limit_checks() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(es, ax)?;
        a.mov(dword_ptr(0xffc).es(), 1)?;
        a.mov(dword_ptr(0xffd).es(), 1)?;
        a.hlt()
    });
    // 0x38: data segment base 0x40_0000 limit 0xfff, byte granular.
    e.ram.write_u64(GDT + 0x38, desc(0x40_0000, 0xfff, 0x92, 0x4)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(13);
    assert_eq!(e.ram.read_u32(0x40_0ffc).unwrap(), 1);
    assert_eq!(e.cpu.icount(), 4);
}

#[test]
fn double_fault_and_triple_fault() {
    // #GP whose gate is not present -> #NP while delivering a contributory exception -> #DF.
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x80)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    let g = e.ram.read_u64(IDT + 13 * 8).unwrap();
    e.ram.write_u64(IDT + 13 * 8, g & !(1 << 47)).unwrap();
    e.run_expect_vector(8);
    assert_eq!(e.stack(0), 0, "#DF error code is 0");
    // No usable IDT at all: #GP -> #DF -> triple fault.
    let mut e = Env::flat(|a| a.ud2());
    e.cpu.s.idtr.limit = 0;
    match e.run() {
        RunExit::Shutdown { reason } => assert!(reason.contains("triple"), "{reason}"),
        x => panic!("{x:?}"),
    }
    assert!(matches!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Shutdown { .. }));
}

#[test]
fn ring3_int_switches_to_tss_stack_and_iret_returns() {
    let user = asm(32, USER_CODE, |a| {
        a.mov(eax, 0x77)?;
        a.int(0x80)?;
        a.mov(ebx, 0x88)?;
        a.int(0x80)
    });
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x202)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.iretd()
    });
    e.ram.write(USER_CODE, &user).unwrap();
    // Handler for 0x80: iretd straight back.
    e.ram.write(STUBS + 16 * 0x80, &[0xcf]).unwrap();
    e.ram.write(STUBS + 16 * 0x81, &[0xf4]).unwrap();
    let x = e.cpu.run(&mut e.ram, &mut e.p, 8);
    assert_eq!(x, RunExit::Limit);
    // 6 setup instructions + mov + int: now in the handler at ring 0.
    assert_eq!(e.cpu.cpl(), 0);
    assert_eq!(e.cpu.segment(SegReg::Ss).selector, 0x18);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), STACK0 - 20);
    assert_eq!(u64::from(e.stack(0)), USER_CODE + 7);
    assert_eq!(e.stack(1), 0x23);
    assert_eq!(e.stack(2) & 0x200, 0x200);
    assert_eq!(e.stack(3), 0x9_0000);
    assert_eq!(e.stack(4), 0x2b);
    // iretd back to ring 3, mov, second int 0x80 (handler iret again) ... stop after the mov.
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 10), RunExit::Limit);
    assert_eq!(e.cpu.cpl(), 3);
    assert_eq!(e.r(Gpr::Rbx), 0x88);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), 0x9_0000);
    // HLT at ring 3 is #GP(0).
    e.ram.write(USER_CODE + 14, &[0xf4]).unwrap();
    e.cpu.set_rip(USER_CODE + 14);
    e.run_expect_vector(13);
    assert_eq!(e.cpu.segment(SegReg::Ss).selector, 0x18);
}

// ---------------------------------------------------------------- paging

pub(crate) fn paging_env(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = Env::flat(f);
    // Page directory at 0x10000: 0-4 MiB through a page table at 0x11000 (supervisor, RW),
    // 4-8 MiB as one 4 MiB user read-only page.
    let pd = 0x10000u64;
    let pt = 0x11000u64;
    e.ram.write_u32(pd, (pt as u32) | 0x3).unwrap();
    e.ram.write_u32(pd + 4, 0x40_0000 | 0x80 | 0x5).unwrap();
    for k in 0..1024u64 {
        e.ram.write_u32(pt + 4 * k, ((k << 12) as u32) | 0x3).unwrap();
    }
    // Page 0x300000 is not present.
    e.ram.write_u32(pt + 4 * 0x300, 0).unwrap();
    e.cpu.s.cr3 = pd;
    e.cpu.s.cr4 = CR4_PSE;
    e.cpu.s.cr0 |= CR0_PG;
    e
}

#[test]
fn paging_translates_and_sets_accessed_dirty() {
    let mut e = paging_env(|a| {
        a.mov(eax, dword_ptr(0x20_1000))?;
        a.mov(dword_ptr(0x20_2000), 5)?;
        a.mov(ebx, dword_ptr(0x40_0010))?;
        a.hlt()
    });
    e.ram.write_u32(0x40_0010, 0xabcd).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rbx), 0xabcd);
    let pte = |e: &Env, a: u64| e.ram.read_u32(0x11000 + 4 * (a >> 12)).unwrap();
    assert_eq!(pte(&e, 0x20_1000) & 0x60, 0x20, "read: A set, D clear");
    assert_eq!(pte(&e, 0x20_2000) & 0x60, 0x60, "write: A and D set");
    assert_eq!(e.ram.read_u32(0x10000).unwrap() & 0x20, 0x20, "PDE accessed");
    assert_eq!(e.ram.read_u32(0x10004).unwrap() & 0x60, 0x20, "4 MiB page accessed");
}

#[test]
fn page_fault_error_codes_and_cr2() {
    let mut e = paging_env(|a| {
        a.mov(dword_ptr(0x30_0004), 1)?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!(e.cpu.cr(2), 0x30_0004);
    assert_eq!(e.stack(0), 0x2, "not present, write, supervisor");
    assert_eq!(e.cpu.icount(), 1, "only the stub's hlt retired");
    // Supervisor write to a read-only user page with WP=1 -> protection violation.
    let mut e = paging_env(|a| {
        a.mov(eax, cr0)?;
        a.or(eax, 1 << 16)?;
        a.mov(cr0, eax)?;
        a.mov(dword_ptr(0x40_0000), 1)?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!(e.stack(0), 0x3);
    assert_eq!(e.cpu.cr(2), 0x40_0000);
    // Without WP the supervisor may write it (and D is set in the PDE).
    let mut e = paging_env(|a| {
        a.mov(dword_ptr(0x40_0000), 1)?;
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.ram.read_u32(0x10004).unwrap() & 0x40, 0x40);
}

#[test]
fn user_access_to_supervisor_page_faults() {
    let user = asm(32, 0x40_0000, |a| {
        // IRET to ring 3 nulled DS (DPL 0 < CPL 3): load the user data segment.
        a.mov(ax, 0x2b)?;
        a.mov(ds, ax)?;
        a.mov(eax, dword_ptr(0x40_0100))?;
        a.mov(ebx, dword_ptr(0x20_0000))?;
        a.hlt()
    });
    let mut e = paging_env(|a| {
        a.push(0x2b)?;
        a.push(0x40_1000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(0x40_0000)?;
        a.iretd()
    });
    e.ram.write(0x40_0000, &user).unwrap();
    e.run_expect_vector(14);
    assert_eq!(e.stack(0), 0x5, "present, read, user");
    assert_eq!(e.cpu.cr(2), 0x20_0000);
    assert_eq!(u64::from(e.stack(1)), 0x40_0000 + 12);
}

#[test]
fn tlb_needs_invlpg_and_cr3_reload() {
    let mut e = paging_env(|a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        // Remap 0x205000 -> 0x206000 without invalidating: the stale TLB entry is still used.
        a.mov(dword_ptr(0x11000 + 4 * 0x205), 0x20_6003)?;
        a.mov(ebx, dword_ptr(0x20_5000))?;
        a.invlpg(ptr(0x20_5000))?;
        a.mov(ecx, dword_ptr(0x20_5000))?;
        a.hlt()
    });
    e.ram.write_u32(0x20_5000, 1).unwrap();
    e.ram.write_u32(0x20_6000, 2).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rbx), e.r(Gpr::Rcx)), (1, 1, 2));
}

// ---------------------------------------------------------------- self-modifying code

#[test]
fn self_modifying_code_is_redecoded() {
    // Loop twice over an instruction that the loop body rewrites: mov eax, imm32 at `patch`.
    let mut e = Env::flat(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 2)?;
        a.set_label(&mut top)?;
        a.mov(eax, 1)?; // CODE+5: b8 01 00 00 00
        a.mov(dword_ptr((CODE + 6) as i32), 42)?;
        a.loop_(top)?;
        // Patch the very next instruction: the write hits the current page.
        a.mov(byte_ptr((CODE + 29) as i32), 0x43)?; // inc eax -> inc ebx
        a.inc(eax)?; // CODE+29
        a.hlt()
    });
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax), 42);
    assert_eq!(e.r(Gpr::Rbx), 1);
}

#[test]
fn invalidate_code_from_outside() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 1)?;
        a.hlt()?;
        a.jmp(CODE)
    });
    assert_eq!(e.run(), RunExit::Halted);
    e.ram.write(CODE + 1, &[7]).unwrap();
    e.cpu.invalidate_code(CODE + 1, 1);
    e.cpu.set_rip(CODE);
    e.cpu.s.halted = false;
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax), 7);
}

// ---------------------------------------------------------------- state

#[test]
fn save_load_hash_roundtrip() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 3)?;
        a.hlt()
    });
    let h0 = e.cpu.state_hash();
    let bytes = e.cpu.save_state();
    assert_eq!(e.run(), RunExit::Halted);
    assert_ne!(e.cpu.state_hash(), h0);
    let after = e.cpu.state_hash();
    e.cpu.load_state(&bytes).unwrap();
    assert_eq!(e.cpu.state_hash(), h0);
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.state_hash(), after);
    let mut other = Cpu::new(CpuConfig::default());
    other.load_state(&bytes).unwrap();
    assert_eq!(other.state_hash(), h0);
    assert!(e.cpu.info_registers().contains("EAX=00000003"));
}

#[test]
fn load_state_rejects_garbage() {
    let mut cpu = Cpu::new(CpuConfig::default());
    assert!(cpu.load_state(&[]).is_err());
    assert!(cpu.load_state(&[0xff; 7]).is_err());
    let mut good = cpu.save_state();
    good.push(0);
    assert!(matches!(cpu.load_state(&good), Err(CpuStateError::Invalid(_))));
    let mut bad_version = cpu.save_state();
    bad_version[0] = 9;
    assert!(matches!(cpu.load_state(&bad_version), Err(CpuStateError::Version { .. })));
    for n in 0..cpu.save_state().len() {
        let _ = cpu.load_state(&cpu.save_state()[..n]);
    }
}

// ---------------------------------------------------------------- real mode

#[test]
fn real_mode_reset_vector_and_ivt() {
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    // At F000:FFF0 (linear 0xFFFF0 since RAM covers the low MiB and CS.base is 0xFFFF0000 at reset,
    // we start from a far jump placed by hand instead): use CS=0, IP=0x7c00.
    let code = asm(16, 0x7c00, |a| {
        a.mov(ax, 0x1234)?;
        a.mov(ds, ax)?;
        a.mov(word_ptr(0x10), 0xbeef)?; // DS:0x10 = 0x12350
        a.int(0x21)?;
        a.hlt()
    });
    ram.write(0x7c00, &code).unwrap();
    // IVT entry 0x21 -> 0000:0x8000, handler: mov bx, [0x10] (DS still 0x1234); iret.
    ram.write_u32(0x21 * 4, 0x8000).unwrap();
    let h = asm(16, 0x8000, |a| {
        a.mov(bx, word_ptr(0x10))?;
        a.iret()
    });
    ram.write(0x8000, &h).unwrap();
    let mut cpu = Cpu::new(CpuConfig::default());
    cpu.load_seg_real_for_test(0, 0x7c00);
    cpu.set_gpr(Gpr::Rsp, 0x7000);
    let mut p = TestPlat::default();
    assert_eq!(cpu.run(&mut ram, &mut p, 1000), RunExit::Halted);
    assert_eq!(ram.read_u32(0x12350).unwrap() & 0xffff, 0xbeef);
    assert_eq!(cpu.gpr(Gpr::Rbx) & 0xffff, 0xbeef);
    assert_eq!(cpu.gpr(Gpr::Rsp), 0x7000);
    assert_eq!(cpu.icount(), 7);
}

#[test]
fn real_to_protected_mode_switch() {
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    let gdt = [0u64, 0, desc(0, 0xfffff, 0x9a, 0xc), desc(0, 0xfffff, 0x92, 0xc)];
    for (k, d) in gdt.iter().enumerate() {
        ram.write_u64(0x500 + 8 * k as u64, *d).unwrap();
    }
    // GDTR image at 0x600.
    ram.write(0x600, &[0x1f, 0, 0x00, 0x05, 0, 0]).unwrap();
    let code = asm(16, 0x7c00, |a| {
        a.cli()?;
        a.lgdt(ptr(0x600))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        a.jmp_far(0x10, 0x7c20)
    });
    ram.write(0x7c00, &code).unwrap();
    let pm = asm(32, 0x7c20, |a| {
        a.mov(ax, 0x18)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x9000)?;
        a.mov(dword_ptr(0x10_0000), 0x1234_5678)?;
        a.hlt()
    });
    ram.write(0x7c20, &pm).unwrap();
    let mut cpu = Cpu::new(CpuConfig::default());
    cpu.load_seg_real_for_test(0, 0x7c00);
    let mut p = TestPlat::default();
    // 1 MiB RAM: 0x100000 is outside RAM -> MMIO write.
    assert_eq!(cpu.run(&mut ram, &mut p, 1000), RunExit::Platform);
    assert_eq!(p.mmio_writes, vec![(0x10_0000, 4, 0x1234_5678)]);
    assert_eq!(cpu.segment(SegReg::Cs).selector, 0x10);
    assert_eq!(cpu.segment(SegReg::Cs).attr & ATTR_DB, ATTR_DB);
}

impl Cpu {
    /// Test helper: real-mode CS:IP.
    fn load_seg_real_for_test(&mut self, sel: u16, ip: u16) {
        self.s.seg[SegReg::Cs as usize].selector = sel;
        self.s.seg[SegReg::Cs as usize].base = u64::from(sel) << 4;
        self.s.rip = u64::from(ip);
    }
}

#[test]
fn deterministic_hash_across_two_cpus() {
    let prog = |a: &mut CodeAssembler| {
        let mut top = a.create_label();
        a.mov(ecx, 1000)?;
        a.set_label(&mut top)?;
        a.imul_3(eax, ecx, 3)?;
        a.add(ebx, eax)?;
        a.rdtsc()?;
        a.loop_(top)?;
        a.hlt()
    };
    let mut a = Env::flat(prog);
    let mut b = Env::flat(prog);
    assert_eq!(a.run(), RunExit::Halted);
    assert_eq!(b.run(), RunExit::Halted);
    assert_eq!(a.cpu.state_hash(), b.cpu.state_hash());
    assert_eq!(a.cpu.icount(), 2 + 4 * 1000);
}

/// Throughput check (run with `cargo test --release -p ailuro-x86 -- --ignored bench --nocapture`).
#[test]
#[ignore]
fn bench_integer_loop() {
    let mut e = Env::flat(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 50_000_000)?;
        a.xor(eax, eax)?;
        a.mov(esi, 0x40_0000)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.mov(dword_ptr(esi), eax)?;
        a.xor(edx, eax)?;
        a.shl(edx, 1)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    let t = std::time::Instant::now();
    let x = e.cpu.run(&mut e.ram, &mut e.p, u64::MAX);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(x, RunExit::Halted);
    let n = e.cpu.icount();
    eprintln!("{n} instructions in {dt:.3} s: {:.1} MIPS", n as f64 / dt / 1e6);
}

/// Platform for running the bundled multiboot guests without a board: COM1 output is collected,
/// the line status register says "transmitter empty", port 0xf4 (isa-debug-exit) stops the run.
#[derive(Default)]
struct GuestPlat {
    out: Vec<u8>,
    exit: Option<u32>,
    tsc: u64,
}

impl Platform for GuestPlat {
    fn io_read(&mut self, _at: ProgramPoint, port: u16, _size: u8) -> u32 {
        match port {
            0x3fd => 0x60,
            _ => 0xffff_ffff,
        }
    }
    fn io_write(&mut self, _at: ProgramPoint, port: u16, _size: u8, value: u32) {
        match port {
            0x3f8 => self.out.push(value as u8),
            0xf4 => self.exit = Some(value),
            _ => {}
        }
    }
    fn mmio_read(&mut self, _at: ProgramPoint, _addr: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _at: ProgramPoint, _addr: u64, _size: u8, _value: u64) {}
    fn read_timestamp(&mut self, at: ProgramPoint) -> u64 {
        self.tsc = at.icount;
        self.tsc
    }
    fn interrupt_ack(&mut self, _at: ProgramPoint) -> u32 {
        0x20
    }
}

/// Load a multiboot ELF (program headers only) and run it with a command line.
fn run_guest_elf(path: &str, cmdline: &str) -> (GuestPlat, Cpu, f64) {
    let elf = std::fs::read(path).unwrap();
    let rd32 = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let rd16 = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let mut ram = GuestRam::new(0, 64 << 20).unwrap();
    let (phoff, phnum, phsz) = (rd32(0x1c) as usize, rd16(0x2c) as usize, rd16(0x2a) as usize);
    for k in 0..phnum {
        let ph = phoff + k * phsz;
        if rd32(ph) != 1 {
            continue;
        }
        let (off, paddr, filesz) = (rd32(ph + 4) as usize, rd32(ph + 12) as u64, rd32(ph + 16) as usize);
        ram.write(paddr, &elf[off..off + filesz]).unwrap();
    }
    // Multiboot info at 0x9000 with a command line at 0x9100.
    ram.write_u32(0x9000, 1 | (1 << 2)).unwrap();
    ram.write_u32(0x9004, 639).unwrap();
    ram.write_u32(0x9008, (63 << 20) / 1024).unwrap();
    ram.write_u32(0x9000 + 16, 0x9100).unwrap();
    ram.write(0x9100, cmdline.as_bytes()).unwrap();
    let mut cpu = Cpu::new(CpuConfig::i386());
    cpu.enter_flat_protected_mode(rd32(0x18));
    cpu.set_gpr(Gpr::Rax, 0x2bad_b002);
    cpu.set_gpr(Gpr::Rbx, 0x9000);
    let mut p = GuestPlat::default();
    let t = std::time::Instant::now();
    loop {
        match cpu.run(&mut ram, &mut p, 5_000_000_000) {
            RunExit::Platform if p.exit.is_none() => continue,
            RunExit::Halted if cpu.s.rflags & IF == 0 => break,
            RunExit::Halted => {
                cpu.set_intr(true);
                continue;
            }
            RunExit::Platform => break,
            x => panic!("{x:?}\n{}\n{}", String::from_utf8_lossy(&p.out), cpu.info_registers()),
        }
    }
    (p, cpu, t.elapsed().as_secs_f64())
}

/// `AILURO_GUEST=/tmp/g/hello.elf AILURO_CMDLINE=... cargo test -p ailuro-x86 -- --ignored guest --nocapture`
#[test]
#[ignore]
fn guest_from_env() {
    let path = std::env::var("AILURO_GUEST").expect("AILURO_GUEST=path to a guest ELF");
    let cmdline = std::env::var("AILURO_CMDLINE").unwrap_or_default();
    let (p, cpu, dt) = run_guest_elf(&path, &cmdline);
    eprintln!("{}", String::from_utf8_lossy(&p.out));
    eprintln!("exit {:?}, {} instructions, {:.1} MIPS", p.exit, cpu.icount(), cpu.icount() as f64 / dt / 1e6);
    assert_eq!(p.exit, Some(0));
}

// ---------------------------------------------------------------- more instruction groups

#[test]
fn far_call_retf_and_descriptor_tables() {
    let e = run_flat(|a| {
        a.call_far(0x10, (CODE + 0x40) as u32)?;
        a.sgdt(ptr(0x40_0000))?;
        a.sidt(ptr(0x40_0010))?;
        a.str(ax)?;
        a.hlt()?;
        a.db(&[0x90; 0x40 - 20])?;
        // CODE+0x40: far return.
        a.mov(ebx, dword_ptr(esp + 4))?;
        a.retf()
    });
    assert_eq!(e.r(Gpr::Rbx), 0x10);
    assert_eq!(u64::from(e.r(Gpr::Rsp)), STACK);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap() & 0xffff, 0x37);
    assert_eq!(u64::from(e.ram.read_u32(0x40_0002).unwrap()), GDT);
    assert_eq!(e.ram.read_u32(0x40_0010).unwrap() & 0xffff, 0x7ff);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x30);
}

#[test]
fn xlat_bound_lar_lsl_verr() {
    let mut e = Env::flat(|a| {
        a.mov(ebx, 0x40_0000)?;
        a.mov(al, 3)?;
        a.xlatb()?;
        a.mov(ecx, 0x18)?;
        a.lar(edx, ecx)?;
        a.lsl(esi, ecx)?;
        a.verw(cx)?;
        a.setz(bh)?;
        a.mov(ecx, 0x10)?;
        a.verw(cx)?;
        a.setz(bl)?;
        a.mov(ecx, 0x1000)?;
        a.lsl(edi, ecx)?; // beyond the GDT: ZF=0, EDI unchanged
        a.mov(ecx, 5)?;
        a.bound(ecx, ptr(0x40_0010))?;
        a.mov(ecx, 11)?;
        a.bound(ecx, ptr(0x40_0010))?;
        a.hlt()
    });
    e.ram.write(0x40_0000, &[10, 11, 12, 13]).unwrap();
    e.ram.write_u32(0x40_0010, 0).unwrap();
    e.ram.write_u32(0x40_0014, 10).unwrap();
    e.cpu.set_gpr(Gpr::Rdi, 0x1234);
    e.run_expect_vector(5);
    assert_eq!(e.r(Gpr::Rax) & 0xff, 13);
    assert_eq!(e.r(Gpr::Rdx), 0x00c0_9200, "access rights masked with 0x00f0ff00 (not yet accessed)");
    assert_eq!(e.r(Gpr::Rsi), 0xffff_ffff);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0x0100, "data writable, code not");
    assert_eq!(e.r(Gpr::Rdi), 0x1234);
}

#[test]
fn privileged_and_invalid_operations_fault() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 1 << 6)?; // CR4.MCE is not supported (nor advertised)
        a.mov(cr4, eax)?;
        a.hlt()
    });
    e.run_expect_vector(13);
    let mut e = Env::flat(|a| {
        a.mov(ecx, 0xc000_0080u32 as i32)?; // EFER.LME: no long mode on this model
        a.mov(eax, 1 << 8)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.hlt()
    });
    e.run_expect_vector(13);
    // Ring 3: CLI with IOPL 0, I/O without permission, INT to a DPL-0 gate.
    for (k, insn) in [vec![0xfau8], vec![0xe6, 0x80], vec![0xcd, 0x40]].into_iter().enumerate() {
        let mut e = Env::flat(|a| {
            a.push(0x2b)?;
            a.push(0x9_0000)?;
            a.push(0x2)?;
            a.push(0x23)?;
            a.push(USER_CODE as i32)?;
            a.iretd()
        });
        e.ram.write(USER_CODE, &insn).unwrap();
        e.run_expect_vector(13);
        let code = if k == 2 { 0x40 * 8 + 2 } else { 0 };
        assert_eq!(e.stack(0), code, "case {k}");
        assert_eq!(u64::from(e.stack(1)), USER_CODE, "case {k}: faulting instruction, not retired");
        assert_eq!(e.cpu.icount(), 6 + 1, "case {k}");
    }
}

#[test]
fn io_bitmap_allows_ports_at_cpl3() {
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.iretd()
    });
    // Extend the TSS with an I/O bitmap at 0x68 allowing port 0x80 only (bit clear = allowed).
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x68 + 0x2000, 0x8b, 0)).unwrap();
    e.cpu.s.tr = prot::desc_to_seg(0x30, desc(TSS as u32, 0x68 + 0x2000, 0x8b, 0));
    e.ram.write(TSS + 0x68, &[0xff; 0x2000]).unwrap();
    e.ram.write(TSS + 0x66, &[0x68, 0]).unwrap();
    e.ram.write(TSS + 0x68 + 0x10, &[0xfe]).unwrap();
    e.ram.write(USER_CODE, &[0xe6, 0x80, 0xe6, 0x81]).unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.p.io_writes.len(), 1);
    assert_eq!(u64::from(e.stack(1)), USER_CODE + 2);
}

#[test]
fn sysenter_sysexit_round_trip() {
    let mut e = Env::flat(|a| {
        a.mov(ecx, 0x174)?;
        a.mov(eax, 0x10)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(ecx, 0x175)?;
        a.mov(eax, 0x6_0000)?;
        a.wrmsr()?;
        a.mov(ecx, 0x176)?;
        a.mov(eax, (CODE + 0x100) as i32)?;
        a.wrmsr()?;
        a.mov(edx, USER_CODE as i32)?;
        a.mov(ecx, 0x9_0000)?;
        a.sysexit()?;
        a.db(&[0; 0x100 - 50])?;
        // CODE+0x100: kernel entry.
        a.mov(esi, esp)?;
        a.hlt()
    });
    e.ram.write(USER_CODE, &[0x0f, 0x34]).unwrap(); // sysenter
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.pc(), CODE + 0x100 + 3);
    assert_eq!(e.r(Gpr::Rsi), 0x6_0000);
    assert_eq!(e.cpu.segment(SegReg::Cs).selector, 0x10);
    assert_eq!(e.cpu.segment(SegReg::Ss).selector, 0x18);
}

#[test]
fn single_step_trap_after_each_instruction() {
    let mut e = Env::flat(|a| {
        a.pushfd()?;
        a.or(dword_ptr(esp), 0x100)?;
        a.popfd()?;
        a.nop()?;
        a.hlt()
    });
    e.run_expect_vector(1);
    // TF set by POPF: the trap comes after the following instruction (the nop).
    assert_eq!(u64::from(e.stack(0)), CODE + 10);
    assert_eq!(e.cpu.icount(), 4 + 1);
}

#[test]
fn operand_and_address_size_prefixes() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x1234_ffff)?;
        a.add(ax, 1)?; // 66 prefix: 16-bit add, carry out of bit 15
        a.setc(cl)?;
        a.mov(edi, eax)?;
        a.mov(ecx, 0x1_0003)?;
        a.imul_3(dx, cx, 0x100)?;
        a.push(word_ptr(0x40_0000))?;
        a.pop(si)?;
        a.mov(ebx, 0xff_1010)?;
        a.db(&[0x67, 0x8b, 0x07])?; // mov eax, [bx]: 16-bit address 0x1010
        a.hlt()
    });
    e.ram.write_u32(0x40_0000, 0xabcd).unwrap();
    e.cpu.set_gpr(Gpr::Rsi, 0x5555_0000);
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rdi), 0x1234_0000);
    assert_eq!(e.r(Gpr::Rdx) & 0xffff, 0x0300);
    assert_eq!(e.r(Gpr::Rsi), 0x5555_abcd);
    assert_eq!(e.r(Gpr::Rax), 0xffff, "low dword of GDT entry 2");
    assert_eq!(u64::from(e.r(Gpr::Rsp)), STACK);
}

#[test]
fn sixteen_bit_protected_mode_code_segment() {
    let mut e = Env::flat(|a| a.jmp_far(0x38, 0x0000));
    // 0x38: 16-bit code segment at 0x40_0000, limit 0xffff.
    e.ram.write_u64(GDT + 0x38, desc(0x40_0000, 0xffff, 0x9a, 0)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    let code = asm(16, 0, |a| {
        a.mov(ax, 0x1234)?;
        a.mov(cx, 3)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.add(ax, 1)?;
        a.loop_(l)?;
        a.hlt()
    });
    e.ram.write(0x40_0000, &code).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x1237);
    assert_eq!(e.cpu.rip(), code.len() as u64);
}

#[test]
fn global_pages_survive_cr3_reload() {
    let mut e = paging_env(|a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        a.mov(ebx, dword_ptr(0x20_6000))?;
        // Remap both, reload CR3: only the global one (0x205000) stays cached.
        a.mov(dword_ptr(0x11000 + 4 * 0x205), 0x20_7103)?;
        a.mov(dword_ptr(0x11000 + 4 * 0x206), 0x20_7003)?;
        a.mov(ecx, cr3)?;
        a.mov(cr3, ecx)?;
        a.mov(esi, dword_ptr(0x20_5000))?;
        a.mov(edi, dword_ptr(0x20_6000))?;
        a.hlt()
    });
    e.ram.write_u32(0x11000 + 4 * 0x205, 0x20_5103).unwrap();
    e.cpu.s.cr4 |= CR4_PGE;
    e.ram.write_u32(0x20_5000, 5).unwrap();
    e.ram.write_u32(0x20_6000, 6).unwrap();
    e.ram.write_u32(0x20_7000, 7).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!((e.r(Gpr::Rsi), e.r(Gpr::Rdi)), (5, 7));
}

#[test]
fn enter_with_nesting_level() {
    let e = run_flat(|a| {
        a.mov(ebp, 0x7_f000)?;
        a.mov(dword_ptr(0x7_effc), 0xaaaa)?;
        a.enter(16, 2)?;
        a.hlt()
    });
    // push ebp; copy one outer frame pointer; push the new frame pointer; allocate 16.
    let frame = STACK - 4;
    assert_eq!(u64::from(e.r(Gpr::Rbp)), frame);
    assert_eq!(u64::from(e.r(Gpr::Rsp)), frame - 8 - 16);
    assert_eq!(e.ram.read_u32(frame).unwrap(), 0x7_f000);
    assert_eq!(e.ram.read_u32(frame - 4).unwrap(), 0xaaaa);
    assert_eq!(u64::from(e.ram.read_u32(frame - 8).unwrap()), frame);
}

#[test]
fn mov_ss_shadow_and_pop_ss() {
    let mut e = Env::flat(|a| {
        a.sti()?;
        a.nop()?;
        a.mov(eax, 0x18)?;
        a.mov(ss, ax)?;
        a.nop()?;
        a.hlt()
    });
    e.p.vector = 0x30;
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 4), RunExit::Limit);
    e.cpu.set_intr(true);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.p.acks[0].icount, 5, "not between mov ss and the next instruction");
}

#[test]
fn cpuid_vendor_and_unknown_leaf() {
    let e = run_flat(|a| {
        a.xor(eax, eax)?;
        a.cpuid()?;
        a.mov(dword_ptr(0x40_0000), ebx)?;
        a.mov(dword_ptr(0x40_0004), edx)?;
        a.mov(dword_ptr(0x40_0008), ecx)?;
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.cpuid()?;
        a.hlt()
    });
    let mut v = [0u8; 12];
    e.ram.read(0x40_0000, &mut v).unwrap();
    assert_eq!(&v, b"GenuineIntel");
    assert_eq!(e.r(Gpr::Rax), 0x8000_0001, "extended leaves up to 0x8000_0001 (NX)");
}

#[test]
fn rep_bsf_endbr_rep_ret_on_old_cpu() {
    let e = run_flat(|a| {
        let mut f = a.create_label();
        a.mov(ecx, 0x80)?;
        a.db(&[0xf3, 0x0f, 0xbc, 0xc1])?; // tzcnt eax, ecx == bsf on this CPU
        a.db(&[0xf3, 0x0f, 0x1e, 0xfb])?; // endbr32
        a.call(f)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.db(&[0xf3, 0xc3]) // rep ret
    });
    assert_eq!(e.r(Gpr::Rax), 7);
    assert_eq!(e.cpu.icount(), 6);
}

// ---------------------------------------------------------------- protection faults

#[test]
fn not_present_segment_and_stack_faults() {
    // DS load of a not-present data segment: #NP(sel).
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0, 0xfffff, 0x12, 0xc)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(11);
    assert_eq!(e.stack(0), 0x38);
    // SS load of a not-present segment: #SS(sel).
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(ss, ax)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0, 0xfffff, 0x12, 0xc)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(12);
    assert_eq!(e.stack(0), 0x38);
    // Stack access beyond an SS limit: #SS(0).
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x1000)?;
        a.mov(ebx, dword_ptr(esp))?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0, 0xfff, 0x92, 0x4)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    // The #SS frame itself is pushed below ESP, inside the limit.
    e.run_expect_vector(12);
    assert_eq!(e.stack(0), 0);
}

#[test]
fn interrupt_with_bad_tss_stack_is_ts() {
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.iretd()
    });
    e.ram.write(USER_CODE, &[0xcd, 0x80]).unwrap();
    // SS0 in the TSS names the ring-3 data segment: the inward switch raises #TS(0x28). #TS is
    // delivered through a ring-0 gate from ring 3 and needs the same TSS stack, so it fails the same
    // way (contributory after contributory) -> #DF, which fails too -> triple fault.
    e.ram.write_u32(TSS + 8, 0x28).unwrap();
    match e.run() {
        RunExit::Shutdown { reason } => assert!(reason.contains("triple"), "{reason}"),
        x => panic!("{x:?}"),
    }
}

#[test]
fn retf_and_iret_to_outer_ring_null_data_segments() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x18)?;
        a.mov(es, ax)?;
        a.mov(eax, 0x2b)?;
        a.mov(fs, ax)?;
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.retf()
    });
    e.ram.write(USER_CODE, &[0xf4]).unwrap();
    e.run_expect_vector(13);
    // Faulted in ring 3 at the HLT; ES (DPL 0) was nulled by the RETF, FS (DPL 3) kept.
    assert_eq!(u64::from(e.stack(1)), USER_CODE);
    assert_eq!(e.cpu.segment(SegReg::Es).selector, 0);
    assert_eq!(e.cpu.segment(SegReg::Fs).selector, 0x2b);
}

#[test]
fn lss_lds_les_and_far_pointer_loads() {
    let e = run_flat(|a| {
        a.mov(dword_ptr(0x40_0000), 0x7_0000)?;
        a.mov(word_ptr(0x40_0004), 0x18)?;
        a.lss(esp, ptr(0x40_0000))?;
        a.les(edi, ptr(0x40_0000))?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rsp), 0x7_0000);
    assert_eq!(e.r(Gpr::Rdi), 0x7_0000);
    assert_eq!(e.cpu.segment(SegReg::Es).selector, 0x18);
}

#[test]
fn sixteen_bit_div_and_rotates_through_carry() {
    let e = run_flat(|a| {
        a.mov(dx, 1)?;
        a.mov(ax, 0)?;
        a.mov(cx, 3)?;
        a.div(cx)?; // 0x10000 / 3
        a.mov(si, ax)?;
        a.mov(di, dx)?;
        a.stc()?;
        a.mov(bx, 0x8000u16 as i32)?;
        a.rcl(bx, 1)?; // bx = 1, CF = 1
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rsi) & 0xffff, 0x5555);
    assert_eq!(e.r(Gpr::Rdi) & 0xffff, 1);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 1);
    assert_eq!(e.status() & CF, CF);
}

#[test]
fn das_aas_edges() {
    let e = run_flat(|a| {
        a.mov(al, 0x00)?;
        a.sub(al, 0x01)?; // 0xff, CF=1, AF=1
        a.das()?; // -> 0x99, CF=1
        a.mov(bl, al)?;
        a.mov(ax, 0x0200)?;
        a.sub(al, 0x01)?; // AL = 0xff, AF=1
        a.aas()?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbx) & 0xff, 0x99);
    // AAS: AX = AX - 6 = 0x02f9, AH = AH - 1 = 0x01, AL = AL & 0x0f = 0x09 -> 0x0109.
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x0109);
    assert_eq!(e.status() & (CF | AF), CF | AF);
}

#[test]
fn call_gate_to_ring0_with_parameters_and_retf_back() {
    let user = asm(32, USER_CODE, |a| {
        a.push(0x1111)?;
        a.push(0x2222)?;
        a.call_far(0x3b, 0)?; // gate selector 0x38 | RPL 3
        a.mov(ebx, 0x77)?;
        a.int(0x80)
    });
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.iretd()?;
        a.db(&[0x90; 0x40 - 17])?;
        // CODE+0x40: ring-0 gate target; check the copied parameters, return popping them.
        a.mov(esi, dword_ptr(esp + 8))?;
        a.mov(edi, dword_ptr(esp + 12))?;
        a.retf_1(8)
    });
    e.ram.write(USER_CODE, &user).unwrap();
    // 32-bit call gate, DPL 3, 2 parameters, to 0x10:CODE+0x40.
    let g = gate(0x10, (CODE + 0x40) as u32, 0xec) | (2 << 32);
    e.ram.write_u64(GDT + 0x38, g).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(0x80);
    assert_eq!(e.r(Gpr::Rsi), 0x2222);
    assert_eq!(e.r(Gpr::Rdi), 0x1111);
    assert_eq!(e.r(Gpr::Rbx), 0x77);
    // Back in ring 3 the caller's stack has the parameters popped by RETF 8.
    assert_eq!(e.stack(3), 0x9_0000, "user ESP in the int 0x80 frame");
}

#[test]
fn rep_interrupted_between_iterations() {
    let mut e = Env::flat(|a| {
        a.mov(edi, 0x40_0000)?;
        a.mov(ecx, 10)?;
        a.sti()?;
        a.rep().stosb()?;
        a.hlt()
    });
    e.p.vector = 0x22;
    e.cpu.set_intr(true);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    // sti's shadow lets exactly one iteration run, then the interrupt is taken on the rep.
    assert_eq!(e.p.acks[0].icount, 4);
    assert_eq!(e.r(Gpr::Rcx), 9);
    assert_eq!(u64::from(e.stack(0)), CODE + 11, "return to the rep instruction");
    assert_eq!(e.cpu.pc(), STUBS + 16 * 0x22);
}

#[test]
fn rep_movs_into_following_code_is_seen() {
    // rep movsb copies "mov al, 0x42" (b0 42) over two nops right after it. The first run copies
    // nothing (count 0) so the nops get decoded and cached; the second run must see the new code.
    let mut e = Env::flat(|a| {
        a.mov(esi, 0x40_0000)?;
        a.mov(edi, (CODE + 21) as i32)?;
        a.mov(ecx, dword_ptr(0x40_0010))?;
        a.mov(al, 1)?;
        a.rep().movsb()?; // CODE+18
        a.nop()?; // CODE+20
        a.nop()?; // CODE+21: overwritten
        a.nop()?;
        a.hlt()
    });
    e.ram.write(0x40_0000, &[0xb0, 0x42]).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax) & 0xff, 1);
    e.cpu.s.halted = false;
    e.cpu.set_rip(CODE);
    e.ram.write_u32(0x40_0010, 2).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax) & 0xff, 0x42);
}

#[test]
fn rep_movs_to_mmio_returns_after_each_iteration() {
    let mut e = Env::flat(|a| {
        a.mov(esi, 0x40_0000)?;
        a.mov(edi, 0xfec0_0000u32 as i32)?;
        a.mov(ecx, 3)?;
        a.rep().movsd()?;
        a.hlt()
    });
    let mut exits = 0;
    while e.cpu.run(&mut e.ram, &mut e.p, u64::MAX) == RunExit::Platform {
        exits += 1;
    }
    assert_eq!(exits, 3);
    assert_eq!(e.p.mmio_writes.len(), 3);
    assert_eq!(e.cpu.icount(), 3 + 3 + 1);
}

#[test]
fn rep_stos_batch_respects_stop_at() {
    let mut e = Env::flat(|a| {
        a.mov(edi, 0x40_0000)?;
        a.mov(ecx, 1000)?;
        a.rep().stosd()?;
        a.hlt()
    });
    for stop in [3u64, 4, 500, 1002] {
        assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, stop), RunExit::Limit);
        assert_eq!(e.cpu.icount(), stop);
    }
    assert_eq!(e.r(Gpr::Rcx), 0);
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.icount(), 1003);
}

#[test]
fn byte_and_conditional_fast_forms() {
    let mut e = Env::flat(|a| {
        a.mov(ebx, 0x40_0000)?;
        a.mov(byte_ptr(ebx), 0xf0)?;
        a.mov(dl, 0x0f)?;
        a.mov(byte_ptr(ebx + 1), dl)?;
        a.mov(cl, byte_ptr(ebx))?;
        a.movzx(esi, byte_ptr(ebx))?;
        a.movsx(edi, byte_ptr(ebx))?;
        a.movsx(ebp, word_ptr(ebx))?;
        a.add(byte_ptr(ebx + 1), 0xf1)?; // 0x0f + 0xf1 = 0x100: CF, ZF
        a.setz(al)?;
        a.cmp(cl, 0xf0)?;
        a.cmove(edx, esi)?;
        a.cmovne(edx, dword_ptr(ebx))?;
        a.movzx(ecx, dl)?;
        a.mov(dword_ptr(ebx + 8), 0x30_0000)?;
        a.call(dword_ptr(ebx + 8))?; // sets ecx = 0x99
        a.mov(eax, 0x30_0010)?;
        a.jmp(eax)
    });
    e.ram.write(0x30_0000, &[0xb9, 0x99, 0, 0, 0, 0xc3]).unwrap();
    e.ram.write(0x30_0010, &[0xf4]).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap() & 0xffff, 0x00f0);
    assert_eq!(e.r(Gpr::Rsi), 0xf0);
    assert_eq!(e.r(Gpr::Rdi), 0xffff_fff0);
    assert_eq!(e.r(Gpr::Rbp), 0x0ff0, "word [ebx] = f0 0f before the add");
    assert_eq!(e.r(Gpr::Rdx), 0xf0);
    assert_eq!(e.r(Gpr::Rcx), 0x99);
    assert_eq!(e.cpu.pc(), 0x30_0011);
    assert_eq!(u64::from(e.r(Gpr::Rsp)), STACK);
}

#[test]
fn fast_forms_are_recognised() {
    use crate::fast::{Kind, Uop};
    // The decode cache's hot metadata stays dense: lift-only forms share the kind's byte.
    assert_eq!(std::mem::size_of::<Kind>(), 1);
    let code = asm(32, 0, |a| {
        a.mov(eax, ebx)?;
        a.mov(byte_ptr(ebx + 1), dl)?;
        a.movzx(esi, byte_ptr(ebx))?;
        a.cmp(cl, 0xf0)?;
        a.cmove(edx, esi)?;
        a.call(eax)?;
        a.setz(al)?;
        a.add(dword_ptr(edi + edx * 4), eax)?;
        a.mov(ah, byte_ptr(ebx))?; // high byte register: generic
        a.lock().add(dword_ptr(edi), eax)?; // LOCK on a read-modify-write form: fast
        a.lock().inc(dword_ptr(edi))?;
        a.lock().cmp(dword_ptr(edi), eax)?; // LOCK CMP is #UD: generic
        a.rep().movsb() // generic
    });
    let mut d = iced_x86::Decoder::new(32, &code, 0);
    let kinds: Vec<Kind> = std::iter::from_fn(|| d.can_decode().then(|| Uop::build(&d.decode(), 32).kind)).collect();
    assert_eq!(
        kinds,
        vec![
            Kind::MovRR,
            Kind::MovM8R,
            Kind::MovxRM,
            Kind::AluR8I,
            Kind::CmovRR,
            Kind::CallR,
            Kind::SetccR8,
            Kind::AluMR,
            Kind::Generic,
            Kind::AluMR,
            Kind::IncM,
            Kind::Generic,
            Kind::Generic
        ]
    );
}

// ---------------------------------------------------------------- record/replay properties

#[test]
fn save_restore_midway_matches_uninterrupted_run() {
    let prog = |a: &mut CodeAssembler| {
        let mut top = a.create_label();
        a.mov(ecx, 300)?;
        a.mov(edi, 0x40_0000)?;
        a.set_label(&mut top)?;
        a.imul_3(eax, ecx, 7)?;
        a.xor(ebx, eax)?;
        a.rol(ebx, 5)?;
        a.push(ebx)?;
        a.pop(edx)?;
        a.mov(dword_ptr(edi + ecx * 4), edx)?;
        a.rdtsc()?;
        a.loop_(top)?;
        a.mov(ecx, 40)?;
        a.rep().stosb()?;
        a.hlt()
    };
    let mut whole = Env::flat(prog);
    assert_eq!(whole.run(), RunExit::Halted);
    for cut in [1u64, 17, 1000, 2405, 2420] {
        let mut first = Env::flat(prog);
        while first.cpu.icount() < cut {
            match first.cpu.run(&mut first.ram, &mut first.p, cut) {
                RunExit::Limit | RunExit::Platform => {}
                x => panic!("{x:?}"),
            }
        }
        let state = first.cpu.save_state();
        let mut second = Cpu::new(CpuConfig::default());
        second.load_state(&state).unwrap();
        first.cpu = second;
        assert_eq!(first.run(), RunExit::Halted);
        assert_eq!(first.cpu.state_hash(), whole.cpu.state_hash(), "cut at {cut}");
        assert_eq!(first.ram.hash(), whole.ram.hash(), "cut at {cut}");
    }
}

#[test]
fn load_state_never_panics_on_corruption() {
    let e = Env::flat(|a| a.hlt());
    let good = e.cpu.save_state();
    let mut cpu = Cpu::new(CpuConfig::default());
    // Deterministic xorshift corruption of single bytes and short tails.
    let mut x = 0x1234_5678u32;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut bad = good.clone();
        let pos = x as usize % bad.len();
        bad[pos] ^= (x >> 8) as u8 | 1;
        if x & 0x100 != 0 {
            bad.truncate(pos + 1);
        }
        let _ = cpu.load_state(&bad);
    }
    cpu.load_state(&good).unwrap();
    assert_eq!(cpu.state_hash(), e.cpu.state_hash());
}

// ---------------------------------------------------------------- more real mode

#[test]
fn real_mode_strings_far_calls_and_flags() {
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    let code = asm(16, 0x7c00, |a| {
        a.mov(ax, 0x2000)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(si, 0x10)?;
        a.mov(di, 0x20)?;
        a.mov(cx, 4)?;
        a.cld()?;
        a.rep().movsb()?;
        a.call_far(0x0800, 0x0000)?; // 0800:0000 = linear 0x8000
        a.pushf()?;
        a.pop(dx)?;
        a.hlt()
    });
    ram.write(0x7c00, &code).unwrap();
    let far = asm(16, 0, |a| {
        a.mov(bx, 0x1234)?;
        a.stc()?;
        a.retf()
    });
    ram.write(0x8000, &far).unwrap();
    ram.write(0x20010, b"abcd").unwrap();
    let mut cpu = Cpu::new(CpuConfig::default());
    cpu.load_seg_real_for_test(0, 0x7c00);
    cpu.set_gpr(Gpr::Rsp, 0x7000);
    let mut p = TestPlat::default();
    assert_eq!(cpu.run(&mut ram, &mut p, 1000), RunExit::Halted);
    let mut v = [0u8; 4];
    ram.read(0x20020, &mut v).unwrap();
    assert_eq!(&v, b"abcd");
    assert_eq!(cpu.gpr(Gpr::Rbx) & 0xffff, 0x1234);
    assert_eq!(cpu.gpr(Gpr::Rdx) & 1, 1, "CF from the far routine");
    assert_eq!(cpu.gpr(Gpr::Rsp), 0x7000);
    assert_eq!(cpu.segment(SegReg::Cs).selector, 0);
    // 6 setup + cld + 4 rep iterations + call + 3 + pushf + pop + hlt
    assert_eq!(cpu.icount(), 6 + 1 + 4 + 1 + 3 + 3);
}

#[test]
fn real_mode_offset_wraps_at_64k_limit_faults() {
    // A word access at offset 0xffff exceeds the 64 KiB real-mode limit: #GP (via IVT vector 13).
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    let code = asm(16, 0x7c00, |a| {
        a.mov(bx, 0xffff)?;
        a.mov(ax, word_ptr(bx))?;
        a.hlt()
    });
    ram.write(0x7c00, &code).unwrap();
    ram.write_u32(13 * 4, 0x9000).unwrap();
    ram.write(0x9000, &[0xf4]).unwrap();
    let mut cpu = Cpu::new(CpuConfig::default());
    cpu.load_seg_real_for_test(0, 0x7c00);
    cpu.set_gpr(Gpr::Rsp, 0x7000);
    let mut p = TestPlat::default();
    assert_eq!(cpu.run(&mut ram, &mut p, 1000), RunExit::Halted);
    assert_eq!(cpu.pc(), 0x9001);
    assert_eq!(ram.read_u32(0x7000 - 6).unwrap() & 0xffff, 0x7c03, "IP of the faulting mov");
}

/// Same loop with paging on (run with `--ignored bench_paging --nocapture` in release).
#[test]
#[ignore]
fn bench_paging_loop() {
    let mut e = paging_env(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 50_000_000)?;
        a.xor(eax, eax)?;
        a.mov(esi, 0x20_0000)?;
        a.set_label(&mut top)?;
        a.add(eax, ecx)?;
        a.mov(dword_ptr(esi), eax)?;
        a.xor(edx, eax)?;
        a.shl(edx, 1)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    let t = std::time::Instant::now();
    let x = e.cpu.run(&mut e.ram, &mut e.p, u64::MAX);
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(x, RunExit::Halted);
    let n = e.cpu.icount();
    eprintln!("paging: {n} instructions in {dt:.3} s: {:.1} MIPS", n as f64 / dt / 1e6);
}

#[test]
fn sixteen_bit_interrupt_gate_pushes_words() {
    let mut e = Env::flat(|a| {
        a.int(0x41)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0x40_0000, 0xffff, 0x9a, 0)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.ram.write_u64(IDT + 8 * 0x41, gate(0x38, 0x10, 0x86)).unwrap();
    e.ram.write(0x40_0010, &[0xf4]).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.pc(), 0x40_0011);
    let top = e.cpu.gpr(Gpr::Rsp);
    assert_eq!(top, STACK - 6);
    let w = |k: u64| e.ram.read_u32(top + 2 * k).unwrap() & 0xffff;
    assert_eq!(u64::from(w(0)), (CODE + 2) & 0xffff);
    assert_eq!(w(1), 0x10);
    assert_eq!(w(2) & 0x2, 0x2);
}

// ---------------------------------------------------------------- hardware task switching

/// A second 32-bit TSS at 0x6000 (GDT selector 0x38) whose task starts at `eip` with flat ring-0
/// segments and ESP 0x6_8000.
pub(crate) fn add_task(e: &mut Env, eip: u32) {
    let t = 0x6000u64;
    e.ram.write_u64(GDT + 0x38, desc(t as u32, 0x67, 0x89, 0)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.ram.write_u32(t + 0x20, eip).unwrap();
    e.ram.write_u32(t + 0x24, 0x2).unwrap();
    e.ram.write_u32(t + 0x38, 0x6_8000).unwrap(); // ESP
    e.ram.write_u32(t + 0x28, 0xaaaa).unwrap(); // EAX
    for (r, s) in [0x18u32, 0x10, 0x18, 0x18, 0x18, 0x18].iter().enumerate() {
        e.ram.write_u32(t + 0x48 + 4 * r as u64, *s).unwrap();
    }
}

#[test]
fn call_to_tss_and_iret_back() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x1234)?;
        a.call_far(0x38, 0)?;
        a.mov(ebx, eax)?;
        a.hlt()
    });
    // Mark the current TSS busy in the GDT, as LTR would have.
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x67, 0x8b, 0)).unwrap();
    let task = asm(32, 0x30_0000, |a| {
        a.mov(ecx, eax)?;
        a.mov(eax, 0x5678)?;
        a.iretd()
    });
    e.ram.write(0x30_0000, &task).unwrap();
    add_task(&mut e, 0x30_0000);
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.ram.read_u32(0x6000 + 0x2c).unwrap(), 0xaaaa, "new task got its EAX from its TSS (saved ECX)");
    assert_eq!(e.r(Gpr::Rbx), 0x1234, "old task's EAX restored from the old TSS");
    assert_eq!(e.cpu.s.tr.selector, 0x30);
    assert_eq!(e.ram.read_u32(0x6000).unwrap() & 0xffff, 0x30, "back link");
    assert_eq!(e.ram.read_u32(0x6000 + 0x28).unwrap(), 0x5678, "new task's EAX saved on IRET");
    assert_eq!((e.ram.read_u64(GDT + 0x38).unwrap() >> 40) & 0xf, 0x9, "callee TSS available again");
    assert_eq!((e.ram.read_u64(GDT + 0x30).unwrap() >> 40) & 0xf, 0xb, "caller TSS busy");
    assert_eq!(e.cpu.rflags() & crate::NT, 0);
}

#[test]
fn double_fault_through_task_gate() {
    let mut e = Env::flat(|a| {
        a.mov(esp, 0x7_0000)?;
        a.mov(eax, 0x80)?;
        a.mov(ds, ax)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x67, 0x8b, 0)).unwrap();
    let g = e.ram.read_u64(IDT + 13 * 8).unwrap();
    e.ram.write_u64(IDT + 13 * 8, g & !(1 << 47)).unwrap();
    e.ram.write_u64(IDT + 8 * 8, gate(0x38, 0, 0x85)).unwrap();
    e.ram.write(0x30_0000, &[0xf4]).unwrap();
    add_task(&mut e, 0x30_0000);
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.pc(), 0x30_0001);
    assert_eq!(e.cpu.s.tr.selector, 0x38);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), 0x6_8000 - 4, "#DF error code pushed on the new task's stack");
    assert_eq!(e.ram.read_u32(0x6_8000 - 4).unwrap(), 0);
    assert_eq!(e.ram.read_u32(TSS + 0x38).unwrap(), 0x7_0000, "old ESP saved");
    assert_ne!(e.cpu.rflags() & crate::NT, 0);
    assert_ne!(e.cpu.cr(0) & CR0_TS, 0);
}

#[test]
fn x87_present_em_ts_give_nm() {
    // CR0.EM=0, TS=0: x87 opcodes execute (FNINIT, FLD1, FCMOVB); detailed tests in fpu_tests.rs.
    // (After RESET all registers are tagged valid with every exception unmasked, so a push
    // without FNINIT would overflow the stack and the next x87 instruction would raise #MF.)
    for bytes in [vec![0xdb, 0xe3, 0xf4], vec![0xdb, 0xe3, 0xd9, 0xe8, 0xd9, 0xe8, 0xda, 0xc1, 0xf4]] {
        let mut e = Env::flat(|a| a.hlt());
        e.ram.write(CODE, &bytes).unwrap();
        assert_eq!(e.run(), RunExit::Halted);
        assert_eq!(e.stub_vector(), None);
    }
    // CR0.EM=1: #NM so that an emulator in the guest can take over.
    let mut e = Env::flat(|a| a.hlt());
    e.ram.write(CODE, &[0xdb, 0xe3]).unwrap();
    e.cpu.s.cr0 |= CR0_EM;
    e.run_expect_vector(7);
    // WAIT with CR0.TS and CR0.MP: #NM.
    let mut e = Env::flat(|a| a.hlt());
    e.ram.write(CODE, &[0x9b]).unwrap();
    e.cpu.s.cr0 |= CR0_TS | CR0_MP;
    e.run_expect_vector(7);
}

#[test]
fn more_fast_forms_match_generic_semantics() {
    let e = run_flat(|a| {
        a.mov(eax, 0x8000_0001u32 as i32)?;
        a.mov(cl, 33)?; // masked to 1
        a.shl(eax, cl)?;
        a.setc(bl)?;
        a.mov(dword_ptr(0x40_0000), -1)?;
        a.stc()?;
        a.inc(dword_ptr(0x40_0000))?; // 0, ZF, CF kept
        a.setc(bh)?;
        a.mov(edx, 5)?;
        a.neg(edx)?;
        a.mov(esi, 0x0f0f_0f0f)?;
        a.not(esi)?;
        a.mov(cl, 0)?;
        a.sar(edx, cl)?; // count 0: flags unchanged (CF from NEG = 1)
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rax), 2);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0x0101);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap(), 0);
    assert_eq!(e.r(Gpr::Rdx), (-5i32) as u32);
    assert_eq!(e.r(Gpr::Rsi), 0xf0f0_f0f0);
    assert_eq!(e.status() & (CF | SF), CF | SF);
}

/// Differential test: random sequences of the instruction forms that have pre-decoded fast paths,
/// run once with fast paths and once through the generic interpreter only; state and RAM must
/// agree exactly.
#[test]
fn fast_paths_agree_with_generic_interpreter() {
    let r32 = [eax, ecx, edx, ebx, esi, edi];
    let r16 = [ax, cx, dx, bx, si, di];
    let lo8 = [al, cl, dl, bl];
    let mut seed = 0x9e37_79b9u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for round in 0..40 {
        let mut prog: Vec<u32> = (0..400).map(|_| rnd()).collect();
        prog.push(0);
        let build = |a: &mut CodeAssembler| -> Result<(), IcedError> {
            a.mov(ebp, 0x40_0000)?;
            for (k, &x) in prog.iter().enumerate() {
                let y = prog[(k + 1) % prog.len()];
                let d = r32[(x >> 4) as usize % 6];
                let s = r32[(x >> 8) as usize % 6];
                let imm = y as i32;
                let disp = ((y >> 8) & 0xfc) as i32;
                let mem = dword_ptr(ebp + disp);
                match x % 42 {
                    0 => a.mov(d, s)?,
                    1 => a.mov(d, imm)?,
                    2 => a.mov(d, mem)?,
                    3 => a.mov(mem, s)?,
                    4 => a.mov(mem, imm)?,
                    5 => a.add(d, s)?,
                    6 => a.adc(d, imm)?,
                    7 => a.sbb(d, mem)?,
                    8 => a.sub(mem, s)?,
                    9 => a.xor(mem, imm)?,
                    10 => a.cmp(d, s)?,
                    11 => a.test(d, imm)?,
                    12 => a.and(d, s)?,
                    13 => a.or(d, imm & 0x7f)?,
                    14 => a.shl(d, y % 40)?,
                    15 => a.shr(d, y % 33)?,
                    16 => a.sar(d, y % 32)?,
                    17 => a.rol(d, y % 35)?,
                    18 => a.ror(d, y % 32)?,
                    19 => a.rcl(d, y % 34)?,
                    20 => a.rcr(d, y % 33)?,
                    21 => a.inc(d)?,
                    22 => a.dec(mem)?,
                    23 => a.neg(d)?,
                    24 => a.not(d)?,
                    25 => a.lea(d, ptr(s + d * 4 + disp))?,
                    26 => a.imul_3(d, s, imm)?,
                    27 => a.imul_2(d, s)?,
                    28 => a.movzx(d, byte_ptr(ebp + disp))?,
                    29 => a.movsx(d, word_ptr(ebp + disp))?,
                    30 => a.movsx(d, lo8[(x >> 12) as usize % 4])?,
                    31 => a.movzx(d, r16[(x >> 12) as usize % 6])?,
                    32 => a.mov(lo8[(x >> 12) as usize % 4], byte_ptr(ebp + disp))?,
                    33 => a.mov(byte_ptr(ebp + disp), lo8[(x >> 12) as usize % 4])?,
                    34 => a.add(byte_ptr(ebp + disp), (y & 0xff) as i32)?,
                    35 => a.cmp(lo8[(x >> 12) as usize % 4], (y & 0xff) as i32)?,
                    36 => a.setl(lo8[(x >> 12) as usize % 4])?,
                    37 => a.cmovbe(d, s)?,
                    38 => a.cmovg(d, mem)?,
                    // LOCK read-modify-write forms take the fast path too (one CPU).
                    40 => a.lock().add(mem, s)?,
                    41 => a.lock().inc(mem)?,
                    _ => {
                        a.push(s)?;
                        a.mov(cl, (y & 0x3f) as i32)?;
                        a.shl(d, cl)?;
                        a.pop(d)?;
                    }
                }
            }
            a.hlt()
        };
        let mut fast = Env::flat(build);
        let mut slow = Env::flat(build);
        slow.cpu.icache.fast = false;
        for env in [&mut fast, &mut slow] {
            for k in 0..64u64 {
                env.ram.write_u32(0x40_0000 + 4 * k, (k as u32).wrapping_mul(0x9e37_79b9)).unwrap();
            }
        }
        assert_eq!(fast.run(), RunExit::Halted, "round {round}: {}", fast.cpu.info_registers());
        assert_eq!(slow.run(), RunExit::Halted, "round {round}: {}", slow.cpu.info_registers());
        assert_eq!(fast.cpu.info_registers(), slow.cpu.info_registers(), "round {round}");
        assert_eq!(fast.cpu.state_hash(), slow.cpu.state_hash(), "round {round}");
        assert_eq!(fast.ram.hash(), slow.ram.hash(), "round {round}");
    }
}

#[test]
fn hlt_with_pending_interrupt_does_not_stop() {
    let mut e = Env::flat(|a| {
        a.sti()?;
        a.hlt()?;
        a.hlt()
    });
    e.p.vector = 0x23;
    e.cpu.set_intr(true);
    // sti's shadow covers the hlt; right after it the pending interrupt wakes the CPU.
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, u64::MAX), RunExit::Platform);
    assert_eq!(e.p.acks, vec![ProgramPoint { icount: 2, pc: CODE + 2 }]);
    assert!(!e.cpu.is_halted());
    assert_eq!(e.cpu.pc(), STUBS + 16 * 0x23);
}

#[test]
fn segment_type_checks_and_expand_down() {
    // Writing through a code segment (CS override) is #GP(0).
    let mut e = Env::flat(|a| {
        a.mov(dword_ptr(0x40_0000).cs(), 1)?;
        a.hlt()
    });
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0);
    // Expand-down 32-bit data segment with limit 0xfff: offsets 0x1000.. are valid, below are not.
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(es, ax)?;
        a.mov(dword_ptr(0x2000).es(), 7)?;
        a.mov(dword_ptr(0xffc).es(), 7)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0, 0xfff, 0x96, 0x4)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(13);
    assert_eq!(e.ram.read_u32(0x2000).unwrap(), 7);
    assert_eq!(u64::from(e.stack(1)), CODE + 19, "the second store faults");
    // Loading a data segment with DPL 0 at CPL 3 is #GP(sel).
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x9_0000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(USER_CODE as i32)?;
        a.iretd()
    });
    e.ram.write(USER_CODE, &[0x66, 0xb8, 0x18, 0x00, 0x8e, 0xd8]).unwrap(); // mov ax, 0x18; mov ds, ax
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0x18);
}

// ---------------------------------------------------------------- PAE paging

use crate::mem::PAE_XD;

const PDPT: u64 = 0x10000;
const PAE_PD: u64 = 0x12000;
const PAE_PT0: u64 = 0x13000;
const PAE_PT1: u64 = 0x14000;

/// PAE page tables in RAM: PDPT at 0x10000 (entry 0 -> PD at 0x12000); PD[0] and PD[1] map
/// 0-4 MiB as 4 KiB supervisor RW pages (PTs at 0x13000, 0x14000), PD[2] maps 4-6 MiB as a
/// 2 MiB user read-only page, PD[3] 6-8 MiB as a 2 MiB supervisor RW page. Page 0x300000 is
/// not present. Paging is off: `pae_env` turns it on.
fn write_pae_tables(e: &mut Env) {
    e.ram.write_u64(PDPT, PAE_PD | 1).unwrap();
    for k in 1..4 {
        e.ram.write_u64(PDPT + 8 * k, 0).unwrap();
    }
    e.ram.write_u64(PAE_PD, PAE_PT0 | 3).unwrap();
    e.ram.write_u64(PAE_PD + 8, PAE_PT1 | 3).unwrap();
    e.ram.write_u64(PAE_PD + 16, 0x40_0000 | 0x80 | 0x5).unwrap();
    e.ram.write_u64(PAE_PD + 24, 0x60_0000 | 0x80 | 0x3).unwrap();
    for k in 0..1024u64 {
        e.ram.write_u64(PAE_PT0 + 8 * k, (k << 12) | 0x3).unwrap();
    }
    e.ram.write_u64(pae_pte(0x30_0000), 0).unwrap();
}

/// Address of the PTE of `lin` (below 4 MiB).
fn pae_pte(lin: u64) -> u64 {
    PAE_PT0 + 8 * (lin >> 12)
}

/// `paging_env` with PAE: CR4.PAE, CR3 = PDPT, PDPTE registers loaded, CR0.PG.
fn pae_env(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = Env::flat(f);
    write_pae_tables(&mut e);
    e.cpu.s.cr3 = PDPT;
    e.cpu.s.cr4 = CR4_PAE;
    e.cpu.s.pdpte = [PAE_PD | 1, 0, 0, 0];
    e.cpu.s.cr0 |= CR0_PG;
    e
}

#[test]
fn pae_paging_is_enabled_by_instructions_and_cpuid_says_pae() {
    // CR3 is loaded while paging is off (no PDPTE load), then CR0.PG loads the PDPTEs.
    let mut e = Env::flat(|a| {
        a.mov(eax, 1)?;
        a.cpuid()?;
        a.mov(eax, cr4)?;
        a.or(eax, CR4_PAE as i32)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PDPT as i32)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, CR0_PG as u32 as i32)?;
        a.mov(cr0, eax)?;
        a.mov(eax, dword_ptr(0x60_0010))?;
        a.hlt()
    });
    write_pae_tables(&mut e);
    e.ram.write_u32(0x60_0010, 0x600d).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_ne!(e.r(Gpr::Rdx) & (1 << 6), 0, "CPUID.1:EDX.PAE");
    assert_eq!(e.r(Gpr::Rax), 0x600d);
    assert_eq!(e.cpu.s.pdpte, [PAE_PD | 1, 0, 0, 0]);
    assert_eq!(e.cpu.cr(4) & CR4_PAE, CR4_PAE);
}

#[test]
fn pae_walks_4k_and_2m_pages_and_sets_accessed_dirty() {
    let mut e = pae_env(|a| {
        a.mov(eax, dword_ptr(0x20_1000))?;
        a.mov(dword_ptr(0x20_2000), 5)?;
        a.mov(ebx, dword_ptr(0x40_0010))?;
        a.mov(dword_ptr(0x60_0000), 7)?;
        a.mov(ecx, dword_ptr(0x1f_f000))?;
        a.hlt()
    });
    e.ram.write_u32(0x40_0010, 0xabcd).unwrap();
    e.ram.write_u32(0x20_1000, 0x1111).unwrap();
    // 0x1ff000 maps a page above 4 GiB (physical bit 32, below MAXPHYADDR): MMIO here.
    e.ram.write_u64(pae_pte(0x1f_f000), 0x1_0000_0000 | 0x3).unwrap();
    e.p.mmio_read_value = 0x5eed;
    // Software bits 11:9 of a PTE survive the A/D update.
    e.ram.write_u64(pae_pte(0x20_2000), 0x20_2000 | 0xe03).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rbx), e.r(Gpr::Rcx)), (0x1111, 0xabcd, 0x5eed));
    assert_eq!(e.ram.read_u32(0x60_0000).unwrap(), 7);
    let q = |e: &Env, a: u64| e.ram.read_u64(a).unwrap();
    assert_eq!(q(&e, pae_pte(0x20_1000)), 0x20_1000 | 0x23, "read: A set, D clear");
    assert_eq!(q(&e, pae_pte(0x20_2000)), 0x20_2000 | 0xe63, "write: A and D set");
    assert_eq!(q(&e, pae_pte(0x1f_f000)), 0x1_0000_0000 | 0x23, "high dword kept");
    assert_eq!(q(&e, PAE_PD), PAE_PT0 | 0x23, "PDE accessed");
    assert_eq!(q(&e, PAE_PD + 16), 0x40_0000 | 0xa5, "2 MiB page read: A only");
    assert_eq!(q(&e, PAE_PD + 24), 0x60_0000 | 0xe3, "2 MiB page written: A and D");
    assert_eq!(q(&e, PDPT), PAE_PD | 1, "PDPTEs have no accessed bit");
    let cpu = &e.cpu;
    assert_eq!(cpu.debug_translate(&e.ram, 0x20_1234), Some(0x20_1234));
    assert_eq!(cpu.debug_translate(&e.ram, 0x1f_f008), Some(0x1_0000_0008));
    assert_eq!(cpu.debug_translate(&e.ram, 0x5f_fffc), Some(0x5f_fffc));
    assert_eq!(cpu.debug_translate(&e.ram, 0x30_0000), None, "PTE not present");
    assert_eq!(cpu.debug_translate(&e.ram, 0x4000_0000), None, "PDPTE 1 not present");
    assert_eq!(cpu.asid(), PDPT);
}

#[test]
fn pae_protection_faults_and_not_present_error_codes() {
    let mut e = pae_env(|a| {
        a.mov(dword_ptr(0x30_0004), 1)?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!((e.stack(0), e.cpu.cr(2)), (0x2, 0x30_0004), "not present, write");
    let mut e = pae_env(|a| {
        a.mov(ebx, 0x8000_0000u32 as i32)?;
        a.mov(eax, dword_ptr(ebx))?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!((e.stack(0), e.cpu.cr(2)), (0x0, 0x8000_0000), "PDPTE not present");
    let mut e = pae_env(|a| {
        a.mov(eax, cr0)?;
        a.or(eax, 1 << 16)?;
        a.mov(cr0, eax)?;
        a.mov(dword_ptr(0x40_0000), 1)?;
        a.hlt()
    });
    e.run_expect_vector(14);
    assert_eq!((e.stack(0), e.cpu.cr(2)), (0x3, 0x40_0000), "WP: read-only 2 MiB page");
}

#[test]
fn pae_reserved_bits_give_page_faults_with_rsvd() {
    // (entry address, value, access is a write, expected error code)
    let cases = [
        (pae_pte(0x20_5000), 0x20_5003 | (1u64 << 36), false, 0x9u32), // above MAXPHYADDR
        (pae_pte(0x20_5000), 0x20_5003 | (1 << 63), true, 0xb),        // XD without NX
        (pae_pte(0x20_5000), 0x20_5002 | (1 << 63), false, 0x0),       // not present wins
        (PAE_PD + 8, PAE_PT1 | 3 | (1 << 52), false, 0x9),             // PDE
        (PAE_PD + 8, 0x20_0000 | 0x83 | (1 << 13), true, 0xb),         // 2 MiB PDE bit 13
    ];
    for (at, v, write, code) in cases {
        let mut e = pae_env(|a| {
            if write {
                a.mov(dword_ptr(0x20_5000), 1)?;
            } else {
                a.mov(eax, dword_ptr(0x20_5000))?;
            }
            a.hlt()
        });
        e.ram.write_u64(at, v).unwrap();
        e.run_expect_vector(14);
        assert_eq!((e.stack(0), e.cpu.cr(2)), (code, 0x20_5000), "entry {at:#x} = {v:#x}");
        assert_eq!(e.ram.read_u64(at).unwrap(), v, "no accessed bit set");
        assert_eq!(e.cpu.debug_translate(&e.ram, 0x20_5000), None);
    }
    // A 2 MiB PDE with the PAT bit (12) set is fine.
    let mut e = pae_env(|a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        a.hlt()
    });
    e.ram.write_u64(PAE_PD + 8, 0x20_0000 | 0x1083).unwrap();
    e.ram.write_u32(0x20_5000, 0x77).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.r(Gpr::Rax), 0x77);
}

#[test]
fn pae_invalid_pdptes_are_gp_on_cr3_cr0_and_cr4_writes() {
    for bad in [PAE_PD | 1 | 2, PAE_PD | 1 | 0x100, PAE_PD | 1 | (1 << 36), PAE_PD | 1 | (1 << 63)] {
        // MOV CR3 with PAE paging on: #GP(0), CR3 and the PDPTE registers unchanged.
        let mut e = pae_env(|a| {
            a.mov(eax, 0x15000)?;
            a.mov(cr3, eax)?;
            a.hlt()
        });
        e.ram.write_u64(0x15000, PAE_PD | 1).unwrap();
        e.ram.write_u64(0x15000 + 24, bad).unwrap();
        e.run_expect_vector(13);
        assert_eq!(e.stack(0), 0);
        assert_eq!(e.cpu.cr(3), PDPT);
        assert_eq!(e.cpu.s.pdpte, [PAE_PD | 1, 0, 0, 0]);
        // Setting CR0.PG with CR4.PAE, and CR4.PAE with CR0.PG, load them too.
        for via_cr0 in [true, false] {
            let mut e = Env::flat(|a| {
                a.mov(eax, PDPT as i32)?;
                a.mov(cr3, eax)?;
                if via_cr0 {
                    a.mov(eax, CR4_PAE as i32)?;
                    a.mov(cr4, eax)?;
                    a.mov(eax, cr0)?;
                    a.or(eax, CR0_PG as u32 as i32)?;
                    a.mov(cr0, eax)?;
                } else {
                    a.mov(eax, cr0)?;
                    a.or(eax, CR0_PG as u32 as i32)?;
                    a.mov(cr0, eax)?;
                    a.mov(eax, CR4_PAE as i32)?;
                    a.mov(cr4, eax)?;
                }
                a.hlt()
            });
            // In the CR4 case 32-bit paging runs first, on the same CR3: the PDPT's first
            // dword doubles as its PDE, an identity-mapped 4 MiB page.
            write_pae_tables(&mut e);
            if !via_cr0 {
                e.cpu.s.cr4 = CR4_PSE;
                e.ram.write_u32(PDPT, 0x83).unwrap();
            }
            e.ram.write_u64(PDPT + 8, bad).unwrap();
            e.run_expect_vector(13);
            assert_eq!(e.cpu.cr(4) & CR4_PAE, if via_cr0 { CR4_PAE } else { 0 });
            assert_eq!(e.cpu.cr(0) & CR0_PG, if via_cr0 { 0 } else { CR0_PG });
        }
    }
    // Reserved bits in a not-present PDPTE are ignored.
    let mut e = pae_env(|a| {
        a.mov(eax, 0x15000)?;
        a.mov(cr3, eax)?;
        a.hlt()
    });
    e.ram.write_u64(0x15000, PAE_PD | 1).unwrap();
    e.ram.write_u64(0x15008, 0xffff_ffff_ffff_fffe).unwrap();
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!(e.cpu.s.pdpte[1], 0xffff_ffff_ffff_fffe);
}

#[test]
fn pae_pdptes_are_cached_until_cr3_is_written() {
    let mut e = pae_env(|a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        // Point PDPTE 0 at another page directory whose PD[1] maps 0x200000 to 0x600000.
        a.mov(dword_ptr(PDPT as i32), 0x16001)?;
        a.invlpg(ptr(0x20_5000))?;
        a.mov(ebx, dword_ptr(0x20_5000))?;
        a.mov(ecx, cr3)?;
        a.mov(cr3, ecx)?;
        a.mov(edx, dword_ptr(0x20_5000))?;
        a.hlt()
    });
    for k in 0..4 {
        let v = e.ram.read_u64(PAE_PD + 8 * k).unwrap();
        e.ram.write_u64(0x16000 + 8 * k, v).unwrap();
    }
    e.ram.write_u64(0x16008, 0x60_0083).unwrap();
    e.ram.write_u32(0x20_5000, 1).unwrap();
    e.ram.write_u32(0x60_5000, 2).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rbx), e.r(Gpr::Rdx)), (1, 1, 2));
    assert_eq!(e.cpu.s.pdpte[0], 0x16001);
}

#[test]
fn pae_tlb_invlpg_and_global_pages() {
    let mut e = pae_env(|a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        a.mov(ebx, dword_ptr(0x20_6000))?;
        a.mov(ecx, dword_ptr(0x20_8000))?;
        // Remap all three: stale entries are used until invalidated.
        a.mov(dword_ptr(pae_pte(0x20_5000) as i32), 0x20_7103)?;
        a.mov(dword_ptr(pae_pte(0x20_6000) as i32), 0x20_7003)?;
        a.mov(dword_ptr(pae_pte(0x20_8000) as i32), 0x20_7003)?;
        a.mov(esi, dword_ptr(0x20_8000))?;
        a.invlpg(ptr(0x20_8000))?;
        a.mov(edi, dword_ptr(0x20_8000))?;
        // CR3 reload drops only the non-global 0x206000.
        a.mov(ecx, cr3)?;
        a.mov(cr3, ecx)?;
        a.mov(ebp, dword_ptr(0x20_5000))?;
        a.mov(edx, dword_ptr(0x20_6000))?;
        a.hlt()
    });
    e.ram.write_u64(pae_pte(0x20_5000), 0x20_5103).unwrap();
    e.cpu.s.cr4 |= CR4_PGE;
    for (a, v) in [(0x20_5000u64, 5u32), (0x20_6000, 6), (0x20_7000, 7), (0x20_8000, 8)] {
        e.ram.write_u32(a, v).unwrap();
    }
    assert_eq!(e.run(), RunExit::Halted);
    assert_eq!((e.r(Gpr::Rax), e.r(Gpr::Rbx)), (5, 6));
    assert_eq!((e.r(Gpr::Rsi), e.r(Gpr::Rdi)), (8, 7), "INVLPG");
    assert_eq!((e.r(Gpr::Rbp), e.r(Gpr::Rdx)), (5, 7), "global survives CR3 reload");
}

#[test]
fn pae_asid_keeps_the_32_byte_pdpt_alignment() {
    let mut e = pae_env(|a| a.hlt());
    e.cpu.s.cr3 = PDPT | 0x20 | 0x18;
    assert_eq!(e.cpu.asid(), PDPT | 0x20, "PCD/PWT dropped, PDPT offset kept");
    e.cpu.s.cr4 = 0;
    assert_eq!(e.cpu.asid(), PDPT);
}

#[test]
fn pae_task_switch_loads_the_new_tasks_pdptes() {
    let mut e = pae_env(|a| {
        a.jmp_far(0x38, 0)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x67, 0x8b, 0)).unwrap();
    let task = asm(32, CODE + 0x100, |a| {
        a.mov(eax, dword_ptr(0x20_5000))?;
        a.hlt()
    });
    e.ram.write(CODE + 0x100, &task).unwrap();
    add_task(&mut e, (CODE + 0x100) as u32);
    // The new task's PDPT (CR3 in the TSS) maps 2-4 MiB to 6-8 MiB with a 2 MiB page.
    e.ram.write_u32(0x6000 + 0x1c, 0x15000).unwrap();
    e.ram.write_u64(0x15000, 0x16001).unwrap();
    for k in 0..4 {
        let v = e.ram.read_u64(PAE_PD + 8 * k).unwrap();
        e.ram.write_u64(0x16000 + 8 * k, v).unwrap();
    }
    e.ram.write_u64(0x16008, 0x60_0083).unwrap();
    e.ram.write_u32(0x60_5000, 0x7a5c).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!((e.r(Gpr::Rax), e.cpu.cr(3)), (0x7a5c, 0x15000));
    assert_eq!(e.cpu.s.pdpte, [0x16001, 0, 0, 0]);
    // An invalid PDPTE in the new task's PDPT: #GP(0) in the new task's context.
    let mut e = pae_env(|a| {
        a.jmp_far(0x38, 0)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x67, 0x8b, 0)).unwrap();
    add_task(&mut e, (CODE + 0x100) as u32);
    e.ram.write_u32(0x6000 + 0x1c, 0x15000).unwrap();
    e.ram.write_u64(0x15000, 0x16001 | 4).unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.cpu.s.tr.selector, 0x38);
}

#[test]
fn pae_nx_makes_xd_pages_non_executable() {
    // CPUID advertises NX; EFER.NXE is writable; then a fetch from an XD page faults with I/D.
    let mut e = pae_env(|a| {
        a.mov(eax, 0x8000_0000u32 as i32)?;
        a.cpuid()?;
        a.mov(esi, eax)?;
        a.mov(eax, 0x8000_0001u32 as i32)?;
        a.cpuid()?;
        a.mov(edi, edx)?;
        a.mov(ecx, 0xc000_0080u32 as i32)?;
        a.rdmsr()?;
        a.or(eax, 1 << 11)?;
        a.wrmsr()?;
        // Data accesses to the XD page are fine.
        a.mov(ebx, dword_ptr(0x20_5000))?;
        a.mov(eax, 0x20_5000)?;
        a.call(eax)?;
        a.hlt()
    });
    e.ram.write_u64(pae_pte(0x20_5000), 0x20_5003 | PAE_XD).unwrap();
    e.ram.write(0x20_5000, &[0x90, 0xc3]).unwrap();
    e.run_expect_vector(14);
    assert_eq!((e.r(Gpr::Rsi), e.r(Gpr::Rdi)), (0x8000_0001, 1 << 20));
    assert_eq!(e.cpu.s.efer, crate::EFER_NXE);
    assert_eq!(e.r(Gpr::Rbx), 0xc390);
    assert_eq!((e.stack(0), e.cpu.cr(2)), (0x11, 0x20_5000), "present, instruction fetch");
    assert_eq!(u64::from(e.stack(1)), 0x20_5000, "the fetch faulted, not the call");
    assert_eq!(e.cpu.debug_translate(&e.ram, 0x20_5000), Some(0x20_5000));

    // XD in the PDE covers its 4 KiB pages; not-present fetches report I/D too; without the
    // XD bits the same code runs.
    for (pde_xd, present, code) in [(true, true, Some(0x11u32)), (false, false, Some(0x10)), (false, true, None)] {
        let mut e = pae_env(|a| {
            a.mov(eax, 0x20_5000)?;
            a.call(eax)?;
            a.hlt()
        });
        e.cpu.s.efer = crate::EFER_NXE;
        let pde = PAE_PT1 | 3 | if pde_xd { PAE_XD } else { 0 };
        e.ram.write_u64(PAE_PD + 8, pde).unwrap();
        e.ram.write_u64(pae_pte(0x20_5000), if present { 0x20_5003 } else { 0 }).unwrap();
        e.ram.write(0x20_5000, &[0xb3, 0x42, 0xc3]).unwrap(); // mov bl, 0x42; ret
        match code {
            Some(c) => {
                e.run_expect_vector(14);
                assert_eq!(e.stack(0), c);
            }
            None => {
                assert_eq!(e.run(), RunExit::Halted);
                assert_eq!(e.r(Gpr::Rbx) & 0xff, 0x42);
            }
        }
    }

    // Without NXE, bit 63 is reserved and a fetch fault has no I/D bit.
    let mut e = pae_env(|a| {
        a.mov(eax, 0x20_5000)?;
        a.call(eax)?;
        a.hlt()
    });
    e.ram.write_u64(pae_pte(0x20_5000), 0x20_5003 | PAE_XD).unwrap();
    e.run_expect_vector(14);
    assert_eq!(e.stack(0), 0x9);
}
