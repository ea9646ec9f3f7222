//! Unit tests for gaps found by 32-bit conformance programs: ENTER on mixed operand/stack sizes
//! and its final-stack-pointer check, 16-bit SHLD/SHRD with counts above 16, the MSR table, debug
//! registers and breakpoints, NMI delivery, entering a virtual-8086 task. Same style as `tests.rs`.

use super::*;
use crate::tests::{asm, desc, paging_env, Env, GDT, STACK0};
use iced_x86::code_asm::*;

fn run_flat(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Env {
    let mut e = Env::flat(f);
    let x = e.run();
    assert_eq!(x, RunExit::Halted, "{}", e.cpu.info_registers());
    e
}

/// Add a 16-bit (B=0) flat data segment as selector 0x38 for use as SS.
fn add_stack16(e: &mut Env) {
    e.ram.write_u64(GDT + 0x38, desc(0, 0xfffff, 0x92, 0x8)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
}

// ---------------------------------------------------------------- ENTER

#[test]
fn enter32_on_16bit_stack_uses_full_esp_for_frame() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x1234_8000)?;
        a.mov(ebp, 0x5678_9000)?;
        a.mov(dword_ptr(0x8ffc), 0xaaaa_bbbbu32 as i32)?;
        a.enter(8, 2)?;
        a.hlt()
    });
    add_stack16(&mut e);
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    // Push EBP at SS:7ffc (SP only moves); FrameTemp = full ESP; display entry read through BP.
    assert_eq!(e.r(Gpr::Rbp), 0x1234_7ffc, "EBP <- ESP (not SP)");
    assert_eq!(e.ram.read_u32(0x7ffc).unwrap(), 0x5678_9000);
    assert_eq!(e.ram.read_u32(0x7ff8).unwrap(), 0xaaaa_bbbb, "display read at BP-4");
    assert_eq!(e.ram.read_u32(0x7ff4).unwrap(), 0x1234_7ffc, "FrameTemp pushed");
    // Final update on SP (stack-address size), upper ESP kept.
    assert_eq!(e.r(Gpr::Rsp), 0x1234_7ff4 - 8);
}

#[test]
fn enter16_on_32bit_stack_sets_bp_only() {
    let e = run_flat(|a| {
        a.mov(esp, 0x12_0000)?;
        a.mov(ebp, 0x5678_9abcu32 as i32)?;
        a.db(&[0x66, 0xc8, 0x10, 0x00, 0x01])?; // enterw 0x10, 1
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbp), 0x5678_fffe, "BP <- SP, upper EBP unchanged");
    assert_eq!(e.r(Gpr::Rsp), 0x12_0000 - 4 - 0x10, "ESP - AllocSize on a 32-bit stack");
    assert_eq!(e.ram.read_u32(0x11_fffe).unwrap() & 0xffff, 0x9abc);
    assert_eq!(e.ram.read_u32(0x11_fffc).unwrap() & 0xffff, 0xfffe);
}

#[test]
fn enter_faults_atomically_when_final_esp_is_not_writable() {
    // Ring 3 with a user-writable stack page at 0x3ff000 and a supervisor page below it: the
    // pushes fit in the user page, the final ESP does not.
    let user = asm(32, 0x40_0000, |a| {
        a.mov(ebp, 0x1111_2222)?;
        a.enter(0x20, 0)?;
        a.hlt()
    });
    let mut e = paging_env(|a| {
        a.push(0x2b)?;
        a.push(0x3f_f010)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(0x40_0000)?;
        a.iretd()
    });
    e.ram.write(0x40_0000, &user).unwrap();
    e.ram.write_u32(0x10000, 0x11000 | 0x7).unwrap();
    e.ram.write_u32(0x11000 + 4 * 0x3ff, 0x3f_f000 | 0x7).unwrap();
    e.ram.write_u32(0x3f_f00c, 0xdead_beef).unwrap();
    e.run_expect_vector(14);
    assert_eq!(e.cpu.cr(2), 0x3f_f010 - 4 - 0x20);
    assert_eq!(e.stack(0), 0x7, "present, write, user");
    assert_eq!(u64::from(e.stack(1)), 0x40_0005, "faulting ENTER");
    assert_eq!(e.stack(4), 0x3f_f010, "ESP unchanged");
    assert_eq!(e.r(Gpr::Rbp), 0x1111_2222, "EBP unchanged");
    assert_eq!(e.ram.read_u32(0x3f_f00c).unwrap(), 0xdead_beef, "nothing pushed");
    assert_eq!(e.cpu.gpr(Gpr::Rsp), STACK0 - 24);
}

