//! The example plugin of `docs/PLUGINS.md` ("Writing a plugin"), compiled and run so the guide
//! stays correct. Keep the two in step.

// ---- docs/PLUGINS.md example begins ----
use std::any::Any;
use std::collections::BTreeMap;

use ailuro_plugin::{hook, ArgInfo, Args, Cx, InterruptEvent, LoadCx, Plugin, PluginInfo};

/// Counts software interrupts (`int n`) per vector and eax: on i386 Linux, `int 0x80` with the
/// system-call number in eax.
pub struct SoftInts {
    only: Option<u32>,
    counts: BTreeMap<(u32, u64), u64>,
}

impl Plugin for SoftInts {
    fn name(&self) -> &'static str {
        "softints"
    }

    fn hooks(&self) -> u32 {
        hook::INTERRUPT
    }

    fn interrupt(&mut self, cx: &mut Cx, ev: &InterruptEvent) {
        if !ev.software || self.only.is_some_and(|v| v != ev.vector) {
            return;
        }
        let eax = cx.cpu().map_or(0, |c| c.reg(0)); // x86 numbering: eax is register 0
        *self.counts.entry((ev.vector, eax)).or_default() += 1;
        // One plog record per interrupt (nothing happens without -pandalog).
        cx.log("softints", "int", |r| r.field("vector", ev.vector).field("eax", eax));
    }

    fn finish(&mut self, _cx: &mut Cx) -> Result<Option<String>, String> {
        let total: u64 = self.counts.values().sum();
        let mut s = format!("softints: {total} software interrupts");
        for ((v, eax), n) in &self.counts {
            s += &format!("\n  int {v:#x} eax={eax}: {n}");
        }
        Ok(Some(s))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn make(args: &Args, _lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let only = args.u64("vector")?.map(|v| v as u32);
    Ok(Box::new(SoftInts { only, counts: BTreeMap::new() }))
}

/// The registry entry: add it to the list `ailuro_plugins::registry()` returns.
pub const SOFTINTS: PluginInfo = PluginInfo {
    name: "softints",
    about: "count software interrupts per vector and eax",
    args: &[ArgInfo { key: "vector", help: "count only this vector (default: all)" }],
    deps: &[],
    make,
};
// ---- docs/PLUGINS.md example ends ----

use ailuro_bus::{CpuObserver, CpuView, GuestRam, ProgramPoint};
use ailuro_plugin::{parse_plugin_list, PluginSet};

struct Cpu {
    eax: u64,
}

impl CpuView for Cpu {
    fn pc(&self) -> u64 {
        0x1000
    }
    fn icount(&self) -> u64 {
        0
    }
    fn asid(&self) -> u64 {
        0
    }
    fn in_kernel(&self) -> bool {
        false
    }
    fn reg(&self, n: usize) -> u64 {
        if n == 0 {
            self.eax
        } else {
            0
        }
    }
    fn reg_names(&self) -> &'static [&'static str] {
        &["eax"]
    }
    fn virt_to_phys(&self, _: &GuestRam, v: u64) -> Option<u64> {
        Some(v)
    }
}

#[test]
fn guide_example_works() {
    let mut registry = ailuro_plugins::registry();
    registry.push(SOFTINTS);
    let specs = parse_plugin_list("softints:vector=0x80;count").unwrap();
    let mut set = PluginSet::load(&registry, &specs, &LoadCx::default()).unwrap();
    assert_eq!(set.names(), ["softints", "count"]);
    let ram = GuestRam::new(0, 1 << 20).unwrap();
    let int = |vector| InterruptEvent { vector, error_code: None, external: false, software: true };
    for (eax, vector) in [(4, 0x80), (4, 0x80), (1, 0x80), (9, 0x21)] {
        set.interrupt(&Cpu { eax }, &ram, &int(vector));
    }
    let out = set.finish(ProgramPoint::default(), &Cpu { eax: 0 }, &ram).unwrap();
    assert_eq!(out[0], "softints: 3 software interrupts\n  int 0x80 eax=1: 1\n  int 0x80 eax=4: 2");
    let e =
        PluginSet::load(&registry, &parse_plugin_list("softints:vec=1").unwrap(), &LoadCx::default()).err().unwrap();
    assert!(e.contains("accepts: vector"), "{e}");
}
