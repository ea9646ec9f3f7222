//! Long-mode unit tests: entering IA-32e mode, 64-bit instructions, 4-level paging, 64-bit
//! interrupt delivery (RSPn, IST), IRETQ to compatibility mode, SYSCALL/SYSRET, SWAPGS,
//! CMPXCHG16B, canonical-address faults. Expected values come from the Intel SDM.

use super::tests::{asm, desc, Env, TestPlat, CODE, GDT, IDT, STACK, STACK0, STUBS, TSS};
use super::*;
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// 4-level page tables: PML4 at PML4, one PDPT, one PD identity-mapping the first 8 MiB with
/// 2 MiB user-writable pages.
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
/// A page table for the 4 KiB-page tests (maps 6..8 MiB instead of the last 2 MiB page).
const PT: u64 = 0xc000;
const USER64: u64 = 0x20_0000;
const USER32: u64 = 0x28_0000;
pub(crate) const DATA: u64 = 0x30_0000;
const IST1: u64 = 0x6_0000;

fn gate64(sel: u16, off: u64, typ: u8, ist: u8) -> (u64, u64) {
    let lo = (off & 0xffff)
        | (u64::from(sel) << 16)
        | (u64::from(ist & 7) << 32)
        | (u64::from(typ) << 40)
        | (((off >> 16) & 0xffff) << 48);
    (lo, off >> 32)
}

fn build_tables(ram: &mut GuestRam) {
    ram.write_u64(PML4, PDPT | 7).unwrap();
    ram.write_u64(PDPT, PD | 7).unwrap();
    for k in 0..4u64 {
        ram.write_u64(PD + 8 * k, (k << 21) | 0x87).unwrap();
    }
    // GDT: 0x10 kernel 64-bit code, 0x18 kernel data, 0x20 user 32-bit code, 0x28 user data,
    // 0x30 user 64-bit code, 0x38 64-bit TSS (16 bytes) — Linux's layout for SYSRET.
    let gdt = [
        0,
        0,
        desc(0, 0xfffff, 0x9a, 0xa),
        desc(0, 0xfffff, 0x92, 0xc),
        desc(0, 0xfffff, 0xfa, 0xc),
        desc(0, 0xfffff, 0xf2, 0xc),
        desc(0, 0xfffff, 0xfa, 0xa),
        desc(TSS as u32, 0x67, 0x89, 0),
        0,
        // 0x48: 32-bit kernel code for the entry test.
        desc(0, 0xfffff, 0x9a, 0xc),
    ];
    for (k, d) in gdt.iter().enumerate() {
        ram.write_u64(GDT + 8 * k as u64, *d).unwrap();
    }
    for v in 0..256u64 {
        let dpl3 = v == 0x80 || v == 3;
        let ist = if v == 14 { 1 } else { 0 };
        let (lo, hi) = gate64(0x10, STUBS + 16 * v, if dpl3 { 0xee } else { 0x8e }, ist);
        ram.write_u64(IDT + 16 * v, lo).unwrap();
        ram.write_u64(IDT + 16 * v + 8, hi).unwrap();
        ram.write(STUBS + 16 * v, &[0xf4]).unwrap();
    }
    // 64-bit TSS: RSP0 at 4, IST1 at 0x24.
    ram.write_u64(TSS + 4, STACK0).unwrap();
    ram.write_u64(TSS + 0x24, IST1).unwrap();
}

/// A CPU already in 64-bit mode at CODE (ring 0, CS 0x10, SS 0x18, RSP = STACK), running `f`.
pub(crate) fn long_env(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut ram = GuestRam::new(0, 8 << 20).unwrap();
    build_tables(&mut ram);
    ram.write(CODE, &asm(64, CODE, f)).unwrap();
    let mut cpu = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
    cpu.enter_flat_long_mode(PML4, CODE);
    cpu.s.gdtr = DescTable { base: GDT, limit: 10 * 8 - 1 };
    cpu.s.idtr = DescTable { base: IDT, limit: 256 * 16 - 1 };
    let mut tr = prot::desc_to_seg(0x38, desc(TSS as u32, 0x67, 0x8b, 0));
    tr.base = TSS;
    cpu.s.tr = tr;
    cpu.set_gpr(Gpr::Rsp, STACK);
    Env { cpu, ram, p: TestPlat::default() }
}

fn run_long(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = long_env(f);
    let x = e.run();
    assert_eq!(x, RunExit::Halted, "{}", e.cpu.info_registers());
    e
}