#[test]
fn enter_stack_limit_fault_is_ss() {
    // 16-bit stack with limit 0x7fff: a nested ENTER whose display read (through BP) is beyond
    // the limit raises #SS(0) before anything is written.
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x38)?;
        a.mov(ss, ax)?;
        a.mov(esp, 0x7ffc)?;
        a.mov(ebp, 0x4444)?;
        a.enter(0, 0)?;
        a.mov(ebp, 0x9000)?;
        a.enter(0, 2)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x38, desc(0, 0x7fff, 0x92, 0x0)).unwrap();
    e.cpu.s.gdtr.limit = 0x3f;
    e.run_expect_vector(12);
    assert_eq!(e.stack(0), 0, "#SS(0)");
    assert_eq!(e.r(Gpr::Rbp), 0x9000);
    assert_eq!(e.cpu.gpr(Gpr::Rsp) + 16, 0x7ff8, "SP as before the faulting ENTER");
}

// ---------------------------------------------------------------- SHLD/SHRD

#[test]
fn shld_shrd_16bit_counts_above_16_match_intel() {
    // Values measured on an Intel host (see flags.rs): dst:src:dst model, OF by the 1-bit rule.
    for (c, shrd_r, shrd_cf, shld_r, shld_cf) in
        [(17u8, 0x55e6u64, CF, 0x579au64, CF), (24, 0x34ab, CF, 0xcd12, CF), (31, 0x2469, 0, 0x891a, 0)]
    {
        let e = run_flat(|a| {
            a.mov(ax, 0x1234)?;
            a.mov(bx, 0xabcdu16 as i32)?;
            a.mov(cl, c as u32)?;
            a.shrd(ax, bx, cl)?;
            a.hlt()
        });
        assert_eq!(u64::from(e.r(Gpr::Rax)) & 0xffff, shrd_r, "shrd count {c}");
        assert_eq!(e.status() & (CF | OF), shrd_cf | OF, "shrd count {c}: OF = src[0] ^ dst[15]");
        let e = run_flat(|a| {
            a.mov(ax, 0x1234)?;
            a.mov(bx, 0xabcdu16 as i32)?;
            a.shld(ax, bx, c as u32)?;
            a.hlt()
        });
        assert_eq!(u64::from(e.r(Gpr::Rax)) & 0xffff, shld_r, "shld count {c}");
        assert_eq!(e.status() & (CF | OF), shld_cf, "shld count {c}: OF = dst[15] ^ dst[14]");
    }
    // Count 16 exactly: src moves into dst.
    let e = run_flat(|a| {
        a.mov(word_ptr(0x40_0000), 0x8001)?;
        a.mov(bx, 0x7f00)?;
        a.shrd(word_ptr(0x40_0000), bx, 16)?;
        a.hlt()
    });
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap() & 0xffff, 0x7f00);
    assert_eq!(e.status() & CF, CF);
}

// ---------------------------------------------------------------- MSRs

