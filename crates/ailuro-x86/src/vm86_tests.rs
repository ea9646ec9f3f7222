//! Virtual-8086 mode tests (SDM Vol. 3 chapter 20, Vol. 2 INT n / IRET / PUSHF / POPF / IN / OUT
//! pseudocode): entry by IRET and by task switch, 8086 addressing with user-mode paging,
//! IOPL-sensitive instructions, the I/O permission bitmap, interrupts and exceptions with the VM86
//! frame, IRET back into VM86, and IA-32e mode ignoring VM. Same style as `tests.rs`.

use super::*;
use crate::tests::{asm, desc, gate, paging_env, Env, TestPlat, CODE, GDT, IDT, STACK, STACK0, TSS};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

const V86_CS: u16 = 0x2000;
const V86_SS: u16 = 0x3000;
const V86_SP: u32 = 0xfff0;
const V86_DS: u16 = 0x4000;
const V86_ES: u16 = 0x5000;
const V86_FS: u16 = 0x5800;
const V86_GS: u16 = 0x6800;
/// Instructions of the ring-0 prologue `enter_v86` emits (9 pushes and IRETD).
const ENTRY_INSNS: u64 = 10;
const IOPL3: u32 = 0x3000;
const IF_: u32 = 0x200;
const VM_: u32 = 0x2_0000;
/// RF: pushed as 1 by every fault-class exception.
const RF_: u32 = 0x1_0000;

const ES_: usize = SegReg::Es as usize;
const CS_: usize = SegReg::Cs as usize;
const SS_: usize = SegReg::Ss as usize;
const DS_: usize = SegReg::Ds as usize;
const FS_: usize = SegReg::Fs as usize;
const GS_: usize = SegReg::Gs as usize;

fn lin(seg: u16, off: u32) -> u64 {
    (u64::from(seg) << 4) + u64::from(off)
}

fn w16(e: &mut Env, a: u64, v: u16) {
    e.ram.write(a, &v.to_le_bytes()).unwrap();
}

fn r16(e: &Env, a: u64) -> u16 {
    let mut b = [0u8; 2];
    e.ram.read(a, &mut b).unwrap();
    u16::from_le_bytes(b)
}

/// Ring-0 code that IRETDs into VM86 at V86_CS:0 with EFLAGS = `fl` | VM and the V86_* segments.
fn enter_v86(a: &mut CodeAssembler, fl: u32) -> Result<(), IcedError> {
    for v in [V86_GS, V86_FS, V86_DS, V86_ES, V86_SS] {
        a.push(i32::from(v))?;
    }
    a.push(V86_SP as i32)?;
    a.push((fl | VM_ | 2) as i32)?;
    a.push(i32::from(V86_CS))?;
    a.push(0)?;
    a.iretd()
}

