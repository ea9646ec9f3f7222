use super::eval::{eval, GuestMem};
use super::*;

struct FlatMem {
    bytes: Vec<u8>,
}

impl GuestMem for FlatMem {
    fn helper(&mut self, id: u32, a: u64, b: u64) -> u64 {
        a ^ b ^ u64::from(id)
    }
    fn load(&mut self, addr: u64, size: u32, _acc: u8) -> Option<u64> {
        let a = usize::try_from(addr).ok()?;
        let s = self.bytes.get(a..a.checked_add(size as usize)?)?;
        let mut b = [0u8; 8];
        b[..s.len()].copy_from_slice(s);
        Some(u64::from_le_bytes(b))
    }
    fn store(&mut self, addr: u64, size: u32, v: u64, _acc: u8) -> bool {
        let Ok(a) = usize::try_from(addr) else { return false };
        match self.bytes.get_mut(a..a.saturating_add(size as usize)) {
            Some(s) if s.len() == size as usize => {
                s.copy_from_slice(&v.to_le_bytes()[..size as usize]);
                true
            }
            _ => false,
        }
    }
}

#[test]
fn arithmetic_and_state() {
    let mut b = Builder::new();
    let x = b.get(Ty::I32, 0);
    let y = b.get(Ty::I32, 4);
    let s = b.bin(BinOp::Add, x, y);
    b.put(8, s);
    let c = b.cmp(CmpOp::Ult, s, x);
    b.put(12, c);
    let w = b.sext(Ty::I64, s);
    b.put(16, w);
    let blk = b.finish(1, 7).unwrap();
    let mut ctx = vec![0u8; 24];
    ctx[0..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    ctx[4..8].copy_from_slice(&0x20u32.to_le_bytes());
    let out = eval(&blk, &mut ctx, &mut FlatMem { bytes: vec![] }).unwrap();
    assert_eq!(out, eval::Outcome { code: 7, exit: None });
    assert_eq!(u32::from_le_bytes(ctx[8..12].try_into().unwrap()), 0x10);
    assert_eq!(ctx[12], 1);
    assert_eq!(u64::from_le_bytes(ctx[16..24].try_into().unwrap()), 0x10);
}

#[test]
fn failed_load_takes_its_exit_with_the_earlier_state() {
    let mut b = Builder::new();
    let one = b.iconst(Ty::I32, 1);
    let e = b.begin_exit(0, 9);
    b.put(0, one);
    b.end_exit();
    let a = b.iconst(Ty::I64, 100);
    let v = b.load(Ty::I32, a, 0, e);
    b.put(4, v);
    let blk = b.finish(1, 0).unwrap();
    let mut ctx = vec![0u8; 8];
    let out = eval(&blk, &mut ctx, &mut FlatMem { bytes: vec![0; 16] }).unwrap();
    assert_eq!(out, eval::Outcome { code: 9, exit: Some(0) });
    assert_eq!(ctx, [1, 0, 0, 0, 0, 0, 0, 0]);
    let mut mem = FlatMem { bytes: vec![0; 128] };
    mem.bytes[100] = 0x5a;
    let out = eval(&blk, &mut ctx, &mut mem).unwrap();
    assert_eq!(out.exit, None);
    assert_eq!(ctx[4], 0x5a);
}

#[test]
fn validation_rejects_bad_ir() {
    let mut b = Builder::new();
    let x = b.get(Ty::I32, 0);
    let y = b.get(Ty::I64, 0);
    b.bin(BinOp::Add, x, y);
    assert!(matches!(b.finish(1, 0), Err(IrError::TypeMismatch(_))));
    let mut b = Builder::new();
    b.put(0, Val(5));
    assert!(matches!(b.finish(1, 0), Err(IrError::BadValue(_))));
    // An out-of-range context offset is an error at evaluation, not a panic.
    let mut b = Builder::new();
    let x = b.get(Ty::I64, 4);
    b.put(0, x);
    let blk = b.finish(1, 0).unwrap();
    assert!(eval(&blk, &mut [0u8; 8], &mut FlatMem { bytes: vec![] }).is_err());
}

#[test]
fn operation_semantics() {
    use eval::bin;
    assert_eq!(bin(BinOp::Shl, Ty::I32, 1, 33), 2, "counts are modulo the width");
    assert_eq!(bin(BinOp::Ashr, Ty::I8, 0x80, 7), 0xff);
    assert_eq!(bin(BinOp::Rotl, Ty::I16, 0x8001, 1), 0x0003);
    assert_eq!(bin(BinOp::Rotr, Ty::I64, 1, 1), 1 << 63);
    assert_eq!(bin(BinOp::UMulHi, Ty::I32, 0xffff_ffff, 0xffff_ffff), 0xffff_fffe);
    assert_eq!(bin(BinOp::SMulHi, Ty::I32, 0xffff_ffff, 0xffff_ffff), 0);
    assert_eq!(bin(BinOp::SMulHi, Ty::I64, u64::MAX, 2), u64::MAX);
    assert!(eval::cmp(CmpOp::Slt, Ty::I16, 0x8000, 1));
    assert!(!eval::cmp(CmpOp::Ult, Ty::I16, 0x8000, 1));
}