#[test]
fn misc_enable_pat_and_missing_msrs() {
    let e = run_flat(|a| {
        a.mov(ecx, 0x1a0)?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x40_0000), eax)?;
        // Set limit-CPUID-maxval, clear fast strings; the read-only bits 11/12 written as 0 stay 1.
        a.mov(eax, 1 << 22)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x40_0004), eax)?;
        a.mov(ecx, 0x277)?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x40_0008), eax)?;
        a.mov(dword_ptr(0x40_000c), edx)?;
        a.mov(eax, 0x0106_0407)?;
        a.mov(edx, 0x0005_0004)?;
        a.wrmsr()?;
        a.rdmsr()?;
        a.mov(dword_ptr(0x40_0010), eax)?;
        a.mov(dword_ptr(0x40_0014), edx)?;
        a.mov(eax, 1)?;
        a.cpuid()?;
        a.hlt()
    });
    let rd = |k: u64| e.ram.read_u32(0x40_0000 + k).unwrap();
    assert_eq!(rd(0), 0x1801, "MISC_ENABLE reset: fast strings, BTS/PEBS unavailable");
    assert_eq!(rd(4), 0x40_1800);
    assert_eq!((rd(8), rd(12)), (0x0007_0406, 0x0007_0406), "PAT reset");
    assert_eq!((rd(16), rd(20)), (0x0106_0407, 0x0005_0004));
    let cpuid_edx = e.r(Gpr::Rdx);
    assert_ne!(cpuid_edx & (1 << 16), 0, "PAT advertised");
    assert_ne!(cpuid_edx & (1 << 2), 0, "DE advertised (CR4.DE implemented)");
    assert_eq!(cpuid_edx & (1 << 12), 0, "no MTRRs");
    assert_eq!(cpuid_edx & (1 << 7), 0, "no MCE");
    // #GP(0): reserved MISC_ENABLE bit, reserved PAT type, reserved EFER bits, MSRs this model
    // does not have.
    for (msr, write, eax_v, edx_v) in [
        (0x1a0u32, true, 2u32, 0u32),
        (0x277, true, 0x0000_0002, 0),
        (0x277, true, 0, 0x0800_0000),
        (0x17, true, 0, 0),
        (0xfe, false, 0, 0),
        (0x2ff, false, 0, 0),
        (0x179, false, 0, 0),
        (0xc000_0080, true, 1 << 8, 0), // EFER.LME: no long mode
        (0xc000_0080, true, 1, 0),      // EFER.SCE: no SYSCALL
        (0xc000_0081, false, 0, 0),     // STAR
        (0x1234, false, 0, 0),
    ] {
        let mut e = Env::flat(|a| {
            a.mov(ecx, msr)?;
            a.mov(eax, eax_v)?;
            a.mov(edx, edx_v)?;
            if write {
                a.wrmsr()?;
            } else {
                a.rdmsr()?;
            }
            a.hlt()
        });
        e.run_expect_vector(13);
        assert_eq!(e.stack(0), 0, "MSR {msr:#x}");
    }
}

// ---------------------------------------------------------------- debug registers

/// Replace the stub of `vector` with `code` (at most 16 bytes).
fn set_stub(e: &mut Env, vector: u64, code: &[u8]) {
    assert!(code.len() <= 16);
    e.ram.write(crate::tests::STUBS + 16 * vector, code).unwrap();
}

#[test]
fn instruction_breakpoint_faults_and_rf_resumes() {
    let mut e = Env::flat(|a| {
        let mut target = a.create_label();
        a.mov(eax, 0x10_0000 + 0x10)?; // address of `target` (checked below)
        a.mov(dr0, eax)?;
        a.mov(eax, 1)?; // L0, execute, 1 byte
        a.mov(dr7, eax)?;
        a.set_label(&mut target)?;
        a.mov(ebx, 0x55)?;
        a.hlt()
    });
    assert_eq!(e.ram.read_u32(0x10_0010).unwrap() & 0xff, 0xbb, "target is mov ebx, imm32");
    e.run_expect_vector(1);
    assert_eq!(e.stack(0), 0x10_0010, "fault: EIP of the breakpointed instruction");
    assert_eq!(e.stack(2) & (1 << 16), 0, "RF pushed as 0 for an instruction breakpoint");
    assert_eq!(e.r(Gpr::Rbx), 0, "not executed");
    assert_eq!(e.cpu.dr(6) & 0xf, 1, "B0");
    // A handler that counts, sets RF in the image and returns: the instruction then runs once.
    let mut e2 = Env::flat(|a| {
        a.mov(eax, 0x10_0000 + 0x10)?;
        a.mov(dr0, eax)?;
        a.mov(eax, 1)?;
        a.mov(dr7, eax)?;
        a.mov(ebx, 0x55)?;
        a.nop()?;
        a.hlt()
    });
    let h = asm(32, 0, |a| {
        a.inc(dword_ptr(0x40_0000))?;
        a.or(dword_ptr(esp + 8), 0x1_0000)?;
        a.iretd()
    });
    set_stub(&mut e2, 1, &h);
    assert_eq!(e2.run(), RunExit::Halted);
    assert_eq!(e2.stub_vector(), None, "{}", e2.cpu.info_registers());
    assert_eq!(e2.ram.read_u32(0x40_0000).unwrap(), 1, "one #DB");
    assert_eq!(e2.r(Gpr::Rbx), 0x55);
    assert_eq!(e2.cpu.rflags() & RF, 0, "RF cleared after the instruction completed");
}