/// `Env::flat` whose ring-0 code enters VM86 running the 16-bit code `f` at V86_CS:0.
fn vm86_env(fl: u32, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Env {
    let mut e = Env::flat(|a| enter_v86(a, fl));
    e.ram.write(lin(V86_CS, 0), &asm(16, 0, f)).unwrap();
    e
}

/// VM86 code given as raw bytes.
fn vm86_bytes(fl: u32, code: &[u8]) -> Env {
    let mut e = Env::flat(|a| enter_v86(a, fl));
    e.ram.write(lin(V86_CS, 0), code).unwrap();
    e
}

/// Run `n` instructions (the run must stop on the limit).
fn run_n(e: &mut Env, n: u64) {
    let stop = e.cpu.icount() + n;
    assert_eq!(e.cpu.run(&mut e.ram, &mut e.p, stop), RunExit::Limit, "{}", e.cpu.info_registers());
}

/// Check the ring-0 frame of an event from VM86 at ESP (with `err` the error code, if any) and
/// the state right after delivery: CPL 0, VM clear, null data segments, the TSS ring-0 stack.
fn check_frame(e: &Env, err: Option<u32>, eip: u32, sel: u16, sp_img: u32, esp0: u64) {
    let nerr = u64::from(err.is_some());
    if let Some(c) = err {
        assert_eq!(e.stack(0), c, "error code");
    }
    assert_eq!(e.stack(nerr), eip, "EIP");
    assert_eq!(e.stack(nerr + 1), u32::from(sel), "CS");
    assert_ne!(e.stack(nerr + 2) & VM_, 0, "EFLAGS image has VM");
    assert_eq!(e.stack(nerr + 3), sp_img, "ESP");
    assert_eq!(e.stack(nerr + 4), u32::from(V86_SS), "SS");
    assert_eq!(e.stack(nerr + 5), u32::from(V86_ES), "ES");
    assert_eq!(e.stack(nerr + 6), u32::from(V86_DS), "DS");
    assert_eq!(e.stack(nerr + 7), u32::from(V86_FS), "FS");
    assert_eq!(e.stack(nerr + 8), u32::from(V86_GS), "GS");
    assert_eq!(e.cpu.gpr(Gpr::Rsp), esp0 - 4 * (9 + nerr), "9 or 10 dwords on the TSS ring-0 stack");
    assert_eq!(e.cpu.cpl(), 0);
    assert_eq!(e.cpu.rflags() & u64::from(VM_), 0, "VM cleared");
    assert_eq!(e.cpu.s.seg[SS_].selector, 0x18, "SS0 from the TSS");
    for r in [ES_, DS_, FS_, GS_] {
        assert_eq!(e.cpu.s.seg[r], Segment { selector: 0, base: 0, limit: 0, attr: 0 }, "null segment {r}");
    }
}

// ---------------------------------------------------------------- entry

#[test]
fn iret_enters_vm86_with_8086_segments_and_16bit_code() {
    let mut e = vm86_env(0, |a| {
        a.mov(ax, 0x1234)?; // B8 34 12: a 16-bit immediate only when decoded as 16-bit code
        a.mov(bx, word_ptr(0x10))?;
        a.mov(cx, cs)?;
        a.push(bx)?;
        a.mov(dx, word_ptr(0x20).es())?;
        a.hlt()
    });
    w16(&mut e, lin(V86_DS, 0x10), 0xbeef);
    w16(&mut e, lin(V86_ES, 0x20), 0x5a5a);
    run_n(&mut e, ENTRY_INSNS);
    assert_eq!(e.cpu.cpl(), 3, "CPL 3 in VM86");
    assert!(e.cpu.vm86());
    assert_eq!(e.cpu.rip(), 0);
    assert_eq!(e.cpu.gpr(Gpr::Rsp), u64::from(V86_SP));
    for (r, sel) in [(ES_, V86_ES), (CS_, V86_CS), (SS_, V86_SS), (DS_, V86_DS), (FS_, V86_FS), (GS_, V86_GS)] {
        let s = e.cpu.s.seg[r];
        assert_eq!(s, Segment { selector: sel, base: u64::from(sel) << 4, limit: 0xffff, attr: 0xf3 }, "seg {r}");
    }
    // HLT is privileged: #GP(0) to the ring-0 handler with the VM86 frame.
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x1234);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0xbeef);
    assert_eq!(e.r(Gpr::Rcx) & 0xffff, u32::from(V86_CS));
    assert_eq!(e.r(Gpr::Rdx) & 0xffff, 0x5a5a);
    assert_eq!(r16(&e, lin(V86_SS, V86_SP - 2)), 0xbeef, "push through SS:SP");
    // mov ax (3) + mov bx,[disp16] (4) + mov cx,cs (2) + push (1) + es: mov dx,[disp16] (5).
    check_frame(&e, Some(0), 15, V86_CS, V86_SP - 2, STACK0);
}

