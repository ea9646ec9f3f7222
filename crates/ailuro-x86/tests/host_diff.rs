//! Differential test of the integer instruction set against the host CPU.
//!
//! Random byte strings are decoded as 32-bit code with iced-x86; those that are user-mode,
//! non-control-flow integer instructions are re-encoded for 64-bit mode (same operation, same
//! operand sizes: iced adds the 0x67 prefix where a 32-bit address needs it) and executed natively
//! on the x86-64 host from random register and flag values, and one instruction of the original
//! bytes is executed by the interpreter from the same state. Registers, the architecturally
//! defined flags and a shared data buffer (mapped at the same low address on both sides) must be
//! identical. Undefined flags are masked per mnemonic (Intel SDM).
//!
//! `AILURO_DIFF_ITERS` sets the number of instructions tried (default 30000).

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod host;

use ailuro_x86::{Cpu, CpuConfig, Gpr, GuestRam, RunExit};
use host::{host_is_amd, HostCode, NoDevices};
use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Encoder, Instruction, Mnemonic, OpKind, Register};

/// Address of the data buffer on both sides.
const BUF: u64 = 0x0030_0000;
const BUF_LEN: u64 = 0x2000;
/// Where the interpreter fetches the instruction from.
const CODE: u64 = 0x0010_0000;

/// Register file exchanged with the host stub: eax, ecx, edx, ebx, (esp unused), ebp, esi, edi,
/// then rflags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Regs {
    r: [u64; 8],
    flags: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Register values that exercise edge cases often.
    fn value(&mut self) -> u64 {
        let v = self.next();
        match v % 8 {
            0 => 0,
            1 => 0xffff_ffff,
            2 => 0x8000_0000,
            3 => v >> 60,
            4 => 0x7fff_ffff,
            5 => (v >> 8) & 0xff,
            _ => v & 0xffff_ffff,
        }
    }
}

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const DF: u64 = 1 << 10;
const OF: u64 = 1 << 11;
const CHECKED: u64 = CF | PF | AF | ZF | SF | DF | OF;

/// Flags an instruction leaves undefined (Intel SDM), given the masked shift/rotate count.
fn undefined_flags(i: &Instruction, count: u64) -> u64 {
    use Mnemonic as M;
    match i.mnemonic() {
        M::Mul | M::Imul => SF | ZF | AF | PF,
        M::Div | M::Idiv => CF | OF | SF | ZF | AF | PF,
        M::And | M::Or | M::Xor | M::Test => AF,
        // SHLD/SHRD: the interpreter reproduces the Intel host's OF for every count (the 1-bit
        // formula) and its result/CF for 16-bit counts above 16, so on Intel only AF stays
        // unchecked. AMD computes OF differently for counts above 1 (undefined in the SDM).
        M::Shld | M::Shrd => {
            if count == 0 {
                0
            } else if count > 1 && host_is_amd() {
                AF | OF
            } else {
                AF
            }
        }
        M::Shl | M::Sal | M::Shr | M::Sar => {
            if count == 0 {
                0
            } else if count == 1 {
                AF
            } else {
                AF | OF
            }
        }
        M::Rol | M::Ror | M::Rcl | M::Rcr => {
            if count == 1 {
                0
            } else {
                OF
            }
        }
        M::Bsf | M::Bsr => CF | OF | SF | AF | PF,
        M::Bt | M::Bts | M::Btr | M::Btc => OF | SF | AF | PF,
        M::Aaa | M::Aas => OF | SF | ZF | PF,
        M::Aam | M::Aad => OF | AF | CF,
        M::Daa | M::Das => OF,
        _ => 0,
    }
}

fn allowed(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Add
            | M::Adc
            | M::Sub
            | M::Sbb
            | M::And
            | M::Or
            | M::Xor
            | M::Cmp
            | M::Test
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Mul
            | M::Imul
            | M::Div
            | M::Idiv
            | M::Shl
            | M::Sal
            | M::Shr
            | M::Sar
            | M::Rol
            | M::Ror
            | M::Rcl
            | M::Rcr
            | M::Shld
            | M::Shrd
            | M::Bt
            | M::Bts
            | M::Btr
            | M::Btc
            | M::Bsf
            | M::Bsr
            | M::Bswap
            | M::Mov
            | M::Movzx
            | M::Movsx
            | M::Lea
            | M::Xchg
            | M::Xadd
            | M::Cmpxchg
            | M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
            | M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
            | M::Cbw
            | M::Cwde
            | M::Cwd
            | M::Cdq
            | M::Clc
            | M::Stc
            | M::Cmc
            | M::Cld
            | M::Std
            | M::Lahf
            | M::Sahf
            | M::Xlatb
            | M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsd
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Nop
    )
}