#[test]
fn data_breakpoints_trap_after_the_access() {
    // DR1 watches the dword at 0x400010 for writes (R/W=01, LEN=11).
    let dr7_w: u32 = (1 << 2) | (0b01 << 20) | (0b11 << 22);
    let dr7_rw: u32 = (1 << 2) | (0b11 << 20) | (0b11 << 22);
    for (dr7_v, write, hit) in [(dr7_w, true, true), (dr7_w, false, false), (dr7_rw, false, true)] {
        let mut e = Env::flat(|a| {
            a.mov(eax, 0x40_0013)?; // aligned down to the 4-byte range
            a.mov(dr1, eax)?;
            a.mov(eax, dr7_v)?;
            a.mov(dr7, eax)?;
            a.mov(eax, 0x1234)?;
            if write {
                a.mov(word_ptr(0x40_0012), ax)?;
            } else {
                a.mov(ecx, dword_ptr(0x40_000e))?;
            }
            a.nop()?;
            a.hlt()
        });
        if hit {
            e.run_expect_vector(1);
            assert_eq!(e.cpu.dr(6) & 0xf, 2, "B1");
            let after = e.stack(0);
            let at = e.ram.read_u32(u64::from(after)).unwrap() & 0xff;
            assert_eq!(at, 0x90, "trap: EIP after the accessing instruction (the nop)");
            if write {
                assert_eq!(e.ram.read_u32(0x40_0010).unwrap(), 0x1234_0000, "write done before the trap");
            }
        } else {
            assert_eq!(e.run(), RunExit::Halted);
            assert_eq!(e.stub_vector(), None, "a read does not hit a write-only breakpoint");
        }
    }
}

#[test]
fn io_breakpoint_needs_cr4_de() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x80)?;
        a.mov(dr2, eax)?;
        a.mov(eax, (1 << 4) | (0b10 << 24))?; // L2, I/O, 1 byte
        a.mov(dr7, eax)?;
        a.out(0x80, al)?; // CR4.DE=0: undefined encoding, ignored
        a.mov(eax, cr4)?;
        a.or(eax, 1 << 3)?;
        a.mov(cr4, eax)?;
        a.out(0x80, al)?;
        a.nop()?;
        a.hlt()
    });
    e.run_expect_vector(1);
    assert_eq!(e.cpu.dr(6) & 0xf, 4, "B2");
    assert_eq!(e.p.io_writes.len(), 2, "trap after the second OUT");
}

#[test]
fn general_detect_and_dr4_dr5() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 1 << 13)?;
        a.mov(dr7, eax)?;
        a.mov(eax, dr0)?;
        a.hlt()
    });
    e.run_expect_vector(1);
    assert_eq!(e.stack(0), 0x10_0000 + 8, "fault at the MOV from DR0");
    assert_ne!(e.cpu.dr(6) & (1 << 13), 0, "BD");
    assert_eq!(e.cpu.dr(7) & (1 << 13), 0, "GD cleared on delivery");
    assert_ne!(e.stack(2) & (1 << 16), 0, "fault-class #DB pushes RF=1");
    // DR4/DR5 alias DR6/DR7 with CR4.DE=0; #UD with CR4.DE=1.
    let e = run_flat(|a| {
        a.mov(eax, 0x0f)?;
        a.mov(dr6, eax)?;
        a.mov(ebx, dr4)?;
        a.mov(ecx, dr5)?;
        a.hlt()
    });
    assert_eq!(e.r(Gpr::Rbx), 0xffff_0fff);
    assert_eq!(e.r(Gpr::Rcx), 0x400);
    let mut e = Env::flat(|a| {
        a.mov(eax, cr4)?;
        a.or(eax, 1 << 3)?;
        a.mov(cr4, eax)?;
        a.mov(ebx, dr5)?;
        a.hlt()
    });
    e.run_expect_vector(6);
}