fn q(e: &Env, a: u64) -> u64 {
    e.ram.read_u64(a).unwrap()
}

#[test]
fn entering_long_mode_from_protected_mode() {
    // Flat 32-bit protected mode -> PAE, CR3, EFER.LME, CR0.PG (compatibility mode) -> far
    // return into the 64-bit code segment.
    let target = CODE + 0x100;
    let mut e = Env::flat(|a| {
        a.mov(eax, cr4)?;
        a.or(eax, 0x20)?;
        a.mov(cr4, eax)?;
        a.mov(eax, PML4 as u32)?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        a.or(eax, 0x100)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.push(0x10)?;
        a.push(target as u32)?;
        a.retf()
    });
    e.cpu = {
        let mut c = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
        c.s = e.cpu.s.clone();
        c.s.model = CpuModel::X86_64;
        c
    };
    build_tables(&mut e.ram);
    e.cpu.s.gdtr = DescTable { base: GDT, limit: 10 * 8 - 1 };
    let code = asm(64, target, |a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.mov(r9, rax)?;
        a.hlt()
    });
    e.ram.write(target, &code).unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert!(e.cpu.long64());
    assert_eq!(e.cpu.s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    assert_eq!(e.cpu.gpr(Gpr::R9), 0x1122_3344_5566_7788);
    assert_eq!(e.cpu.segment(SegReg::Cs).selector, 0x10);
}

#[test]
fn long_mode_entry_rules() {
    // PG with LME but without PAE: #GP. Clearing PAE in IA-32e mode: #GP. Leaving long mode
    // from 64-bit mode: #GP.
    let mut e = Env::flat(|a| {
        a.mov(ecx, 0xc000_0080u32)?;
        a.xor(edx, edx)?;
        a.mov(eax, 0x100)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        a.or(eax, 0x8000_0000u32)?;
        a.mov(cr0, eax)?;
        a.hlt()
    });
    e.cpu.s.model = CpuModel::X86_64;
    e.run_expect_vector(13);
    assert!(!e.cpu.lma());
    let e = run_long(|a| {
        a.mov(rax, cr4)?;
        a.and(eax, !0x20)?;
        a.mov(cr4, rax)?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(13));
    let e = run_long(|a| {
        a.mov(rax, cr0)?;
        a.btr(eax, 31)?;
        a.mov(cr0, rax)?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(13));
    // The i386 model has no LME: #GP on the WRMSR.
    let mut e = Env::flat(|a| {
        a.mov(ecx, 0xc000_0080u32)?;
        a.xor(edx, edx)?;
        a.mov(eax, 0x100)?;
        a.wrmsr()?;
        a.hlt()
    });
    e.run_expect_vector(13);
}

#[test]
fn rex_registers_rip_relative_and_64_bit_stack() {
    let e = run_long(|a| {
        let mut data = a.create_label();
        a.mov(r15, 0x8000_0000_0000_0001u64)?;
        a.push(r15)?;
        a.pop(rcx)?;
        a.lea(r13, ptr(data))?;
        a.mov(rbx, qword_ptr(data))?;
        a.mov(eax, -5i32)?;
        a.movsxd(r8, eax)?;
        a.mov(r10d, 0x8000_0000u32)?;
        a.cdqe()?;
        a.cqo()?;
        a.mov(r11, 0x0102_0304_0506_0708u64)?;
        a.bswap(r11)?;
        a.mov(r12b, 0x7f)?;
        a.mov(sil, 1)?;
        a.hlt()?;
        a.set_label(&mut data)?;
        a.dq(&[0xdead_beef_cafe_f00d])
    });
    assert_eq!(e.cpu.gpr(Gpr::Rcx), 0x8000_0000_0000_0001);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), STACK);
    assert_eq!(q(&e, STACK - 8), 0x8000_0000_0000_0001);
    assert_eq!(e.cpu.gpr(Gpr::Rbx), 0xdead_beef_cafe_f00d);
    assert_eq!(e.ram.read_u64(e.cpu.gpr(Gpr::R13)).unwrap(), 0xdead_beef_cafe_f00d);
    assert_eq!(e.cpu.gpr(Gpr::R8), (-5i64) as u64);
    // A 32-bit write zero-extends; CDQE sign-extends EAX (-5); CQO fills RDX with the sign.
    assert_eq!(e.cpu.gpr(Gpr::R10), 0x8000_0000);
    assert_eq!(e.cpu.gpr(Gpr::Rax), (-5i64) as u64);
    assert_eq!(e.cpu.gpr(Gpr::Rdx), u64::MAX);
    assert_eq!(e.cpu.gpr(Gpr::R11), 0x0807_0605_0403_0201);
    assert_eq!(e.cpu.gpr(Gpr::R12) & 0xff, 0x7f);
    assert_eq!(e.cpu.gpr(Gpr::Rsi) & 0xff, 1);
}