#[test]
fn iret_to_vm86_with_eip_beyond_64k_faults_atomically() {
    fn monitor(a: &mut CodeAssembler) -> Result<(), IcedError> {
        for _ in 0..4 {
            a.push(0)?;
        }
        a.push(i32::from(V86_SS))?;
        a.push(0x100)?;
        a.push(VM_ as i32 | 2)?;
        a.push(i32::from(V86_CS))?;
        a.push(0x1_0000)?;
        a.iretd()
    }
    let iretd_at = CODE + asm(32, CODE, monitor).len() as u64 - 1;
    let mut e = Env::flat(monitor);
    e.run_expect_vector(13);
    assert_eq!(e.stack(0), 0);
    assert_eq!(u64::from(e.stack(1)), iretd_at, "the IRETD faulted");
    assert_eq!(e.cpu.gpr(Gpr::Rsp), STACK - 36 - 16, "frame still there under the #GP frame");
    assert_eq!(e.cpu.cpl(), 0);
    assert_eq!(e.cpu.s.seg[DS_].selector, 0x18, "nothing loaded");
}

#[test]
fn iret_with_vm_at_cpl3_does_not_enter_vm86() {
    // IRET at CPL 3 cannot change VM: a normal same-privilege return in protected mode.
    let user = asm(32, 0x20_0000, |a| {
        a.push((VM_ | 2) as i32)?;
        a.push(0x23)?;
        a.push(0x20_0010)?;
        a.iretd()
    });
    let mut e = Env::flat(|a| {
        a.push(0x2b)?;
        a.push(0x28_0000)?;
        a.push(2)?;
        a.push(0x23)?;
        a.push(0x20_0000)?;
        a.iretd()
    });
    e.ram.write(0x20_0000, &user).unwrap();
    e.ram.write(0x20_0010, &[0x90, 0xf4]).unwrap();
    e.run_expect_vector(13); // HLT at CPL 3
    assert_eq!(e.stack(1), 0x20_0011, "protected-mode return, then HLT at CPL 3");
    assert_eq!(e.stack(3) & VM_, 0, "VM not set");
}

// ---------------------------------------------------------------- addressing and paging

#[test]
fn vm86_addressing_through_paging_is_user_mode() {
    let mut e = paging_env(|a| enter_v86(a, 0));
    e.ram
        .write(
            lin(V86_CS, 0),
            &asm(16, 0, |a| {
                a.mov(ax, word_ptr(0x10))?;
                a.push(ax)?;
                a.mov(bx, word_ptr(0x20).es())?;
                a.hlt()
            }),
        )
        .unwrap();
    let pt = 0x11000u64;
    let pte = |page: u64| pt + 4 * (page >> 12);
    // User PDE; user pages for code, stack and DS (DS's page remapped to 0x90000); ES's page
    // stays supervisor.
    e.ram.write_u32(0x10000, 0x11000 | 0x7).unwrap();
    e.ram.write_u32(pte(lin(V86_CS, 0)), lin(V86_CS, 0) as u32 | 0x7).unwrap();
    e.ram.write_u32(pte(lin(V86_SS, V86_SP - 2)), lin(V86_SS, 0xf000) as u32 | 0x7).unwrap();
    e.ram.write_u32(pte(lin(V86_DS, 0)), 0x9_0000 | 0x7).unwrap();
    w16(&mut e, 0x9_0010, 0x4321);
    w16(&mut e, lin(V86_DS, 0x10), 0xdead);
    e.run_expect_vector(14);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x4321, "DS:0x10 = linear 0x40010, translated by paging");
    assert_eq!(e.cpu.cr(2), lin(V86_ES, 0x20), "CR2 = ES base + offset");
    check_frame(&e, Some(0x5), 4, V86_CS, V86_SP - 2, STACK0); // present, read, user
    assert_eq!(r16(&e, lin(V86_SS, V86_SP - 2)), 0x4321);
}

#[test]
fn vm86_segment_limit_is_64k() {
    let mut e = vm86_bytes(0, &[0x8b, 0x1e, 0xff, 0xff]); // mov bx, [0xffff]: crosses the limit
    e.run_expect_vector(13);
    check_frame(&e, Some(0), 0, V86_CS, V86_SP, STACK0);
    // A stack push that crosses the limit is #SS(0).
    let mut e = vm86_bytes(0, &[0xbc, 0x01, 0x00, 0x50]); // mov sp, 1; push ax
    e.run_expect_vector(12);
    assert_eq!(e.stack(0), 0);
    assert_eq!(e.stack(1), 3, "the PUSH faulted");
    assert_eq!(e.stack(4), 1, "SP unchanged");
}

