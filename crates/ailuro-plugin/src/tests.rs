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

/// Logs every instruction, like `trace`.
struct TraceLike;

impl Plugin for TraceLike {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn hooks(&self) -> u32 {
        hook::BEFORE_INSN
    }
    fn before_insn(&mut self, cx: &mut Cx) {
        cx.log("trace", "insn", |r| r.field("text", "mov eax, ebx"));
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Logs port writes, which the machine delivers after each CPU slice with their own program
/// points, like `console`.
struct ConsoleLike;

impl Plugin for ConsoleLike {
    fn name(&self) -> &'static str {
        "console"
    }
    fn hooks(&self) -> u32 {
        machine_hook::PORT_IO
    }
    fn port_io(&mut self, cx: &mut Cx, _port: u16, _size: u8, value: u32, write: bool) {
        if write {
            cx.log("console", "byte", |r| r.field("byte", value));
        }
    }
    fn finish(&mut self, cx: &mut Cx) -> Result<Option<String>, String> {
        // A line still open at the end is reported with its (early) start.
        let (i, pc) = (cx.icount, cx.pc);
        cx.icount = 5;
        cx.log("console", "line", |r| r.field("text", "unterminated"));
        (cx.icount, cx.pc) = (i, pc);
        Ok(None)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Run `slices` CPU slices of 100 instructions the way the machine does: instruction callbacks
/// during the slice, then the port writes of the slice (at instructions 10 and 60 of it).
fn run_slices(set: &mut PluginSet, ram: &GuestRam, slices: u64) {
    for s in 0..slices {
        let base = s * 100;
        for i in base..base + 100 {
            set.before_insn(&FakeCpu { icount: i }, ram);
            if set.wants_stop() {
                return;
            }
        }
        for i in [base + 10, base + 60] {
            set.port_io(ProgramPoint { icount: i, pc: 0x1000 + i }, 0x3f8, 1, u32::from(b'A'), true);
        }
    }
}

#[test]
fn console_and_trace_records_out_of_icount_order_are_all_logged() {
    for order in [["console", "trace"], ["trace", "console"]] {
        let d = tempfile::TempDir::new().unwrap();
        let p = d.path().join("ct.plog");
        let plugins: Vec<Box<dyn Plugin>> = order
            .iter()
            .map(|n| if *n == "trace" { Box::new(TraceLike) as Box<dyn Plugin> } else { Box::new(ConsoleLike) })
            .collect();
        let mut set = PluginSet::from_plugins(plugins);
        let mut w = PlogWriter::create(&p, &ailuro_plog::PlogHeader::new("test"), false).unwrap();
        // Small chunks, so that late records land in chunks after the ones they belong between.
        w.set_chunk_size(512);
        set.set_plog(w);
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        run_slices(&mut set, &ram, 5);
        assert!(!set.wants_stop(), "{:?}", set.control);
        let out = set.finish(ProgramPoint { icount: 500, pc: 0 }, &FakeCpu { icount: 500 }, &ram).unwrap();
        assert_eq!(out, vec![format!("plugin log {}: 511 records", p.display())]);

        let r = ailuro_plog::PlogReader::open(&p).unwrap();
        assert!(r.is_complete());
        let got: Vec<(u64, String)> = r.map(|x| x.unwrap()).map(|x| (x.icount, x.kind)).collect();
        // In the order written: each slice's instructions, then its bytes; the open line last.
        assert_eq!(got.len(), 511);
        assert_eq!(got[100], (10, "byte".to_owned()));
        assert_eq!(got[101], (60, "byte".to_owned()));
        assert_eq!(got[510], (5, "line".to_owned()));
        // Sorted: by icount, and at equal icounts in the order written.
        let sorted: Vec<(u64, String)> = ailuro_plog::PlogReader::open(&p)
            .unwrap()
            .sorted()
            .map(|x| x.unwrap())
            .map(|x| (x.icount, x.kind))
            .collect();
        let mut want = got.clone();
        want.sort_by_key(|x| x.0);
        assert_eq!(sorted, want);
        assert_eq!(sorted[5..7], [(5, "insn".to_owned()), (5, "line".to_owned())]);
        assert_eq!(sorted[11..13], [(10, "insn".to_owned()), (10, "byte".to_owned())]);
    }
}

#[test]
fn a_failing_plugin_log_stops_the_run_with_an_error() {
    let d = tempfile::TempDir::new().unwrap();
    let p = d.path().join("full.plog");
    let mut set = PluginSet::from_plugins(vec![Box::new(TraceLike), Box::new(ConsoleLike)]);
    let mut w = PlogWriter::create(&p, &ailuro_plog::PlogHeader::new("test"), false).unwrap();
    w.set_chunk_size(256);
    // The disk fills up during the run.
    w.inject_write_failure_after(700);
    set.set_plog(w);
    let ram = GuestRam::new(0, 1 << 20).unwrap();
    run_slices(&mut set, &ram, 50);
    assert!(set.wants_stop());
    let e = set.control.error.clone().unwrap();
    assert!(e.contains("cannot write the plugin log") && e.contains("no space left"), "{e}");
    // The machine turns this Err into a failed run (non-zero exit status).
    let e = set.finish(ProgramPoint::default(), &FakeCpu { icount: 0 }, &ram).unwrap_err();
    assert!(e.contains("cannot write the plugin log") && e.contains("no space left"), "{e}");
    assert!(!p.exists(), "the unfinishable plugin log was left behind");

    // The disk fills up while the log is finished.
    let mut set = PluginSet::from_plugins(vec![Box::new(TraceLike)]);
    let mut w = PlogWriter::create(&p, &ailuro_plog::PlogHeader::new("test"), false).unwrap();
    w.inject_write_failure_after(50);
    set.set_plog(w);
    run_slices(&mut set, &ram, 1);
    assert!(!set.wants_stop());
    let e = set.finish(ProgramPoint::default(), &FakeCpu { icount: 100 }, &ram).unwrap_err();
    assert!(e.contains("cannot finish the plugin log"), "{e}");
    assert!(!p.exists());
}
