use super::*;

struct FakeCpu {
    icount: u64,
}

impl CpuView for FakeCpu {
    fn pc(&self) -> u64 {
        0x1000 + self.icount
    }
    fn icount(&self) -> u64 {
        self.icount
    }
    fn asid(&self) -> u64 {
        0x5000
    }
    fn in_kernel(&self) -> bool {
        true
    }
    fn reg(&self, _: usize) -> u64 {
        0
    }
    fn reg_names(&self) -> &'static [&'static str] {
        &[]
    }
    fn virt_to_phys(&self, _: &GuestRam, vaddr: u64) -> Option<u64> {
        // Identity below 1 MiB, unmapped above.
        (vaddr < 0x10_0000).then_some(vaddr)
    }
}

/// Counts instructions; others read its count.
#[derive(Default)]
struct Counter {
    n: u64,
}

impl Plugin for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn hooks(&self) -> u32 {
        hook::BEFORE_INSN
    }
    fn before_insn(&mut self, _: &mut Cx) {
        self.n += 1;
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Depends on `counter`; wants only interrupts.
struct Watcher {
    seen_counts: Vec<u64>,
    limit: u64,
}

impl Plugin for Watcher {
    fn name(&self) -> &'static str {
        "watcher"
    }
    fn hooks(&self) -> u32 {
        hook::INTERRUPT
    }
    fn interrupt(&mut self, cx: &mut Cx, _: &InterruptEvent) {
        let n = cx.plugin::<Counter>().map(|c| c.n).unwrap();
        self.seen_counts.push(n);
        if n >= self.limit {
            cx.request_stop("limit reached");
        }
    }
    fn finish(&mut self, _: &mut Cx) -> Result<Option<String>, String> {
        Ok(Some(format!("watcher saw {:?}", self.seen_counts)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn registry() -> Vec<PluginInfo> {
    vec![
        PluginInfo {
            name: "counter",
            about: "counts",
            args: &[],
            deps: &[],
            make: |_, _| Ok(Box::new(Counter::default())),
        },
        PluginInfo {
            name: "watcher",
            about: "watches",
            args: &[ArgInfo { key: "limit", help: "stop after N instructions" }],
            deps: &["counter"],
            make: |a, _| Ok(Box::new(Watcher { seen_counts: vec![], limit: a.u64("limit")?.unwrap_or(u64::MAX) })),
        },
    ]
}

#[test]
fn dependencies_load_first_and_dispatch_follows_hooks() {
    let specs = parse_plugin_list("watcher:limit=3").unwrap();
    let mut set = PluginSet::load(&registry(), &specs, &LoadCx::default()).unwrap();
    assert_eq!(set.names(), vec!["counter", "watcher"]);
    assert_eq!(CpuObserver::hooks(&set), hook::BEFORE_INSN | hook::INTERRUPT);
    let ram = GuestRam::new(0, 1 << 20).unwrap();
    let ev = InterruptEvent { vector: 32, error_code: None, external: true, software: false };
    for i in 0..4 {
        let cpu = FakeCpu { icount: i };
        set.before_insn(&cpu, &ram);
        set.interrupt(&cpu, &ram, &ev);
        // Memory callbacks nobody wants are not delivered (and must not panic).
        set.mem_read(&cpu, &ram, &MemAccess { vaddr: 0, paddr: 0, size: 1, value: 0, ram: true });
    }
    assert_eq!(set.get::<Counter>().unwrap().n, 4);
    assert!(set.wants_stop());
    assert_eq!(set.control.stop.as_deref(), Some("limit reached"));
    let out = set.finish(ProgramPoint::default(), &FakeCpu { icount: 4 }, &ram).unwrap();
    assert_eq!(out, vec!["watcher saw [1, 2, 3, 4]".to_string()]);
}

#[test]
fn unknown_plugins_and_arguments_are_errors_listing_what_exists() {
    let e = PluginSet::load(&registry(), &parse_plugin_list("nope").unwrap(), &LoadCx::default()).err().unwrap();
    assert!(e.contains("unknown plugin 'nope'") && e.contains("counter, watcher"), "{e}");
    let e =
        PluginSet::load(&registry(), &parse_plugin_list("watcher:limt=3").unwrap(), &LoadCx::default()).err().unwrap();
    assert!(e.contains("unknown argument limt") && e.contains("accepts: limit"), "{e}");
    let e =
        PluginSet::load(&registry(), &parse_plugin_list("watcher:limit=x").unwrap(), &LoadCx::default()).err().unwrap();
    assert!(e.contains("not an unsigned integer"), "{e}");
    let e =
        PluginSet::load(&registry(), &parse_plugin_list("counter;counter").unwrap(), &LoadCx::default()).err().unwrap();
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn virtual_reads_walk_pages_and_never_fault() {
    let mut ram = GuestRam::new(0, 2 << 20).unwrap();
    ram.write(0xff0, b"hello, world\0").unwrap();
    let cpu = FakeCpu { icount: 0 };
    let mut control = Control::default();
    let cx = Cx {
        icount: 0,
        pc: 0,
        cpu: Some(&cpu),
        ram: Some(&ram),
        plog: None,
        before: &[],
        after: &[],
        control: &mut control,
    };
    assert_eq!(cx.read_virt_cstr(0xff0, 64).unwrap(), b"hello, world");
    assert_eq!(cx.read_virt_u32(0xff0), Some(u32::from_le_bytes(*b"hell")));
    let mut b = [0u8; 8];
    assert!(!cx.read_virt(0xffffc, &mut b), "crosses into an unmapped page");
    assert_eq!(cx.read_virt_cstr(0x20_0000, 8), None);
}