#[test]
fn far_call_and_return_in_vm86_are_8086_style() {
    let mut e = vm86_env(0, |a| {
        a.call_far(0x2100, 0x10)?;
        a.mov(bx, cs)?;
        a.db(&[0x66, 0xea, 0x00, 0x00, 0x01, 0x00, 0x00, 0x21])?; // jmp far 0x2100:0x10000
        a.hlt()
    });
    e.ram
        .write(
            lin(0x2100, 0x10),
            &asm(16, 0x10, |a| {
                a.mov(ax, cs)?;
                a.retf()
            }),
        )
        .unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x2100);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, u32::from(V86_CS));
    // The far JMP beyond the 64 KiB CS limit is #GP(0) before CS changes.
    check_frame(&e, Some(0), 7, V86_CS, V86_SP, STACK0);
}

// ---------------------------------------------------------------- sensitive instructions

#[test]
fn iopl_sensitive_instructions_fault_below_iopl3() {
    let cases: [(&str, &[u8]); 10] = [
        ("cli", &[0xfa]),
        ("sti", &[0xfb]),
        ("pushf", &[0x9c]),
        ("popf", &[0x9d]),
        ("pushfd", &[0x66, 0x9c]),
        ("popfd", &[0x66, 0x9d]),
        ("int 0x21", &[0xcd, 0x21]),
        ("int 3 (CD 03)", &[0xcd, 0x03]),
        ("iret", &[0xcf]),
        ("iretd", &[0x66, 0xcf]),
    ];
    for iopl in [0u32, 0x1000, 0x2000] {
        for (name, code) in cases {
            let mut e = vm86_bytes(iopl | IF_, code);
            let ic = e.cpu.icount();
            e.run_expect_vector(13);
            check_frame(&e, Some(0), 0, V86_CS, V86_SP, STACK0);
            assert_eq!(e.stack(3), VM_ | RF_ | iopl | IF_ | 2, "{name}: flags unchanged");
            assert_eq!(e.cpu.icount(), ic + ENTRY_INSNS + 1, "{name}: faulted without retiring (HLT stub)");
        }
    }
}

#[test]
fn iopl3_pushf_popf_cli_sti_work_without_touching_vm_rf_iopl() {
    let mut e = vm86_bytes(
        IOPL3 | IF_,
        &[
            0xfa, // cli
            0x9c, 0x58, // pushf; pop ax
            0xfb, // sti
            0x66, 0x9c, 0x66, 0x5b, // pushfd; pop ebx
            0x31, 0xc9, 0x51, 0x9d, // xor cx, cx; push cx; popf
            0x9c, 0x5a, // pushf; pop dx
            0x66, 0x68, 0x00, 0x00, 0x01, 0x00, // push dword 0x10000 (RF, no VM, IOPL 0)
            0x66, 0x9d, // popfd
            0x66, 0x9c, 0x66, 0x5e, // pushfd; pop esi
            0xf4,
        ],
    );
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, IOPL3 | 2, "CLI cleared IF; PUSHF pushes IOPL");
    assert_eq!(e.r(Gpr::Rbx), IOPL3 | IF_ | 2, "STI set IF; PUSHFD pushes VM = RF = 0");
    assert_eq!(e.r(Gpr::Rdx) & 0xffff, IOPL3 | 2, "POPF cleared IF, left IOPL");
    assert_eq!(e.r(Gpr::Rsi), IOPL3 | 2, "POPFD changed neither VM, RF nor IOPL");
    check_frame(&e, Some(0), 26, V86_CS, V86_SP, STACK0);
    assert_eq!(e.stack(3), VM_ | RF_ | IOPL3 | 2);
}

