use super::*;

const MB: u64 = 1 << 20;

fn u16at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Find the RSDP as Linux/ACPICA does: "RSD PTR " on a 16-byte boundary in 0xe0000..0x100000 with a
/// valid checksum over the first 20 bytes.
fn scan_rsdp(ram: &GuestRam) -> Option<u64> {
    (ACPI_AREA_START..ACPI_AREA_END).step_by(16).find(|&a| {
        let b = &ram.as_slice()[a as usize..a as usize + 20];
        &b[..8] == b"RSD PTR " && sum(b) == 0
    })
}

/// A table at `addr`: check its header and checksum, return its bytes.
fn table<'a>(ram: &'a GuestRam, addr: u32, sig: &[u8; 4]) -> &'a [u8] {
    let a = addr as usize;
    assert!((ACPI_AREA_START..ACPI_AREA_END).contains(&u64::from(addr)), "{sig:?} at {addr:#x}");
    assert_eq!(a % 16, 0, "{sig:?} alignment");
    let m = ram.as_slice();
    assert_eq!(&m[a..a + 4], sig);
    let len = u32at(m, a + 4) as usize;
    assert!(len >= 36 && a + len <= ACPI_AREA_END as usize);
    let t = &m[a..a + len];
    assert_eq!(sum(t), 0, "{sig:?} checksum");
    assert_eq!(&t[10..16], b"AILURO");
    assert_eq!(&t[16..24], b"AILUROPC");
    t
}

/// Parsed result of the whole tree.
struct Tables {
    rsdt_entries: Vec<u32>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt: Vec<u8>,
    facs: Vec<u8>,
    hpet: Option<Vec<u8>>,
}

fn parse(ram: &GuestRam) -> Tables {
    let rsdp = scan_rsdp(ram).expect("RSDP found by scan") as usize;
    let m = ram.as_slice();
    assert_eq!(&m[rsdp + 9..rsdp + 15], b"AILURO");
    assert_eq!(m[rsdp + 15], 0, "ACPI 1.0 RSDP");
    let rsdt = table(ram, u32at(m, rsdp + 16), b"RSDT");
    let rsdt_entries: Vec<u32> = rsdt[36..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let mut fadt = None;
    let mut madt = None;
    let mut hpet = None;
    for &e in &rsdt_entries {
        let sig: [u8; 4] = m[e as usize..e as usize + 4].try_into().unwrap();
        let t = table(ram, e, &sig).to_vec();
        match &sig {
            b"FACP" => fadt = Some(t),
            b"APIC" => madt = Some(t),
            b"HPET" => hpet = Some(t),
            other => panic!("unexpected table {other:?}"),
        }
    }
    let fadt = fadt.expect("FADT");
    let dsdt = table(ram, u32at(&fadt, 40), b"DSDT").to_vec();
    let facs_addr = u32at(&fadt, 36) as usize;
    assert_eq!(facs_addr % 64, 0, "FACS alignment");
    let facs = m[facs_addr..facs_addr + 64].to_vec();
    Tables { rsdt_entries, fadt, madt: madt.expect("MADT"), dsdt, facs, hpet }
}

/// MADT entries as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut o = 44;
    while o < madt.len() {
        let (ty, len) = (madt[o], madt[o + 1] as usize);
        assert!(len >= 2 && o + len <= madt.len(), "MADT entry at {o} overruns");
        out.push((ty, madt[o..o + len].to_vec()));
        o += len;
    }
    out
}