#[test]
fn wide_multiply_divide_and_shifts() {
    let e = run_long(|a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
        a.mov(rbx, 3u64)?;
        a.mul(rbx)?; // rdx:rax = 3 * (2^64 - 1)
        a.mov(r8, rax)?;
        a.mov(r9, rdx)?;
        a.div(rbx)?; // back to 2^64 - 1, remainder 0
        a.mov(r10, rax)?;
        a.mov(r11, rdx)?;
        a.mov(rcx, 63u64)?;
        a.mov(r12, 1u64)?;
        a.shl(r12, cl)?;
        a.mov(r13, r12)?;
        a.sar(r13, 62)?;
        a.mov(r14, 0x1234_5678_9abc_def0u64)?;
        a.imul_3(r14, r14, 16)?;
        a.hlt()
    });
    assert_eq!(e.cpu.gpr(Gpr::R8), 0xffff_ffff_ffff_fffd);
    assert_eq!(e.cpu.gpr(Gpr::R9), 2);
    assert_eq!(e.cpu.gpr(Gpr::R10), u64::MAX);
    assert_eq!(e.cpu.gpr(Gpr::R11), 0);
    assert_eq!(e.cpu.gpr(Gpr::R12), 1 << 63);
    assert_eq!(e.cpu.gpr(Gpr::R13), (-2i64) as u64);
    assert_eq!(e.cpu.gpr(Gpr::R14), 0x2345_6789_abcd_ef00);
}

#[test]
fn string_instructions_with_64_bit_addresses() {
    let e = run_long(|a| {
        a.mov(rdi, DATA)?;
        a.mov(rax, 0x0102_0304_0506_0708u64)?;
        a.mov(rcx, 3u64)?;
        a.rep().stosq()?;
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA + 0x100)?;
        a.mov(rcx, 3u64)?;
        a.rep().movsq()?;
        a.hlt()
    });
    for k in 0..3 {
        assert_eq!(q(&e, DATA + 0x100 + 8 * k), 0x0102_0304_0506_0708);
    }
    assert_eq!(e.cpu.gpr(Gpr::Rdi), DATA + 0x118);
    assert_eq!(e.cpu.gpr(Gpr::Rcx), 0);
}