#[test]
fn iret_inside_vm86_at_iopl3_stays_in_vm86() {
    let mut e = vm86_env(IOPL3, |a| {
        a.push(0x0202)?; // IF=1, IOPL 0 (ignored), NT 0
        a.push(0x2100)?;
        a.push(0x10)?;
        a.iret()
    });
    e.ram
        .write(
            lin(0x2100, 0x10),
            &asm(16, 0x10, |a| {
                a.mov(ax, cs)?;
                a.hlt()
            }),
        )
        .unwrap();
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x2100);
    check_frame(&e, Some(0), 0x12, 0x2100, V86_SP, STACK0);
    assert_eq!(e.stack(3), VM_ | RF_ | IOPL3 | IF_ | 2, "IF from the image, IOPL and VM kept");
}

#[test]
fn privileged_and_protected_mode_only_instructions() {
    let gp: [(&str, &[u8]); 7] = [
        ("hlt", &[0xf4]),
        ("mov eax, cr0", &[0x0f, 0x20, 0xc0]),
        ("mov cr3, eax", &[0x0f, 0x22, 0xd8]),
        ("lgdt [0]", &[0x0f, 0x01, 0x16, 0x00, 0x00]),
        ("clts", &[0x0f, 0x06]),
        ("wrmsr", &[0x0f, 0x30]),
        ("mov dr7, eax", &[0x0f, 0x23, 0xf8]),
    ];
    for (name, code) in gp {
        let mut e = vm86_bytes(IOPL3, code);
        e.run_expect_vector(13);
        assert_eq!((e.stack(0), e.stack(1)), (0, 0), "{name}");
    }
    let ud: [(&str, &[u8]); 9] = [
        ("lldt ax", &[0x0f, 0x00, 0xd0]),
        ("ltr ax", &[0x0f, 0x00, 0xd8]),
        ("sldt ax", &[0x0f, 0x00, 0xc0]),
        ("str ax", &[0x0f, 0x00, 0xc8]),
        ("verr ax", &[0x0f, 0x00, 0xe0]),
        ("verw ax", &[0x0f, 0x00, 0xe8]),
        ("lar ax, bx", &[0x0f, 0x02, 0xc3]),
        ("lsl ax, bx", &[0x0f, 0x03, 0xc3]),
        ("arpl ax, bx", &[0x63, 0xd8]),
    ];
    for (name, code) in ud {
        let mut e = vm86_bytes(IOPL3, code);
        e.run_expect_vector(6);
        assert_eq!(e.stack(0), 0, "{name}");
        assert_eq!(e.cpu.gpr(Gpr::Rsp), STACK0 - 36, "{name}: no error code");
    }
    // SMSW and SGDT are not privileged.
    let mut e = vm86_bytes(0, &[0x0f, 0x01, 0xe0, 0x0f, 0x01, 0x06, 0x00, 0x00, 0xf4]);
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x11, "SMSW: PE | ET");
    assert_eq!(r16(&e, lin(V86_DS, 0)), 7 * 8 - 1, "SGDT limit");
    assert_eq!(e.stack(1), 8);
}

// ---------------------------------------------------------------- I/O

#[test]
fn io_uses_the_tss_bitmap_whatever_the_iopl() {
    // No bitmap (I/O map base beyond the TSS limit): even IOPL 3 gets #GP(0).
    let mut e = vm86_bytes(IOPL3, &[0xe6, 0x80, 0xf4]); // out 0x80, al
    e.run_expect_vector(13);
    check_frame(&e, Some(0), 0, V86_CS, V86_SP, STACK0);
    assert!(e.p.io_writes.is_empty());
    // A bitmap allowing port 0x80 only: IOPL 0 may use it, port 0x81 faults.
    let code = [0xb0, 0x42, 0xe6, 0x80, 0xe4, 0x80, 0xe6, 0x81, 0xf4]; // mov al,0x42; out; in; out
    for iopl in [0, IOPL3] {
        let mut e = vm86_bytes(iopl, &code);
        let limit = 0x68 + 0x20;
        e.ram.write_u64(GDT + 0x30, desc(TSS as u32, limit, 0x8b, 0)).unwrap();
        e.cpu.s.tr.limit = limit;
        e.ram.write(TSS + 0x68, &[0xff; 0x21]).unwrap();
        e.ram.write(TSS + 0x68 + 0x10, &[0xfe]).unwrap();
        e.p.io_read_value = 0x17;
        e.run_expect_vector(13);
        check_frame(&e, Some(0), 6, V86_CS, V86_SP, STACK0);
        assert_eq!(e.p.io_writes, vec![(0x80, 1, 0x42)]);
        assert_eq!(e.r(Gpr::Rax) & 0xff, 0x17, "IN from the allowed port");
    }
}

