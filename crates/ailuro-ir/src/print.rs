//! Text form of a block (for logs and failing tests).

use std::fmt;

use crate::{Block, Op, Val};

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, v: Val| -> fmt::Result {
            let i = &self.insts[v.0 as usize];
            match i.ty {
                Some(t) => write!(f, "  v{} = {:?} ", v.0, t)?,
                None => write!(f, "  ")?,
            }
            match i.op {
                Op::Const { v: c, .. } => writeln!(f, "const {c:#x}"),
                Op::Get { off, .. } => writeln!(f, "get [{off}]"),
                Op::Put { off, v } => writeln!(f, "put [{off}] v{}", v.0),
                Op::Bin { op, a, b } => writeln!(f, "{op:?} v{} v{}", a.0, b.0),
                Op::Un { op, a } => writeln!(f, "{op:?} v{}", a.0),
                Op::Cmp { op, a, b } => writeln!(f, "cmp.{op:?} v{} v{}", a.0, b.0),
                Op::Select { c, a, b } => writeln!(f, "select v{} v{} v{}", c.0, a.0, b.0),
                Op::Zext { a, .. } => writeln!(f, "zext v{}", a.0),
                Op::Sext { a, .. } => writeln!(f, "sext v{}", a.0),
                Op::Trunc { a, .. } => writeln!(f, "trunc v{}", a.0),
                Op::Load { addr, acc, exit, .. } => writeln!(f, "load v{} acc={acc:#x} else exit{}", addr.0, exit.0),
                Op::Store { addr, v, acc, exit } => {
                    writeln!(f, "store v{} <- v{} acc={acc:#x} else exit{}", addr.0, v.0, exit.0)
                }
                Op::Guard { c, exit } => writeln!(f, "guard v{} else exit{}", c.0, exit.0),
                Op::Helper { id, a, b } => writeln!(f, "helper{id} v{} v{}", a.0, b.0),
            }
        };
        writeln!(f, "block ({} guest instructions):", self.guest_insns)?;
        for &v in &self.main {
            line(f, v)?;
        }
        writeln!(f, "  return {}", self.end_code)?;
        for (k, e) in self.exits.iter().enumerate() {
            writeln!(f, "exit{k} (instruction {}):", e.insn)?;
            for &v in &e.body {
                line(f, v)?;
            }
            writeln!(f, "  return {}", e.code)?;
        }
        Ok(())
    }
}