#[test]
fn mov_dr_at_cpl3_is_gp() {
    let user = asm(32, 0x40_0000, |a| {
        a.mov(eax, dr7)?;
        a.hlt()
    });
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x40_1000)?;
        a.push(0x2)?;
        a.push(0x23)?;
        a.push(0x40_0000)?;
        a.iretd()
    });
    e.ram.write(0x40_0000, &user).unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.stack(1), 0x40_0000);
}

#[test]
fn single_step_sets_bs_and_mov_ss_delays_it() {
    let mut e = Env::flat(|a| {
        a.mov(eax, 0x18)?;
        a.pushfd()?;
        a.or(dword_ptr(esp), 0x100)?;
        a.popfd()?;
        a.mov(ss, ax)?; // the trap for this instruction waits until after the next one
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    e.run_expect_vector(1);
    assert_ne!(e.cpu.dr(6) & (1 << 14), 0, "BS");
    // One trap, between the two NOPs: none right after MOV SS.
    let eip = u64::from(e.stack(0));
    assert_eq!(e.ram.read_u32(eip - 1).unwrap() & 0xffff, 0x9090, "after the first NOP, before the second");
    assert_eq!(e.ram.read_u32(eip - 4).unwrap() & 0xff_ffff, 0xd08e66, "MOV SS right before the first NOP");
}

// ---------------------------------------------------------------- NMI

#[test]
fn nmi_ignores_if_blocks_until_iret_and_wakes_hlt() {
    let mut e = Env::flat(|a| {
        a.nop()?;
        a.nop()?;
        a.nop()?;
        a.hlt()?;
        a.mov(ebx, 1)?;
        a.hlt()
    });
    let h = asm(32, 0, |a| {
        a.inc(dword_ptr(0x40_0000))?;
        a.iretd()
    });
    set_stub(&mut e, 2, &h);
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 1), RunExit::Limit);
    e.cpu.raise_nmi();
    e.cpu.raise_nmi(); // edge-latched: still one NMI
    assert!(e.cpu.nmi_pending());
    // Delivery (IF=0 does not matter) and the handler's INC.
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 2), RunExit::Limit);
    assert!(e.cpu.nmi_blocked());
    assert!(!e.cpu.nmi_pending());
    e.cpu.raise_nmi();
    // The IRET unblocks; the second NMI is then taken at once.
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 3), RunExit::Limit);
    assert!(e.cpu.nmi_pending() && !e.cpu.nmi_blocked(), "IRET unblocked NMIs");
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 100), RunExit::Halted);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap(), 2);
    assert_eq!(e.cpu.pc(), 0x10_0004, "halted in HLT");
    // An NMI wakes HLT (IF=0).
    let before = e.cpu.state_hash();
    e.cpu.raise_nmi();
    assert_ne!(e.cpu.state_hash(), before, "NMI latch is hashed");
    let saved = e.cpu.save_state();
    let mut c = Cpu::new(CpuConfig::i386());
    c.load_state(&saved).unwrap();
    assert!(c.nmi_pending());
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, 100), RunExit::Halted);
    assert_eq!(e.ram.read_u32(0x40_0000).unwrap(), 3);
    assert_eq!(e.r(Gpr::Rbx), 1, "resumed after HLT");
}

#[test]
fn nmi_through_a_task_gate() {
    let mut e = Env::flat(|a| {
        a.nop()?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x30, desc(crate::tests::TSS as u32, 0x67, 0x8b, 0)).unwrap();
    e.ram.write_u64(crate::tests::IDT + 2 * 8, crate::tests::gate(0x38, 0, 0x85)).unwrap();
    e.ram.write(0x30_0000, &[0xf4]).unwrap();
    crate::tests::add_task(&mut e, 0x30_0000);
    e.cpu.raise_nmi();
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.pc(), 0x30_0001);
    assert_eq!(e.cpu.s.tr.selector, 0x38);
    assert!(e.cpu.nmi_blocked());
    assert_ne!(e.cpu.rflags() & NT, 0, "nested task: IRET returns");
}

// ---------------------------------------------------------------- state format, VM86