// ---------------------------------------------------------------- interrupts and exceptions

#[test]
fn int_n_at_iopl0_goes_to_the_gp_handler() {
    // What Linux's vm86 support relies on: the monitor sees #GP(0) at the INT instruction.
    let mut e = vm86_bytes(IF_, &[0x90, 0xcd, 0x21]);
    e.run_expect_vector(13);
    check_frame(&e, Some(0), 1, V86_CS, V86_SP, STACK0);
    assert_eq!(e.cpu.rflags() & u64::from(IF_), 0, "interrupt gate cleared IF");
}

#[test]
fn int_n_at_iopl3_through_a_dpl3_gate_pushes_the_vm86_frame() {
    let mut e = vm86_bytes(IOPL3 | IF_, &[0x90, 0xcd, 0x80]);
    e.run_expect_vector(0x80);
    check_frame(&e, None, 3, V86_CS, V86_SP, STACK0);
    assert_eq!(e.stack(2), VM_ | IOPL3 | IF_ | 2);
    assert_eq!(e.cpu.s.seg[CS_].selector, 0x10);
    assert_eq!(e.cpu.rflags() & u64::from(IF_ | VM_ | 0x4100), 0, "IF, VM, TF, NT clear");
    // Through a trap gate IF stays set.
    let mut e = vm86_bytes(IOPL3 | IF_, &[0xcd, 0x80]);
    let g = e.ram.read_u64(IDT + 0x80 * 8).unwrap();
    e.ram.write_u64(IDT + 0x80 * 8, g | (1 << 40)).unwrap();
    e.run_expect_vector(0x80);
    check_frame(&e, None, 2, V86_CS, V86_SP, STACK0);
    assert_ne!(e.cpu.rflags() & u64::from(IF_), 0);
}

#[test]
fn int_n_gate_and_target_checks_from_vm86() {
    // Gate DPL 0 < CPL 3: #GP(vector*8 + 2), the INT does not retire.
    let mut e = vm86_bytes(IOPL3, &[0xcd, 0x21]);
    e.run_expect_vector(13);
    check_frame(&e, Some(0x21 * 8 + 2), 0, V86_CS, V86_SP, STACK0);
    // A DPL-3 gate to ring-3 code, or to conforming code: #GP(code segment selector).
    for (sel, d) in [(0x23u16, None), (0x38, Some(desc(0, 0xfffff, 0x9e, 0xc)))] {
        let mut e = vm86_bytes(IOPL3, &[0xcd, 0x81]);
        if let Some(d) = d {
            e.ram.write_u64(GDT + 0x38, d).unwrap();
            e.cpu.s.gdtr.limit = 0x3f;
        }
        e.ram.write_u64(IDT + 0x81 * 8, gate(sel, 0x3000, 0xee)).unwrap();
        e.run_expect_vector(13);
        check_frame(&e, Some(u32::from(sel & 0xfffc)), 0, V86_CS, V86_SP, STACK0);
    }
}