/// Build the host stub: load the registers from `*rdi`, run `insn`, store them back.
fn host_stub(insn: &[u8]) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let regs32 = [eax, ecx, edx, ebx, esp, ebp, esi, edi];
    a.push(rbx).unwrap();
    a.push(rbp).unwrap();
    a.push(r15).unwrap();
    a.mov(r15, rdi).unwrap();
    a.push(qword_ptr(r15 + 64)).unwrap();
    a.popfq().unwrap();
    for (n, r) in regs32.iter().enumerate() {
        if n != 4 {
            a.mov(*r, dword_ptr(r15 + 8 * n as i32)).unwrap();
        }
    }
    a.db(insn).unwrap();
    a.pushfq().unwrap();
    a.pop(qword_ptr(r15 + 64)).unwrap();
    a.cld().unwrap();
    for (n, r) in regs32.iter().enumerate() {
        if n != 4 {
            a.mov(dword_ptr(r15 + 8 * n as i32), *r).unwrap();
        }
    }
    a.pop(r15).unwrap();
    a.pop(rbp).unwrap();
    a.pop(rbx).unwrap();
    a.ret().unwrap();
    a.assemble(0).unwrap()
}

fn gpr(n: usize) -> Gpr {
    [Gpr::Rax, Gpr::Rcx, Gpr::Rdx, Gpr::Rbx, Gpr::Rsp, Gpr::Rbp, Gpr::Rsi, Gpr::Rdi][n]
}

fn reg_value(regs: &Regs, r: Register) -> Option<u64> {
    let full = r.full_register32();
    let n = match full {
        Register::EAX => 0,
        Register::ECX => 1,
        Register::EDX => 2,
        Register::EBX => 3,
        Register::ESP => 4,
        Register::EBP => 5,
        Register::ESI => 6,
        Register::EDI => 7,
        _ => return None,
    };
    let v = regs.r[n];
    Some(match r.size() {
        1 if r >= Register::AH && r <= Register::BH => (v >> 8) & 0xff,
        1 => v & 0xff,
        2 => v & 0xffff,
        _ => v & 0xffff_ffff,
    })
}