#[test]
fn default_tables_parse_back() {
    let mut ram = GuestRam::new(0, 64 * MB).unwrap();
    // Stale bytes in the area are cleared.
    ram.write(0xf0000, b"RSD PTR garbage").unwrap();
    let rsdp = build_acpi_tables(&mut ram, &AcpiConfig::default()).unwrap();
    assert_eq!(rsdp, ACPI_RSDP_ADDR);
    assert_eq!(scan_rsdp(&ram), Some(rsdp));
    let t = parse(&ram);
    assert_eq!(t.rsdt_entries.len(), 2);
    assert!(t.hpet.is_none());

    // FADT.
    let f = &t.fadt;
    assert_eq!(f.len(), 244);
    assert_eq!(f[8], 3, "FADT revision");
    assert_eq!(u16at(f, 46), 9, "SCI_INT");
    assert_eq!(u32at(f, 48), 0, "SMI_CMD");
    assert_eq!((u32at(f, 56), u32at(f, 60)), (0x600, 0), "PM1a/b_EVT_BLK");
    assert_eq!((u32at(f, 64), u32at(f, 68), u32at(f, 72)), (0x604, 0, 0), "PM1a/b_CNT, PM2_CNT");
    assert_eq!(u32at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!((u32at(f, 80), u32at(f, 84)), (0, 0), "GPE blocks");
    assert_eq!(&f[88..92], &[4, 2, 0, 4], "PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN");
    assert_eq!(f[108], 0x32, "CENTURY");
    assert_eq!(u16at(f, 109), 0x7, "IAPC_BOOT_ARCH: legacy, 8042, no VGA");
    let flags = u32at(f, 112);
    assert_eq!(flags, 1 | 4 | 32 | 1024);
    assert_eq!(flags & (1 << 8), 0, "24-bit PM timer");
    assert_eq!(&f[116..120], &[1, 8, 0, 1], "RESET_REG: I/O, 8 bits, byte access");
    assert_eq!(u64at(f, 120), 0xcf9);
    assert_eq!(f[128], 6, "RESET_VALUE");
    assert_eq!(u64at(f, 132) | u64at(f, 140), 0, "X_FIRMWARE_CTRL, X_DSDT unused");
    assert!(f[148..244].iter().all(|&b| b == 0), "X_ blocks unused");

    // FACS.
    assert_eq!(&t.facs[0..4], b"FACS");
    assert_eq!(u32at(&t.facs, 4), 64);
    assert_eq!(u32at(&t.facs, 16), 0, "global lock free");

    // DSDT: exactly Name(\_S5, Package(4){0,0,0,0}).
    assert_eq!(t.dsdt[8], 1, "DSDT revision 1");
    assert_eq!(&t.dsdt[36..], &[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]);

    // MADT.
    let m = &t.madt;
    assert_eq!(u32at(m, 36), 0xfee0_0000);
    assert_eq!(u32at(m, 40), 1, "PCAT_COMPAT");
    let e = madt_entries(m);
    assert_eq!(
        e,
        vec![
            (0, vec![0, 8, 0, 0, 1, 0, 0, 0]),
            (1, vec![1, 12, 0, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0]),
            (2, vec![2, 10, 0, 0, 2, 0, 0, 0, 0, 0]),
            (2, vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0]),
            (4, vec![4, 6, 0xff, 0, 0, 1]),
        ]
    );

    // The tables do not overlap each other or the RSDP.
    let mut ranges: Vec<(u64, u64)> = t.rsdt_entries.iter().map(|&a| (u64::from(a), 0)).collect();
    let lens = |a: u64| u64::from(ram.read_u32(a + 4).unwrap());
    for r in &mut ranges {
        r.1 = r.0 + lens(r.0);
    }
    let dsdt = u64::from(u32at(f, 40));
    let facs = u64::from(u32at(f, 36));
    let rsdt = u64::from(ram.read_u32(rsdp + 16).unwrap());
    ranges.extend([(dsdt, dsdt + lens(dsdt)), (facs, facs + 64), (rsdt, rsdt + lens(rsdt)), (rsdp, rsdp + 20)]);
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {w:x?}");
    }
}

#[test]
fn custom_config_and_hpet() {
    let cfg = AcpiConfig {
        pm_base: 0xb000,
        ioapic_addr: 0xfec1_0000,
        ioapic_id: 1,
        lapic_addr: 0xfee1_0000,
        hpet: Some(0xfed0_0000),
        reset_reg: None,
    };
    let mut ram = GuestRam::new(0, 2 * MB).unwrap();
    build_acpi_tables(&mut ram, &cfg).unwrap();
    let t = parse(&ram);
    assert_eq!(t.rsdt_entries.len(), 3);
    let f = &t.fadt;
    assert_eq!((u32at(f, 56), u32at(f, 64), u32at(f, 76)), (0xb000, 0xb004, 0xb008));
    assert_eq!(u32at(f, 112) & (1 << 10), 0, "no RESET_REG_SUP");
    assert!(f[116..129].iter().all(|&b| b == 0));
    assert_eq!(u32at(&t.madt, 36), 0xfee1_0000);
    let e = madt_entries(&t.madt);
    assert_eq!(e[1].1[2], 1, "IOAPIC id");
    assert_eq!(u32at(&e[1].1, 4), 0xfec1_0000);
    let h = t.hpet.unwrap();
    assert_eq!(h.len(), 56);
    assert_eq!(u32at(&h, 36), ACPI_HPET_BLOCK_ID);
    assert_eq!(h[40], 0, "system memory");
    assert_eq!(u64at(&h, 44), 0xfed0_0000);
}

#[test]
fn errors() {
    let mut small = GuestRam::new(0, 0xe0000).unwrap();
    assert!(matches!(build_acpi_tables(&mut small, &AcpiConfig::default()), Err(AcpiError::NoRam { .. })));
    let mut high = GuestRam::new(0x4000_0000, MB).unwrap();
    assert!(matches!(build_acpi_tables(&mut high, &AcpiConfig::default()), Err(AcpiError::NoRam { .. })));
    let mut ram = GuestRam::new(0, MB).unwrap();
    for cfg in [
        AcpiConfig { pm_base: 0, ..AcpiConfig::default() },
        AcpiConfig { pm_base: 0xfffc, ..AcpiConfig::default() },
        AcpiConfig { lapic_addr: 0, ..AcpiConfig::default() },
        AcpiConfig { hpet: Some(0), ..AcpiConfig::default() },
    ] {
        assert!(matches!(build_acpi_tables(&mut ram, &cfg), Err(AcpiError::BadConfig(_))), "{cfg:?}");
    }
}

#[test]
fn coexists_with_linux_loader() {
    // The loader's e820 map reserves exactly the ACPI area, and the RSDP pointer can be handed over.
    let map = crate::linux::linux_e820_map(64 * MB);
    assert!(map.contains(&(ACPI_AREA_START, ACPI_AREA_END - ACPI_AREA_START, crate::linux::E820_RESERVED)));
}