#[test]
fn int3_and_into_are_not_iopl_sensitive() {
    // IOPL 0, gate DPL 0: INT3 (CC) fails the gate DPL check, not the IOPL one.
    let mut e = vm86_bytes(0, &[0xcc]);
    e.run_expect_vector(13);
    check_frame(&e, Some(3 * 8 + 2), 0, V86_CS, V86_SP, STACK0);
    // With DPL-3 gates they reach their handlers with a trap-style EIP.
    for (code, v, eip) in [(&[0xcc][..], 3u8, 1u32), (&[0xb0, 0x7f, 0x04, 0x01, 0xce][..], 4, 5)] {
        let mut e = vm86_bytes(0, code);
        let g = e.ram.read_u64(IDT + u64::from(v) * 8).unwrap();
        e.ram.write_u64(IDT + u64::from(v) * 8, g | (3 << 45)).unwrap();
        e.run_expect_vector(v);
        check_frame(&e, None, eip, V86_CS, V86_SP, STACK0);
    }
}

#[test]
fn exception_from_vm86_without_error_code() {
    let mut e = vm86_bytes(0, &[0x31, 0xc9, 0xf7, 0xf1]); // xor cx, cx; div cx
    e.run_expect_vector(0);
    check_frame(&e, None, 2, V86_CS, V86_SP, STACK0);
}

#[test]
fn single_step_trap_from_vm86() {
    let mut e = vm86_bytes(0x100, &[0x90, 0x90]); // TF=1: #DB after the first NOP
    e.run_expect_vector(1);
    check_frame(&e, None, 1, V86_CS, V86_SP, STACK0);
    assert_eq!(e.stack(2), VM_ | 0x100 | 2);
    assert_eq!(e.cpu.rflags() & 0x100, 0, "TF cleared for the handler");
}

#[test]
fn external_interrupt_in_vm86() {
    let mut e = vm86_bytes(IF_, &[0xeb, 0xfe]); // jmp $
    e.p.vector = 0x40;
    e.cpu.set_intr(true);
    e.run_expect_vector(0x40);
    check_frame(&e, None, 0, V86_CS, V86_SP, STACK0);
    assert_eq!(e.stack(2), VM_ | IF_ | 2);
}

#[test]
fn handler_iret_resumes_vm86_with_segments_from_the_frame() {
    let handler = CODE + 0x800;
    let mut e = vm86_env(IOPL3, |a| {
        a.mov(ax, 0x1111)?;
        a.int(0x80)?;
        a.mov(bx, word_ptr(0x10))?;
        a.mov(cx, ds)?;
        a.hlt()
    });
    e.ram
        .write(
            handler,
            &asm(32, handler, |a| {
                a.cmp(ax, 0x1111)?; // registers arrive unchanged
                a.jne(handler + 0x40)?;
                a.mov(eax, 0x55)?;
                a.mov(dword_ptr(esp + 24), 0x4100)?; // the frame's DS
                a.iretd()
            }),
        )
        .unwrap();
    e.ram.write(handler + 0x40, &[0x0f, 0x0b]).unwrap(); // ud2
    e.ram.write_u64(IDT + 0x80 * 8, gate(0x10, handler as u32, 0xee)).unwrap();
    w16(&mut e, lin(0x4100, 0x10), 0xbeef);
    w16(&mut e, lin(V86_DS, 0x10), 0x1234);
    e.run_expect_vector(13);
    assert_eq!(e.r(Gpr::Rax), 0x55);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0xbeef, "DS reloaded from the frame 8086-style");
    assert_eq!(e.r(Gpr::Rcx) & 0xffff, 0x4100);
    assert_eq!(e.stack(1), 3 + 2 + 4 + 2);
    assert_eq!(e.stack(4), V86_SP, "stack balanced");
    assert_eq!(e.stack(7), 0x4100);
}