#[test]
fn non_canonical_addresses_fault() {
    // Data access: #GP(0). Stack-based access: #SS(0). Near jump: #GP(0) on the jump.
    let e = run_long(|a| {
        a.mov(rax, 0x0000_8000_0000_0000u64)?;
        a.mov(rbx, qword_ptr(rax))?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(13));
    assert_eq!(q(&e, e.cpu.gpr(Gpr::Rsp)), 0, "error code");
    let e = run_long(|a| {
        a.mov(rbp, 0xffff_7fff_ffff_fff0u64)?;
        a.mov(rbx, qword_ptr(rbp))?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(12));
    let e = run_long(|a| {
        a.mov(rax, 0x0001_0000_0000_0000u64)?;
        a.jmp(rax)?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(13));
    // The faulting jump is the return address: RIP did not move.
    let rip = q(&e, e.cpu.gpr(Gpr::Rsp) + 8);
    assert_eq!(rip, CODE + 10);
}

#[test]
fn four_level_page_faults_and_nx() {
    // Map 6..8 MiB with 4 KiB pages through PT; page 0x60_1000 not present, page 0x60_2000
    // with XD, page 0x60_3000 with a reserved bit.
    let mut e = long_env(|a| {
        a.mov(rax, qword_ptr(0x60_1008u64))?;
        a.hlt()
    });
    e.ram.write_u64(PD + 8 * 3, PT | 7).unwrap();
    for k in 0..512u64 {
        e.ram.write_u64(PT + 8 * k, (0x60_0000 + (k << 12)) | 7).unwrap();
    }
    e.ram.write_u64(PT + 8, 0).unwrap();
    e.run_expect_vector(14);
    assert_eq!(e.cpu.cr(2), 0x60_1008);
    // #PF used IST1: the frame is at the top of the IST stack.
    assert_eq!(e.cpu.gpr(Gpr::Rsp), IST1 - 48);
    assert_eq!(q(&e, IST1 - 48), 0, "not present, read, supervisor");
    // A fetch from an XD page with EFER.NXE: #PF with P and I/D.
    let mut e = long_env(|a| {
        a.mov(rax, 0x60_2000u64)?;
        a.jmp(rax)
    });
    e.ram.write_u64(PD + 8 * 3, PT | 7).unwrap();
    for k in 0..512u64 {
        e.ram.write_u64(PT + 8 * k, (0x60_0000 + (k << 12)) | 7).unwrap();
    }
    e.ram.write_u64(PT + 16, 0x60_2000 | 7 | (1 << 63)).unwrap();
    e.cpu.s.efer |= EFER_NXE;
    e.run_expect_vector(14);
    assert_eq!(q(&e, e.cpu.gpr(Gpr::Rsp)), 0x11);
    // Without NXE bit 63 is reserved: RSVD | P.
    let mut e = long_env(|a| {
        a.mov(rax, qword_ptr(0x60_2000u64))?;
        a.hlt()
    });
    e.ram.write_u64(PD + 8 * 3, PT | 7).unwrap();
    e.ram.write_u64(PT + 16, 0x60_2000 | 7 | (1 << 63)).unwrap();
    e.run_expect_vector(14);
    assert_eq!(q(&e, e.cpu.gpr(Gpr::Rsp)), 0x9);
    // A write sets the accessed and dirty bits of the leaf and accessed on the upper levels.
    let mut e = run_long(|a| {
        a.mov(qword_ptr(0x60_4000u64), rax)?;
        a.hlt()
    });
    let _ = &mut e;
    let e2 = {
        let mut e = long_env(|a| {
            a.mov(qword_ptr(0x60_4000u64), rax)?;
            a.hlt()
        });
        e.ram.write_u64(PD + 8 * 3, PT | 7).unwrap();
        for k in 0..512u64 {
            e.ram.write_u64(PT + 8 * k, (0x60_0000 + (k << 12)) | 7).unwrap();
        }
        assert_eq!(e.run(), RunExit::Halted);
        e
    };
    assert_eq!(q(&e2, PT + 8 * 4) & 0x60, 0x60);
    assert_eq!(q(&e2, PML4) & 0x20, 0x20);
    assert_eq!(q(&e2, PDPT) & 0x20, 0x20);
}

#[test]
fn syscall_sysret_round_trip() {
    // Kernel: set up STAR/LSTAR/FMASK and SCE, SYSRETQ to 64-bit user code, which executes
    // SYSCALL; the entry point halts (LSTAR -> the #0 stub... a HLT at STUBS).
    let entry = STUBS + 16 * 255;
    let mut e = run_long_setup(entry, |a| {
        a.mov(rcx, USER64)?;
        a.mov(r11, 0x246u64)?;
        a.sysretq()
    });
    e.ram
        .write(
            USER64,
            &asm(64, USER64, |a| {
                a.mov(eax, 60)?;
                a.syscall()?;
                a.hlt()
            }),
        )
        .unwrap();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.pc(), entry + 1, "{:#x}", q(&e, e.cpu.gpr(Gpr::Rsp)));
    assert_eq!(e.cpu.cpl(), 0);
    assert_eq!(e.cpu.segment(SegReg::Cs).selector, 0x10);
    assert_eq!(e.cpu.segment(SegReg::Ss).selector, 0x18);
    // RCX = the user RIP after SYSCALL (mov eax, imm32 is 5 bytes, syscall 2), R11 = RFLAGS.
    assert_eq!(e.cpu.gpr(Gpr::Rcx), USER64 + 7);
    assert_eq!(e.cpu.gpr(Gpr::R11), 0x246);
    // FMASK cleared IF (and only what it names).
    assert_eq!(e.cpu.rflags() & IF, 0);
    assert_eq!(e.cpu.rflags() & ZF, ZF);

    // SYSRET (no REX.W) returns to compatibility mode at ECX with CS = STAR[63:48] | 3.
    let mut e = run_long_setup(entry, |a| {
        a.mov(rcx, USER32)?;
        a.mov(r11, 0x202u64)?;
        a.sysret()
    });
    e.ram
        .write(
            USER32,
            &asm(32, USER32, |a| {
                a.mov(eax, esp)?;
                a.int(0x80)?;
                a.hlt()
            }),
        )
        .unwrap();
    e.run_expect_vector(0x80);
    // The 64-bit frame: RIP, CS, RFLAGS, RSP, SS of the compatibility-mode caller.
    let top = e.cpu.gpr(Gpr::Rsp);
    assert_eq!(top, STACK0 - 40, "RSP0 from the TSS, aligned");
    assert_eq!(q(&e, top), USER32 + 4);
    assert_eq!(q(&e, top + 8), 0x23);
    assert_eq!(q(&e, top + 24), 0x7_f000);
    assert_eq!(q(&e, top + 32), 0x2b);
    // SYSCALL outside 64-bit mode is #UD on Intel; SYSRET at CPL 3 is #UD only outside 64-bit
    // mode, #GP in it.
    let mut e = run_long_setup(entry, |a| {
        a.mov(rcx, USER32)?;
        a.mov(r11, 0x2u64)?;
        a.sysret()
    });
    e.ram.write(USER32, &asm(32, USER32, |a| a.syscall())).unwrap();
    e.run_expect_vector(6);
}

/// Kernel 64-bit code with SYSCALL enabled (STAR = Linux's selectors, LSTAR = `entry`,
/// FMASK = IF|TF|DF), stopped before running `f`'s last instruction; user stack 0x7f000.
fn run_long_setup(entry: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = long_env(|a| {
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        a.or(eax, 1)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0081u32)?;
        a.xor(eax, eax)?;
        a.mov(edx, 0x0020_0010u32)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0082u32)?;
        a.mov(eax, entry as u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0084u32)?;
        a.mov(eax, 0x700u32)?;
        a.wrmsr()?;
        a.mov(rsp, 0x7_f000u64)?;
        f(a)
    });
    e.cpu.s.rflags |= ZF;
    e
}