#[test]
fn integer_instructions_match_the_host_cpu() {
    let iters: u64 = std::env::var("AILURO_DIFF_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    let verbose = std::env::var_os("AILURO_DIFF_VERBOSE").is_some();
    let buf = host::map_buffer(BUF, BUF_LEN);
    let host = HostCode::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ram = GuestRam::new(0, 4 << 20).unwrap();
    let mut tested = 0u64;
    let mut per_mnemonic = std::collections::BTreeMap::<String, u64>::new();
    let mut failures = Vec::new();
    let mut failed_by = std::collections::BTreeMap::<String, u64>::new();
    let mut tries = 0u64;
    while tested < iters && tries < iters * 200 {
        tries += 1;
        let mut bytes = [0u8; 15];
        for b in bytes.iter_mut() {
            *b = rng.next() as u8;
        }
        // Bias towards common one-byte opcodes and 0x0f two-byte ones.
        match rng.next() % 6 {
            0 | 1 => bytes[0] = 0x0f,
            2 => {
                const HOT: [u8; 12] = [0xf6, 0xf7, 0xd0, 0xd1, 0xd2, 0xd3, 0xc0, 0xc1, 0x69, 0x6b, 0xf6, 0xf7];
                bytes[0] = HOT[(rng.next() % 12) as usize];
            }
            3 => {
                // Operand-size prefix: the 16-bit forms.
                bytes[0] = 0x66;
                if rng.next().is_multiple_of(2) {
                    bytes[1] = 0x0f;
                }
            }
            _ => {}
        }
        let mut dec = Decoder::with_ip(32, &bytes, CODE, DecoderOptions::NONE);
        let insn = dec.decode();
        if insn.is_invalid() || !allowed(insn.mnemonic()) || insn.has_lock_prefix() {
            continue;
        }
        if insn.segment_prefix() != Register::None && insn.segment_prefix() != Register::DS {
            continue;
        }
        // No ESP/SP and no memory operands based on it.
        let uses_esp = (0..insn.op_count())
            .any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).full_register32() == Register::ESP)
            || insn.memory_base().full_register32() == Register::ESP
            || insn.memory_index().full_register32() == Register::ESP;
        let uses_sreg = (0..insn.op_count())
            .any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_segment_register());
        if uses_esp || uses_sreg || insn.memory_base() == Register::EIP {
            continue;
        }
        let is_string = insn.has_rep_prefix() || insn.has_repne_prefix() || insn.mnemonic() == Mnemonic::Xlatb;
        let _ = is_string;

        // Random state; pointer registers aim into the buffer so memory operands hit it.
        let mut regs = Regs::default();
        for n in 0..8 {
            regs.r[n] = rng.value();
        }
        let flags =
            (rng.next() & (CF | PF | AF | ZF | SF | OF)) | if rng.next().is_multiple_of(4) { DF } else { 0 } | 2;
        regs.flags = flags;
        // Pointers into the buffer, some of them just below its page boundary so that
        // accesses cross it.
        let ptr = |rng: &mut Rng| {
            if rng.next().is_multiple_of(3) {
                BUF + 0x1000 - (rng.next() % 8)
            } else {
                BUF + 0x800 + (rng.next() % 0x400)
            }
        };
        let mem_reg = [3usize, 5, 6, 7][(rng.next() % 4) as usize];
        regs.r[mem_reg] = ptr(&mut rng);
        if matches!(
            insn.mnemonic(),
            Mnemonic::Movsb
                | Mnemonic::Movsw
                | Mnemonic::Movsd
                | Mnemonic::Stosb
                | Mnemonic::Stosw
                | Mnemonic::Stosd
                | Mnemonic::Lodsb
                | Mnemonic::Lodsw
                | Mnemonic::Lodsd
                | Mnemonic::Cmpsb
                | Mnemonic::Cmpsw
                | Mnemonic::Cmpsd
                | Mnemonic::Scasb
                | Mnemonic::Scasw
                | Mnemonic::Scasd
        ) {
            if insn.mnemonic() == Mnemonic::Cmpsd && insn.op_count() > 2 {
                continue;
            }
            regs.r[6] = ptr(&mut rng);
            regs.r[7] = ptr(&mut rng);
            regs.r[1] = rng.next() % 24;
            let addr16 = (0..insn.op_count())
                .any(|n| matches!(insn.op_kind(n), OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI));
            if addr16 {
                continue;
            }
        }
        if insn.mnemonic() == Mnemonic::Xlatb {
            regs.r[3] = BUF + 0x800;
        }
        // Memory operands must fall inside the buffer.
        let mut mem_ok = true;
        for n in 0..insn.op_count() {
            if insn.op_kind(n) == OpKind::Memory {
                match insn.virtual_address(n, 0, |r, _, _| reg_value(&regs, r).or(Some(0))) {
                    Some(a) if a >= BUF && a + 16 <= BUF + BUF_LEN => {}
                    _ => mem_ok = false,
                }
            }
        }
        // BT* with a register bit offset reach (offset >> 3) bytes beyond the operand.
        if matches!(insn.mnemonic(), Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc)
            && insn.op_kind(0) == OpKind::Memory
            && insn.op_kind(1) == OpKind::Register
        {
            let off = reg_value(&regs, insn.op_register(1)).unwrap_or(0);
            let off = if insn.op_register(1).size() == 2 { off as i16 as i64 } else { off as i32 as i64 };
            let a = insn.virtual_address(0, 0, |r, _, _| reg_value(&regs, r).or(Some(0))).unwrap_or(0) as i64;
            let lo = a + (off >> 3) - 8;
            if lo < BUF as i64 || lo + 16 > (BUF + BUF_LEN) as i64 {
                mem_ok = false;
            }
        }
        if !mem_ok {
            continue;
        }
        // Division: only cases that do not fault (the host would die of SIGFPE).
        if matches!(insn.mnemonic(), Mnemonic::Div | Mnemonic::Idiv) {
            // Let the interpreter decide; skip when it faults.
        }
        // Re-encode for 64-bit mode.
        let mut enc = Encoder::new(64);
        if enc.encode(&insn, 0).is_err() {
            continue;
        }
        let insn64 = enc.take_buffer();
        let check = Decoder::with_ip(64, &insn64, 0, DecoderOptions::NONE).decode();
        if check.mnemonic() != insn.mnemonic() || check.op_count() != insn.op_count() {
            continue;
        }

        // Shared buffer contents.
        for b in buf.iter_mut() {
            *b = rng.next() as u8;
        }
        ram.write(BUF, buf).unwrap();

        // The interpreter.
        let len = insn.len();
        ram.write(CODE, &bytes[..len]).unwrap();
        // A HLT after the instruction: a REP instruction batched past its last iteration stops
        // there instead of running into leftover bytes.
        ram.write(CODE + len as u64, &[0xf4]).unwrap();
        let mut cpu = Cpu::new(CpuConfig::default());
        cpu.enter_flat_protected_mode(CODE as u32);
        for n in 0..8 {
            if n != 4 {
                cpu.set_gpr(gpr(n), regs.r[n]);
            }
        }
        cpu.set_gpr(Gpr::Rsp, 0x8000);
        cpu.set_rflags(regs.flags);
        cpu.invalidate_code(0, ram.size());
        // REP string instructions retire once per iteration with EIP on the instruction.
        let mut exit = RunExit::Limit;
        while cpu.rip() == CODE && cpu.icount() < 100 && matches!(exit, RunExit::Limit) {
            exit =
                cpu.run(&mut ram, &mut NoDevices, cpu.icount() + if cpu.icount().is_multiple_of(2) { 1 } else { 50 });
        }
        let done = match exit {
            RunExit::Limit => cpu.rip() == CODE + len as u64,
            RunExit::Halted => cpu.rip() == CODE + len as u64 + 1,
            _ => false,
        };
        if !done {
            // A fault (e.g. #DE): not compared here.
            continue;
        }

        // The host.
        let mut hregs = regs;
        if verbose {
            eprintln!("{insn} {:02x?} -> {:02x?} regs {:x?}", &bytes[..len], insn64, regs.r);
        }
        // SAFETY: the stub follows the SysV ABI (saves rbx, rbp, r15, leaves DF clear) and only
        // touches the register block and the shared buffer.
        unsafe { host.run(&host_stub(&insn64), &mut hregs) };

        let count = match insn.mnemonic() {
            Mnemonic::Shld | Mnemonic::Shrd if insn.op_count() == 3 => {
                (if insn.op_kind(2) == OpKind::Register { regs.r[1] } else { insn.immediate8() as u64 }) & 31
            }
            _ if insn.op_count() == 2 && insn.op_kind(1) == OpKind::Register && insn.op_register(1) == Register::CL => {
                regs.r[1] & 31
            }
            _ if insn.op_count() == 2 && insn.op_kind(1) == OpKind::Immediate8 => insn.immediate8() as u64 & 31,
            _ => 1,
        };
        let mask = CHECKED & !undefined_flags(&insn, count);
        // SHLD/SHRD r/m16 with a count above 16: the result is undefined (SDM); the interpreter
        // follows Intel, which only an Intel host can confirm.
        if matches!(insn.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd)
            && insn.op_kind(0) != OpKind::Memory
            && insn.op_register(0).size() == 2
            && count > 16
            && host_is_amd()
        {
            continue;
        }
        if matches!(insn.mnemonic(), Mnemonic::Shld | Mnemonic::Shrd)
            && insn.op_kind(0) == OpKind::Memory
            && insn.memory_size().size() == 2
            && count > 16
            && host_is_amd()
        {
            continue;
        }
        let mut emu = Regs::default();
        for n in 0..8 {
            emu.r[n] = cpu.gpr(gpr(n)) & 0xffff_ffff;
            hregs.r[n] &= 0xffff_ffff;
        }
        emu.r[4] = 0;
        hregs.r[4] = 0;
        let mut emu_buf = vec![0u8; BUF_LEN as usize];
        ram.read(BUF, &mut emu_buf).unwrap();
        let regs_ok = emu.r == hregs.r;
        let flags_ok = (cpu.rflags() & mask) == (hregs.flags & mask);
        let mem_ok = emu_buf[..] == buf[..];
        *per_mnemonic.entry(format!("{:?}", insn.mnemonic())).or_default() += 1;
        tested += 1;
        if !(regs_ok && flags_ok && mem_ok) {
            *failed_by.entry(format!("{:?}", insn.mnemonic())).or_default() += 1;
        }
        if !(regs_ok && flags_ok && mem_ok) && failures.len() < 40 {
            failures.push(format!(
                "{insn} ({:02x?}) from {:x?} flags {:#x}: emu {:x?} fl {:#x}, host {:x?} fl {:#x}{}",
                &bytes[..len],
                regs.r,
                regs.flags,
                emu.r,
                cpu.rflags() & mask,
                hregs.r,
                hregs.flags & mask,
                if mem_ok { "" } else { " (memory differs)" }
            ));
        }
    }
    eprintln!("tested {tested} instructions ({} tries): {per_mnemonic:?}", tries);
    assert!(tested >= iters / 2, "too few instructions tested: {tested}");
    assert!(
        failures.is_empty(),
        "mismatches by mnemonic {failed_by:?}; first {}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