#[test]
fn int_through_a_task_gate_from_vm86_and_back() {
    let mut e = vm86_env(IOPL3, |a| {
        a.mov(ax, 0x1111)?;
        a.int(0x80)?;
        a.mov(bx, word_ptr(0x10))?;
        a.hlt()
    });
    // The VM86 task's TSS is busy (it is the current one); vector 0x80 is a DPL-3 task gate.
    e.ram.write_u64(GDT + 0x30, desc(TSS as u32, 0x67, 0x8b, 0)).unwrap();
    e.ram.write_u64(IDT + 0x80 * 8, gate(0x38, 0, 0xe5)).unwrap();
    e.ram
        .write(
            0x30_0000,
            &asm(32, 0x30_0000, |a| {
                a.mov(ecx, 0x77)?;
                a.iretd()
            }),
        )
        .unwrap();
    crate::tests::add_task(&mut e, 0x30_0000);
    w16(&mut e, lin(V86_DS, 0x10), 0xbeef);
    e.run_expect_vector(13);
    // The VM86 task's state went into its TSS with VM set and 8086 selectors.
    assert_ne!(e.ram.read_u32(TSS + 0x24).unwrap() & VM_, 0);
    assert_eq!(e.ram.read_u32(TSS + 0x4c).unwrap(), u32::from(V86_CS));
    assert_eq!(e.ram.read_u32(TSS + 0x54).unwrap(), u32::from(V86_DS));
    assert_eq!(e.ram.read_u32(0x6000 + 0x2c).unwrap(), 0x77, "the other task ran");
    // IRET with NT=1 switched back into the VM86 task, which went on.
    assert_eq!(e.r(Gpr::Rax) & 0xffff, 0x1111);
    assert_eq!(e.r(Gpr::Rbx) & 0xffff, 0xbeef);
    assert_eq!(e.cpu.s.tr.selector, 0x30);
    check_frame(&e, Some(0), 9, V86_CS, V86_SP, STACK0);
}

// ---------------------------------------------------------------- IA-32e mode

#[test]
fn compatibility_mode_iret_ignores_vm() {
    // 4-level identity map of the first 8 MiB (2 MiB pages), 64-bit code 0x10, data 0x18,
    // 32-bit ring-0 code 0x20.
    let (pml4, pdpt, pd) = (0x9000u64, 0xa000u64, 0xb000u64);
    let mut ram = GuestRam::new(0, 8 << 20).unwrap();
    ram.write_u64(pml4, pdpt | 7).unwrap();
    ram.write_u64(pdpt, pd | 7).unwrap();
    for k in 0..4u64 {
        ram.write_u64(pd + 8 * k, (k << 21) | 0x87).unwrap();
    }
    let gdt = [0, 0, desc(0, 0xfffff, 0x9a, 0xa), desc(0, 0xfffff, 0x92, 0xc), desc(0, 0xfffff, 0x9a, 0xc)];
    for (k, d) in gdt.iter().enumerate() {
        ram.write_u64(GDT + 8 * k as u64, *d).unwrap();
    }
    let compat = CODE + 0x100;
    // 64-bit: IRETQ with VM set in the image (ignored) into 32-bit compatibility-mode code.
    let code64 = asm(64, CODE, |a| {
        a.push(0x18)?;
        a.push(STACK as i32)?;
        a.push((VM_ | 2) as i32)?;
        a.push(0x20)?;
        a.push(compat as i32)?;
        a.iretq()
    });
    // Compatibility mode: IRETD with VM set is an ordinary same-privilege return.
    let code32 = asm(32, compat, |a| {
        a.push((VM_ | 2) as i32)?;
        a.push(0x20)?;
        a.push((compat + 0x40) as i32)?;
        a.iretd()
    });
    ram.write(CODE, &code64).unwrap();
    ram.write(compat, &code32).unwrap();
    ram.write(compat + 0x40, &[0xf4]).unwrap();
    let mut cpu = Cpu::new(CpuConfig { model: CpuModel::X86_64 });
    cpu.enter_flat_long_mode(pml4, CODE);
    cpu.s.gdtr = DescTable { base: GDT, limit: 5 * 8 - 1 };
    cpu.set_gpr(Gpr::Rsp, STACK);
    let mut e = Env { cpu, ram, p: TestPlat::default() };
    assert_eq!(e.run(), RunExit::Halted, "{}", e.cpu.info_registers());
    assert_eq!(e.cpu.pc(), compat + 0x41);
    assert_eq!(e.cpu.rflags() & u64::from(VM_), 0);
    assert_eq!(e.cpu.s.seg[CS_].selector, 0x20);
    assert_eq!(e.cpu.cpl(), 0);
}