#[test]
fn iretq_to_compatibility_mode_and_swapgs() {
    let mut e = run_long(|a| {
        // GS.base and KERNEL_GS_BASE through the MSRs, then SWAPGS.
        a.mov(ecx, 0xc000_0101u32)?;
        a.mov(eax, 0x1000u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.mov(ecx, 0xc000_0102u32)?;
        a.mov(eax, 0x2000u32)?;
        a.mov(edx, 0xffff_8000u32)?;
        a.wrmsr()?;
        a.swapgs()?;
        a.hlt()
    });
    assert_eq!(e.cpu.segment(SegReg::Gs).base, 0xffff_8000_0000_2000);
    assert_eq!(e.cpu.s.lm.kernel_gs_base, 0x1000);
    // IRETQ building a frame to 32-bit user code.
    let _ = &mut e;
    let mut e = long_env(|a| {
        a.push(0x2bi32)?;
        a.push(0x7_e000i32)?;
        a.push(0x202i32)?;
        a.push(0x23i32)?;
        a.push(USER32 as i32)?;
        a.iretq()
    });
    e.ram
        .write(
            USER32,
            &asm(32, USER32, |a| {
                a.mov(ebx, 7)?;
                a.int(0x80)
            }),
        )
        .unwrap();
    e.run_expect_vector(0x80);
    let top = e.cpu.gpr(Gpr::Rsp);
    assert_eq!(q(&e, top + 8), 0x23);
    assert_eq!(q(&e, top + 24), 0x7_e000);
    assert_eq!(e.cpu.gpr(Gpr::Rbx), 7);
    // SWAPGS at CPL 3 in 64-bit mode: #GP; in compatibility mode: #UD.
    let mut e = long_env(|a| {
        a.push(0x2bi32)?;
        a.push(0x7_e000i32)?;
        a.push(0x202i32)?;
        a.push(0x33i32)?;
        a.push(USER64 as i32)?;
        a.iretq()
    });
    e.ram.write(USER64, &asm(64, USER64, |a| a.swapgs())).unwrap();
    e.run_expect_vector(13);
}

#[test]
fn cmpxchg16b_compares_and_exchanges() {
    let e = run_long(|a| {
        a.mov(rdi, DATA)?;
        a.mov(rax, 1u64)?;
        a.mov(rdx, 2u64)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.mov(qword_ptr(rdi + 8), rdx)?;
        a.mov(rbx, 3u64)?;
        a.mov(rcx, 4u64)?;
        a.cmpxchg16b(xmmword_ptr(rdi))?;
        a.setz(r8b)?;
        a.cmpxchg16b(xmmword_ptr(rdi))?;
        a.setz(r9b)?;
        a.hlt()
    });
    assert_eq!(q(&e, DATA), 3);
    assert_eq!(q(&e, DATA + 8), 4);
    assert_eq!(e.cpu.gpr(Gpr::R8) & 0xff, 1);
    assert_eq!(e.cpu.gpr(Gpr::R9) & 0xff, 0);
    assert_eq!(e.cpu.gpr(Gpr::Rax), 3);
    assert_eq!(e.cpu.gpr(Gpr::Rdx), 4);
    let e = run_long(|a| {
        a.mov(rdi, DATA + 8)?;
        a.cmpxchg16b(xmmword_ptr(rdi))?;
        a.hlt()
    });
    assert_eq!(e.stub_vector(), Some(13), "misaligned");
}

#[test]
fn cpuid_advertises_long_mode_only_on_the_x86_64_model() {
    let e = run_long(|a| {
        a.mov(eax, 0x8000_0001u32)?;
        a.cpuid()?;
        a.hlt()
    });
    assert_eq!(e.cpu.gpr(Gpr::Rdx) & (1 << 29), 1 << 29);
    assert_eq!(e.cpu.gpr(Gpr::Rdx) & (1 << 11), 1 << 11);
    let e = super::tests::run_flat_pub(|a| {
        a.mov(eax, 0x8000_0001u32)?;
        a.cpuid()?;
        a.hlt()
    });
    assert_eq!(e.cpu.gpr(Gpr::Rdx) & ((1 << 29) | (1 << 11)), 0);
}

#[test]
fn state_round_trip_keeps_long_mode_registers() {
    let e = run_long(|a| {
        a.mov(ecx, 0xc000_0102u32)?;
        a.mov(eax, 0x1234u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.hlt()
    });
    let bytes = e.cpu.save_state();
    let mut c = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
    c.load_state(&bytes).unwrap();
    assert_eq!(c.s.lm.kernel_gs_base, 0x1234);
    assert!(c.long64());
    assert_eq!(c.state_hash(), e.cpu.state_hash());
}

#[test]
fn fast_path_matches_the_generic_path_in_64_bit_mode() {
    // Random mixes of the pre-decoded forms (32- and 64-bit operands, REX registers,
    // RIP-relative and based memory operands, branches, calls, stack operations) run once with
    // the fast path and once without it: identical registers, flags, memory.
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let r64 = [rax, rcx, rdx, rbx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    let r32 = [eax, ecx, edx, ebx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d];
    let r8s = [al, cl, dl, bl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b];
    for round in 0..40 {
        let ops: Vec<(u64, u64)> = (0..300).map(|_| (next(), next())).collect();
        let build = |a: &mut CodeAssembler| -> Result<(), IcedError> {
            let mut data = a.create_label();
            a.mov(rbp, DATA)?;
            for (x, y) in &ops {
                let (x, y) = (*x, *y);
                let k = (x >> 8) as usize % r64.len();
                let j = (x >> 16) as usize % r64.len();
                let (d, s, d32, s32) = (r64[k], r64[j], r32[k], r32[j]);
                let disp = ((y >> 20) & 0x1f8) as i32;
                let imm = (y >> 32) as i32;
                match x % 34 {
                    0 => a.mov(d, s)?,
                    1 => a.mov(d32, s32)?,
                    2 => a.mov(d, imm as i64)?,
                    3 => a.mov(d32, imm as u32)?,
                    4 => a.mov(d, qword_ptr(rbp + disp))?,
                    5 => a.mov(qword_ptr(rbp + disp), s)?,
                    6 => a.mov(dword_ptr(rbp + disp), s32)?,
                    7 => a.add(d, s)?,
                    8 => a.sub(d32, s32)?,
                    9 => a.xor(d, imm)?,
                    10 => a.and(d32, imm)?,
                    11 => a.cmp(d, qword_ptr(rbp + disp))?,
                    12 => a.adc(qword_ptr(rbp + disp), s)?,
                    13 => a.or(qword_ptr(rbp + disp), imm)?,
                    14 => a.shl(d, (y & 0x3f) as u32)?,
                    15 => a.sar(d32, (y & 0x1f) as u32)?,
                    16 => a.ror(d, (y & 0x3f) as u32)?,
                    17 => a.inc(d)?,
                    18 => a.dec(dword_ptr(rbp + disp))?,
                    19 => a.neg(d)?,
                    20 => a.not(d32)?,
                    21 => a.lea(d, ptr(s + d * 4 + disp))?,
                    22 => a.imul_3(d, s, imm)?,
                    23 => a.imul_2(d32, s32)?,
                    24 => a.movzx(d, byte_ptr(rbp + disp))?,
                    25 => a.movsxd(d, dword_ptr(rbp + disp))?,
                    26 => a.movsx(d32, r8s[j])?,
                    27 => a.mov(r8s[k], byte_ptr(rbp + disp))?,
                    28 => a.add(r8s[k], (y & 0xff) as i32)?,
                    29 => a.setg(r8s[k])?,
                    30 => a.cmovbe(d32, s32)?,
                    31 => a.cmovl(d, qword_ptr(rbp + disp))?,
                    32 => a.mov(d, qword_ptr(data))?,
                    _ => {
                        a.push(s)?;
                        a.mov(cl, (y & 0x3f) as i32)?;
                        a.shl(d, cl)?;
                        a.pop(d)?;
                    }
                }
                if x % 7 == 0 {
                    // A taken or not-taken branch over one instruction, and a call/ret pair.
                    let mut skip = a.create_label();
                    a.jl(skip)?;
                    a.inc(r15)?;
                    a.set_label(&mut skip)?;
                    a.nop()?;
                }
            }
            a.hlt()?;
            a.set_label(&mut data)?;
            a.dq(&[0x0123_4567_89ab_cdef])
        };
        let mut fast = long_env(build);
        let mut slow = long_env(build);
        slow.cpu.icache.fast = false;
        for env in [&mut fast, &mut slow] {
            for k in 0..128u64 {
                env.ram.write_u32(DATA + 4 * k, (k as u32).wrapping_mul(0x9e37_79b9)).unwrap();
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
fn hot_64_bit_forms_are_pre_decoded() {
    use crate::fast::{Kind, LiftOnly, Uop};
    let code = asm(64, 0, |a| {
        let mut l = a.create_label();
        a.add(rax, rbx)?;
        a.mov(r9d, dword_ptr(l))?;
        a.mov(qword_ptr(rsp + 8), r12)?;
        a.push(r15)?;
        a.ret()?;
        // Not fast: 16-bit operand, 32-bit address; a high byte register only for the
        // translator (a lift-only form: the interpreter's generic path runs it).
        a.add(ax, bx)?;
        a.mov(ah, 1)?;
        a.mov(rax, qword_ptr(eax))?;
        a.set_label(&mut l)?;
        a.dd(&[0])
    });
    let mut d = iced_x86::Decoder::new(64, &code, iced_x86::DecoderOptions::NONE);
    let kinds: Vec<Kind> =
        std::iter::from_fn(|| d.can_decode().then(|| Uop::build(&d.decode(), 64).kind)).take(8).collect();
    assert_eq!(
        kinds,
        [
            Kind::AluRR,
            Kind::MovRM,
            Kind::MovMR,
            Kind::PushR,
            Kind::Ret,
            Kind::Generic,
            Kind::Lift(LiftOnly::MovR8I),
            Kind::Generic
        ]
    );
    assert!(Kind::Lift(LiftOnly::MovR8I).lift_only());
}

#[test]
fn cr8_is_the_apic_task_priority() {
    // MOV CR8 reaches the local APIC's TPR (0xfee00080) through the Platform: CR8 = TPR[7:4].
    let mut e = long_env(|a| {
        a.mov(eax, 0x9)?;
        a.mov(cr8, rax)?;
        a.mov(rbx, cr8)?;
        a.hlt()
    });
    e.p.mmio_read_value = 0xa5;
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.p.mmio_writes, vec![(0xfee0_0080, 4, 0x90)]);
    assert_eq!(e.cpu.gpr(Gpr::Rbx), 0xa);
    // Reserved bits: #GP(0).
    let mut e = long_env(|a| {
        a.mov(eax, 0x10)?;
        a.mov(cr8, rax)?;
        a.hlt()
    });
    e.run_expect_vector(13);
}

#[test]
fn far_call_through_a_64_bit_call_gate_and_back() {
    // Ring 3 64-bit code calls through a DPL-3 call gate (GDT 0x50, 16 bytes) to ring-0 code at
    // GATE_TARGET, which returns with RETFQ.
    const GATE_TARGET: u64 = CODE + 0x800;
    let mut e = long_env(|a| {
        a.push(0x2bi32)?;
        a.push(0x7_e000i32)?;
        a.push(0x202i32)?;
        a.push(0x33i32)?;
        a.push(USER64 as i32)?;
        a.iretq()
    });
    let mut gdt: Vec<u64> = (0..10).map(|k| e.ram.read_u64(GDT + 8 * k).unwrap()).collect();
    let (lo, hi) = gate64(0x10, GATE_TARGET, 0xec, 0);
    gdt.push(lo);
    gdt.push(hi);
    for (k, d) in gdt.iter().enumerate() {
        e.ram.write_u64(GDT + 8 * k as u64, *d).unwrap();
    }
    e.cpu.s.gdtr = DescTable { base: GDT, limit: 8 * gdt.len() as u32 - 1 };
    // call far [rip+disp]: FF /3 with REX.W (m16:64) pointing at a far pointer after the code.
    let ptr_at = USER64 + 0x100;
    let call: Vec<u8> = {
        let disp = (ptr_at - (USER64 + 7)) as u32;
        let mut v = vec![0x48, 0xff, 0x1d];
        v.extend_from_slice(&disp.to_le_bytes());
        v.push(0xf4); // hlt after the return
        v
    };
    e.ram.write(USER64, &call).unwrap();
    e.ram.write_u64(ptr_at, 0).unwrap();
    e.ram.write(ptr_at + 8, &0x53u16.to_le_bytes()).unwrap();
    // Ring 0: check the frame, then return to ring 3.
    e.ram
        .write(
            GATE_TARGET,
            &asm(64, GATE_TARGET, |a| {
                a.mov(r8, rsp)?;
                a.mov(r9, qword_ptr(rsp))?;
                a.mov(r10, qword_ptr(rsp + 8))?;
                a.mov(r11, qword_ptr(rsp + 16))?;
                a.mov(r12, qword_ptr(rsp + 24))?;
                a.mov(r13, cs)?;
                // RETFQ (REX.W CB).
                a.db(&[0x48, 0xcb])
            }),
        )
        .unwrap();
    // Back in ring 3 after the return, the HLT there is #GP(0): its frame shows where.
    e.run_expect_vector(13);
    let top = e.cpu.gpr(Gpr::Rsp);
    assert_eq!(q(&e, top + 8), USER64 + 7, "faulting RIP: the HLT after the call");
    assert_eq!(q(&e, top + 16), 0x33, "ring-3 CS");
    assert_eq!(q(&e, top + 32), 0x7_e000, "ring-3 RSP restored by RETFQ");
    assert_eq!(e.cpu.gpr(Gpr::R8), STACK0 - 32, "RSP0 of the TSS, four 8-byte slots");
    assert_eq!(e.cpu.gpr(Gpr::R9), USER64 + 7, "return RIP");
    assert_eq!(e.cpu.gpr(Gpr::R10), 0x33, "caller CS");
    assert_eq!(e.cpu.gpr(Gpr::R11), 0x7_e000, "caller RSP");
    assert_eq!(e.cpu.gpr(Gpr::R12), 0x2b, "caller SS");
    assert_eq!(e.cpu.gpr(Gpr::R13) & 0xffff, 0x10, "ring-0 CS");
}

#[test]
fn four_level_entries_ignore_bits_62_to_52() {
    // Bits 62:52 of IA-32e paging entries are free for software (Linux keeps flags there); only
    // 51:MAXPHYADDR are reserved.
    let mut e = long_env(|a| {
        a.mov(rax, qword_ptr(0x60_2000u64))?;
        a.mov(rbx, qword_ptr(0x60_3000u64))?;
        a.hlt()
    });
    e.ram.write_u64(PD + 8 * 3, PT | 7 | (0x7ff << 52)).unwrap();
    for k in 0..512u64 {
        e.ram.write_u64(PT + 8 * k, (0x60_0000 + (k << 12)) | 7 | (1 << 58)).unwrap();
    }
    e.ram.write_u64(0x60_2000, 0x1234).unwrap();
    // A bit in 51:36 is reserved: #PF with RSVD.
    e.ram.write_u64(PT + 8 * 3, 0x60_3000 | 7 | (1 << 40)).unwrap();
    e.run_expect_vector(14);
    assert_eq!(e.cpu.gpr(Gpr::Rax), 0x1234, "the software bits did not fault");
    assert_eq!(e.cpu.cr(2), 0x60_3000);
    assert_eq!(q(&e, e.cpu.gpr(Gpr::Rsp)), 0x9, "P | RSVD");
}