#[test]
fn versions_2_to_4_still_load() {
    let mut e = run_flat(|a| {
        a.mov(eax, 0x1234)?;
        a.hlt()
    });
    let v5 = e.cpu.save_state();
    assert_eq!(v5[0], 5);
    let s = &e.cpu.s;
    // Each version appended fields at the end: cut them off to get the older layouts.
    let v5_tail = postcard::to_stdvec(&(&s.lm, &s.sse)).unwrap();
    let mut v4 = v5[..v5.len() - v5_tail.len()].to_vec();
    v4[0] = 4;
    let v4_tail = postcard::to_stdvec(&s.pdpte).unwrap();
    let mut v3 = v4[..v4.len() - v4_tail.len()].to_vec();
    v3[0] = 3;
    let v3_tail =
        postcard::to_stdvec(&(s.misc_enable, s.pat, s.nmi_pending, s.nmi_blocked, s.ss_shadow, s.dbg_pending)).unwrap();
    let mut v2 = v3[..v3.len() - v3_tail.len()].to_vec();
    v2[0] = 2;
    for old in [&v4, &v3, &v2] {
        let mut c = Cpu::new(CpuConfig::i386());
        c.load_state(old).unwrap();
        assert_eq!(c.gpr(Gpr::Rax), 0x1234);
        assert_eq!(c.state_hash(), e.cpu.state_hash(), "new fields at their reset values");
    }
    let mut c = Cpu::new(CpuConfig::i386());
    v2[0] = 9;
    assert!(matches!(c.load_state(&v2), Err(CpuStateError::Version { found: 9, expected: 5 })));
    c.load_state(&v3).unwrap();
    e.cpu.s.nmi_blocked = true;
    assert_ne!(c.state_hash(), e.cpu.state_hash());
    e.cpu.s.nmi_blocked = false;
    e.cpu.s.pdpte[2] = 0x5001;
    assert_ne!(c.state_hash(), e.cpu.state_hash(), "the PDPTE registers are state");
    c.load_state(&e.cpu.save_state()).unwrap();
    assert_eq!(c.s.pdpte[2], 0x5001);
}

#[test]
fn task_switch_into_vm86_task_runs_8086_code() {
    // CALL to a 32-bit TSS whose EFLAGS image has VM=1: the segment registers are loaded
    // 8086-style from the TSS (no descriptor checks), CPL 3, and the task runs 16-bit code at
    // CS:IP = 0x2000:0. Its HLT is #GP(0), delivered with the VM86 frame on the ring-0 stack
    // named by the new (current) TSS.
    let mut e = Env::flat(|a| {
        a.call_far(0x38, 0)?;
        a.hlt()
    });
    e.ram.write_u64(GDT + 0x30, desc(crate::tests::TSS as u32, 0x67, 0x8b, 0)).unwrap();
    crate::tests::add_task(&mut e, 0);
    let t = 0x6000u64;
    e.ram.write_u32(t + 0x24, 0x2_0002).unwrap(); // EFLAGS with VM=1
    e.ram.write_u32(t + 0x38, 0xfff0).unwrap(); // ESP
    for (r, s) in [0x5000u32, 0x2000, 0x3000, 0x4000, 0x5800, 0x6800].iter().enumerate() {
        e.ram.write_u32(t + 0x48 + 4 * r as u64, *s).unwrap();
    }
    e.ram.write_u32(t + 4, 0x6_0000).unwrap(); // ESP0
    e.ram.write_u32(t + 8, 0x18).unwrap(); // SS0
    let code = asm(16, 0, |a| {
        a.mov(bx, word_ptr(0x10))?;
        a.mov(cx, ss)?;
        a.hlt()
    });
    e.ram.write(0x2_0000, &code).unwrap();
    e.ram.write(0x4_0010, &[0xef, 0xbe]).unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.cpu.s.tr.selector, 0x38);
    assert_eq!(e.r(Gpr::Rax), 0xaaaa, "EAX from the TSS");
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0xbeef, "DS:0x10 = linear 0x40010");
    assert_eq!(e.r(Gpr::Rcx) & 0xffff, 0x3000);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), 0x6_0000 - 40);
    let frame: Vec<u32> = (0..10).map(|k| e.stack(k)).collect();
    let fl = 0x2_0000 | 0x1_0000 | NT as u32 | 2; // VM, RF (fault), NT (nested task)
    assert_eq!(frame, [0, 6, 0x2000, fl, 0xfff0, 0x3000, 0x5000, 0x4000, 0x5800, 0x6800]);
    assert_eq!(e.cpu.s.seg[SegReg::Ds as usize].selector, 0, "null data segments in the handler");
}
