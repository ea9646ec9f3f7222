//! Board-level tests: devices programmed as Linux or a BIOS would, observed through the CPU's view.

use super::*;

fn board() -> PcBoard {
    PcBoard::new(PcConfig { ram_size: 128 << 20, rtc_base_unix: 1_700_000_000 })
}

/// Program the 8259 pair like Linux (vector base 0x30/0x38), all unmasked.
fn init_pic(b: &mut PcBoard) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0xa0, 0x11), (0xa1, 0x38)] {
        b.io_write(port, 1, v);
    }
    for (port, v) in [(0xa1, 0x02), (0xa1, 0x01), (0x21, 0x00), (0xa1, 0x00)] {
        b.io_write(port, 1, v);
    }
}

#[test]
fn debug_exit_status() {
    let mut b = board();
    b.io_write(0xf4, 1, 0x10);
    b.io_write(0xf4, 4, 0x31);
    assert_eq!(b.take_requests(), vec![BoardRequest::DebugExit(0x21), BoardRequest::DebugExit(0x63)]);
    assert!(b.take_requests().is_empty());
}

#[test]
fn unmapped_reads_all_ones() {
    let mut b = board();
    assert_eq!(b.io_read(0x1234, 1), 0xff);
    assert_eq!(b.io_read(0x1234, 2), 0xffff);
    assert_eq!(b.io_read(0x1234, 4), 0xffff_ffff);
    assert_eq!(b.mmio_read(0xe000_0000, 4), 0xffff_ffff);
    assert_eq!(b.mmio_read(0xe000_0000, 8), u64::MAX);
    assert_eq!(b.io_read(0x80, 1), 0xff);
    b.io_write(0x80, 1, 0x42);
    assert_eq!(b.io_read(0x80, 1), 0xff);
}

#[test]
fn com1_output() {
    let mut b = board();
    for c in b"hello\n" {
        b.io_write(0x3f8, 1, *c as u32);
    }
    assert_eq!(b.take_serial_output(), b"hello\n");
    assert!(b.take_serial_output().is_empty());
}

#[test]
fn pit_mode2_through_pic() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x43, 1, 0x34);
    b.io_write(0x40, 1, 11932 & 0xff);
    b.io_write(0x40, 1, 11932 >> 8);
    assert!(!b.intr_level());
    let t = b.next_deadline_ns().unwrap();
    assert_eq!(t, pit::ticks_to_ns_ceil(11932));
    b.advance_to(t - 1);
    assert!(!b.intr_level());
    b.advance_to(t);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x30);
    assert!(!b.intr_level());
    b.io_write(0x20, 1, 0x20);
    assert!(!b.intr_level());
    let t2 = b.next_deadline_ns().unwrap();
    assert_eq!(t2, pit::ticks_to_ns_ceil(2 * 11932));
    // A jump over several periods still yields one request.
    b.advance_to(t2 * 5);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x30);
}

#[test]
fn com1_interrupt_driven_receive() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x3fa, 1, 0xc7); // FIFO on, clear, trigger 14 (as Linux does)
    b.io_write(0x3fc, 1, 0x0b); // DTR RTS OUT2
    b.io_write(0x3f9, 1, 0x01); // RDI
    assert!(!b.intr_level());
    let input: Vec<u8> = (0..40).collect();
    b.serial_input(&input);
    assert!(b.intr_level(), "FIFO at trigger level");
    assert_eq!(b.interrupt_ack(), 0x34);
    let mut got = vec![];
    while b.io_read(0x3fd, 1) & 1 != 0 {
        got.push(b.io_read(0x3f8, 1) as u8);
    }
    // The rest of the host input moved into the FIFO as it drained, so one handler run gets it all.
    assert!(!b.intr_level());
    b.io_write(0x20, 1, 0x20);
    assert_eq!(got, input);
}

#[test]
fn com1_polled_receive() {
    let mut b = board();
    b.serial_input(b"ab");
    assert_eq!(b.io_read(0x3fd, 1) & 1, 1);
    assert_eq!(b.io_read(0x3f8, 1), b'a' as u32);
    assert_eq!(b.io_read(0x3f8, 1), b'b' as u32);
    assert_eq!(b.io_read(0x3fd, 1) & 1, 0);
}

#[test]
fn save_load_round_trip_and_determinism() {
    let run = || {
        let mut b = board();
        init_pic(&mut b);
        b.io_write(0x43, 1, 0x34);
        b.io_write(0x40, 1, 0x00);
        b.io_write(0x40, 1, 0x10);
        b.serial_input(b"xyz");
        b.advance_to(5_000_000);
        b.interrupt_ack();
        b
    };
    let a = run();
    let b = run();
    assert_eq!(a.save_state(), b.save_state());
    let c = PcBoard::load_state(&a.save_state()).unwrap();
    assert_eq!(c, a);
    assert_eq!(c.save_state(), a.save_state());
}

#[test]
fn load_state_rejects_bad_input() {
    let b = board();
    let s = b.save_state();
    for n in 0..s.len() {
        assert!(PcBoard::load_state(&s[..n]).is_err(), "truncated at {n}");
    }
    let mut wrong = s.clone();
    wrong[0] = 99;
    assert!(matches!(PcBoard::load_state(&wrong), Err(BoardStateError::Version { found: 99, .. })));
    let mut long = s.clone();
    long.push(0);
    assert!(PcBoard::load_state(&long).is_err());
    assert!(PcBoard::load_state(&[]).is_err());
}

const LAPIC: u64 = 0xfee0_0000;
const IOAPIC: u64 = 0xfec0_0000;

fn lapic_write(b: &mut PcBoard, reg: u64, v: u32) {
    b.mmio_write(LAPIC + reg, 4, v as u64);
}

fn lapic_read(b: &mut PcBoard, reg: u64) -> u32 {
    b.mmio_read(LAPIC + reg, 4) as u32
}

fn ioapic_route(b: &mut PcBoard, pin: u32, lo: u32) {
    b.mmio_write(IOAPIC, 4, (0x11 + 2 * pin) as u64);
    b.mmio_write(IOAPIC + 0x10, 4, 0);
    b.mmio_write(IOAPIC, 4, (0x10 + 2 * pin) as u64);
    b.mmio_write(IOAPIC + 0x10, 4, lo as u64);
}

fn cmos(b: &mut PcBoard, idx: u8) -> u8 {
    b.io_write(0x70, 1, idx as u32);
    b.io_read(0x71, 1) as u8
}

#[test]
fn power_on_pit_runs_at_18_2_hz_like_qemu() {
    let b = board();
    assert_eq!(b.next_deadline_ns(), Some(pit::ticks_to_ns_ceil(65536)));
}

#[test]
fn rtc_reads_in_bcd() {
    // 1_700_000_000 is 2023-11-14 22:13:20 UTC.
    let mut b = board();
    assert_eq!(cmos(&mut b, 0x00), 0x20);
    assert_eq!(cmos(&mut b, 0x02), 0x13);
    assert_eq!(cmos(&mut b, 0x04), 0x22);
    assert_eq!(cmos(&mut b, 0x07), 0x14);
    assert_eq!(cmos(&mut b, 0x08), 0x11);
    assert_eq!(cmos(&mut b, 0x09), 0x23);
    assert_eq!(cmos(&mut b, 0x32), 0x20);
    assert_eq!(cmos(&mut b, 0x0b), 0x02);
    b.advance_to(3_000_000_000);
    assert_eq!(cmos(&mut b, 0x00), 0x23);
    // Memory above 16 MiB in 64 KiB units: 112 MiB.
    assert_eq!(cmos(&mut b, 0x34) as u32 | (cmos(&mut b, 0x35) as u32) << 8, 112 * 16);
}

#[test]
fn rtc_periodic_interrupt_through_slave_pic() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x43, 1, 0x30); // stop the PIT (mode 0, no count yet)
    b.io_write(0x70, 1, 0x0a);
    b.io_write(0x71, 1, 0x2f); // 2 Hz
    b.io_write(0x70, 1, 0x0b);
    b.io_write(0x71, 1, 0x42); // PIE
    let t = b.next_deadline_ns().unwrap();
    assert_eq!(t, 500_000_000);
    b.advance_to(t);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x38);
    assert_eq!(cmos(&mut b, 0x0c), 0xc0);
    b.io_write(0xa0, 1, 0x20);
    b.io_write(0x20, 1, 0x20);
    assert!(!b.intr_level());
    assert_eq!(b.next_deadline_ns(), Some(1_000_000_000));
}

#[test]
fn i8042_reset_request() {
    let mut b = board();
    b.io_write(0x64, 1, 0xfe);
    assert_eq!(b.take_requests(), vec![BoardRequest::Reset]);
}

#[test]
fn i8042_keyboard_irq1() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x21, 1, 0x01);
    b.io_write(0x60, 1, 0xff); // keyboard reset
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x31);
    assert_eq!(b.io_read(0x60, 1), 0xfa);
    b.io_write(0x20, 1, 0x20);
    // The BAT result follows with a new edge.
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x31);
    assert_eq!(b.io_read(0x60, 1), 0xaa);
    b.io_write(0x20, 1, 0x20);
    assert!(!b.intr_level());
}

#[test]
fn port_92_fast_reset() {
    let mut b = board();
    assert_eq!(b.io_read(0x92, 1), 0x02);
    b.io_write(0x92, 1, 0x00);
    assert!(b.take_requests().is_empty());
    b.io_write(0x92, 1, 0x03);
    assert_eq!(b.take_requests(), vec![BoardRequest::Reset]);
}

#[test]
fn port_cf9_reset() {
    let mut b = board();
    b.io_write(0xcf9, 1, 0x02);
    assert!(b.take_requests().is_empty());
    b.io_write(0xcf9, 1, 0x06);
    assert_eq!(b.take_requests(), vec![BoardRequest::Reset]);
}

#[test]
fn pci_config_mechanism_1() {
    let mut b = board();
    b.io_write(0xcf8, 4, 0x8000_0000);
    assert_eq!(b.io_read(0xcfc, 4), 0x1237_8086);
    assert_eq!(b.io_read(0xcfe, 2), 0x1237);
    b.io_write(0xcf8, 4, 0x8000_0800);
    assert_eq!(b.io_read(0xcfc, 4), 0x7000_8086);
    b.io_write(0xcf8, 4, 0x8000_1000);
    assert_eq!(b.io_read(0xcfc, 4), 0xffff_ffff);
    assert_eq!(b.io_read(0xcf8, 4), 0x8000_1000);
}

#[test]
fn lapic_registers_via_mmio() {
    let mut b = board();
    assert_eq!(lapic_read(&mut b, 0x20), 0);
    assert_eq!(lapic_read(&mut b, 0x30), 0x0005_0014);
    assert_eq!(b.mmio_read(LAPIC + 0x30, 1), 0x14);
    assert_eq!(b.mmio_read(LAPIC + 0x32, 2), 0x0005);
    lapic_write(&mut b, 0x80, 0x20);
    assert_eq!(lapic_read(&mut b, 0x80), 0x20);
    // Sub-dword stores are ignored.
    b.mmio_write(LAPIC + 0x80, 1, 0x30);
    assert_eq!(lapic_read(&mut b, 0x80), 0x20);
}

#[test]
fn lapic_timer_periodic() {
    let mut b = board();
    b.io_write(0x21, 1, 0xff); // PIC fully masked
    b.io_write(0xa1, 1, 0xff);
    lapic_write(&mut b, 0xf0, 0x1ff);
    lapic_write(&mut b, 0x3e0, 0x3); // divide by 16
    lapic_write(&mut b, 0x320, 0x2_00ef); // periodic, vector 0xef
    lapic_write(&mut b, 0x380, 62_500); // 1 ms
    for k in 1..=3u64 {
        let t = b.next_deadline_ns().unwrap();
        assert_eq!(t, k * 1_000_000);
        b.advance_to(t - 1);
        assert!(!b.intr_level());
        assert!(lapic_read(&mut b, 0x390) > 0);
        b.advance_to(t);
        assert!(b.intr_level());
        assert_eq!(b.interrupt_ack(), 0xef);
        assert!(!b.intr_level());
        lapic_write(&mut b, 0xb0, 0);
    }
    // Current count halfway through a period.
    b.advance_to(3_500_000);
    assert_eq!(lapic_read(&mut b, 0x390), 31_250);
    // Masking the LVT removes the deadline.
    lapic_write(&mut b, 0x320, 0x3_00ef);
    assert_eq!(b.next_deadline_ns(), Some(pit::ticks_to_ns_ceil(65536)));
}

#[test]
fn lapic_self_ipi() {
    let mut b = board();
    lapic_write(&mut b, 0xf0, 0x1ff);
    lapic_write(&mut b, 0x300, 0x0004_0050);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x50);
    lapic_write(&mut b, 0xb0, 0);
    assert!(!b.intr_level());
    // Nothing pending: the APIC's spurious vector.
    lapic_write(&mut b, 0x350, 0x1_0700); // LINT0 masked: the 8259 is cut off
    assert_eq!(b.interrupt_ack(), 0xff);
}

#[test]
fn pit_through_ioapic_pin2() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x21, 1, 0xff);
    b.io_write(0xa1, 1, 0xff);
    lapic_write(&mut b, 0xf0, 0x1ff);
    ioapic_route(&mut b, 2, 0x30);
    b.io_write(0x43, 1, 0x34);
    b.io_write(0x40, 1, 0x9c);
    b.io_write(0x40, 1, 0x2e);
    let t = b.next_deadline_ns().unwrap();
    b.advance_to(t);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x30);
    lapic_write(&mut b, 0xb0, 0);
    assert!(!b.intr_level());
    let t = b.next_deadline_ns().unwrap();
    b.advance_to(t);
    assert_eq!(b.interrupt_ack(), 0x30);
}

#[test]
fn extint_virtual_wire() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x21, 1, 0xef); // only COM1
    b.io_write(0x3fc, 1, 0x08);
    b.io_write(0x3f9, 1, 0x02); // THRI: interrupt right away
                                // APIC software-disabled: the 8259 reaches INTR directly.
    assert!(b.intr_level());
    // Enabled with LINT0 masked: cut off.
    lapic_write(&mut b, 0xf0, 0x1ff);
    assert!(!b.intr_level());
    // LINT0 ExtINT: the virtual wire.
    lapic_write(&mut b, 0x350, 0x700);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x34);
    b.io_write(0x20, 1, 0x20);
    assert!(!b.intr_level());
}

#[test]
fn level_triggered_ioapic_uart_with_eoi_broadcast() {
    let mut b = board();
    b.io_write(0x21, 1, 0xff);
    b.io_write(0xa1, 1, 0xff);
    lapic_write(&mut b, 0xf0, 0x1ff);
    ioapic_route(&mut b, 4, 0x8041); // level, vector 0x41
    b.io_write(0x3fc, 1, 0x08);
    b.io_write(0x3f9, 1, 0x02);
    assert_eq!(b.interrupt_ack(), 0x41);
    assert_ne!(lapic_read(&mut b, 0x180 + 0x20) & 0x2, 0, "TMR bit for 0x41");
    // EOI without servicing the UART: the line is still high, so it is delivered again.
    lapic_write(&mut b, 0xb0, 0);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x41);
    // Service it (IIR read clears THRE), then EOI: quiet.
    assert_eq!(b.io_read(0x3fa, 1) & 0x0f, 0x02);
    lapic_write(&mut b, 0xb0, 0);
    assert!(!b.intr_level());
}

#[test]
fn uart_character_timeout_deadline() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x21, 1, 0xef);
    b.io_write(0x3fb, 1, 0x80);
    b.io_write(0x3f8, 1, 0x01); // 115200 baud
    b.io_write(0x3f9, 1, 0x00);
    b.io_write(0x3fb, 1, 0x03);
    b.io_write(0x3fa, 1, 0xc7); // trigger 14
    b.io_write(0x3fc, 1, 0x0b);
    b.io_write(0x3f9, 1, 0x01);
    b.serial_input(b"hi");
    assert!(!b.intr_level());
    let t = b.next_deadline_ns().unwrap();
    assert_eq!(t, 4 * 86_805);
    b.advance_to(t);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x34);
    assert_eq!(b.io_read(0x3fa, 1), 0xcc);
}

#[test]
fn multibyte_port_access_splits() {
    let mut b = board();
    // A word write to 0x70 sets the index and writes the data port.
    b.io_write(0x70, 2, 0x5a40);
    assert_eq!(cmos(&mut b, 0x40), 0x5a);
    // A word read of the PIC returns IRR in the low byte and IMR in the high byte.
    b.io_write(0x21, 1, 0xa5);
    assert_eq!(b.io_read(0x20, 2) >> 8, 0xa5);
}

/// A deterministic pseudo-random stream for the soak tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Drive a board with a random but reproducible mix of everything the CPU and host can do.
fn soak(b: &mut PcBoard, rng: &mut Lcg, steps: usize) {
    const PORTS: [u16; 24] = [
        0x20, 0x21, 0xa0, 0xa1, 0x40, 0x42, 0x43, 0x61, 0x60, 0x64, 0x70, 0x71, 0x80, 0x3f8, 0x3f9, 0x3fa, 0x3fb,
        0x3fc, 0x3fd, 0x3fe, 0xcf8, 0xcfc, 0x4d0, 0x4d1,
    ];
    for _ in 0..steps {
        let r = rng.next();
        let port = PORTS[(r % PORTS.len() as u64) as usize];
        let val = (rng.next() & 0xff) as u32;
        match rng.next() % 9 {
            0 | 1 => {
                b.io_read(port, 1);
            }
            2 | 3 => {
                // Avoid reset/exit requests dominating; they are just recorded anyway.
                b.io_write(port, 1, val);
            }
            4 => {
                let t = b.now_ns + rng.next() % 2_000_000;
                b.advance_to(t);
            }
            5 => {
                if b.intr_level() {
                    b.interrupt_ack();
                }
            }
            6 => {
                let off = (rng.next() % 0x40) * 0x10;
                let base = if rng.next() & 1 == 0 { LAPIC } else { IOAPIC };
                if rng.next() & 1 == 0 {
                    b.mmio_read(base + off, 4);
                } else {
                    b.mmio_write(base + off, 4, rng.next() as u32 as u64);
                }
            }
            7 => b.serial_input(&[val as u8, (val + 1) as u8]),
            _ => {
                if let Some(t) = b.next_deadline_ns() {
                    b.advance_to(t.min(b.now_ns + 50_000_000));
                }
            }
        }
    }
}

#[test]
fn identical_call_sequences_give_identical_states() {
    let mut a = board();
    let mut b = board();
    soak(&mut a, &mut Lcg(7), 20_000);
    soak(&mut b, &mut Lcg(7), 20_000);
    assert_eq!(a.save_state(), b.save_state());
    assert_eq!(a.take_serial_output(), b.take_serial_output());
    assert_eq!(a.take_requests(), b.take_requests());
}

#[test]
fn save_load_mid_run_continues_identically() {
    let mut a = board();
    let mut rng = Lcg(11);
    soak(&mut a, &mut rng, 5_000);
    let mut b = PcBoard::load_state(&a.save_state()).unwrap();
    let mut rng_b = Lcg(rng.0);
    soak(&mut a, &mut rng, 5_000);
    soak(&mut b, &mut rng_b, 5_000);
    assert_eq!(a.save_state(), b.save_state());
}

#[test]
fn load_state_never_panics_on_garbage() {
    let mut a = board();
    soak(&mut a, &mut Lcg(3), 2_000);
    let s = a.save_state();
    let mut rng = Lcg(5);
    for _ in 0..3_000 {
        let mut m = s.clone();
        for _ in 0..=(rng.next() % 4) {
            let i = (rng.next() % m.len() as u64) as usize;
            m[i] = rng.next() as u8;
        }
        if let Ok(mut b) = PcBoard::load_state(&m) {
            // Whatever decoded must also run.
            soak(&mut b, &mut Lcg(rng.next()), 50);
        }
    }
    for n in 0..200 {
        let g: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let _ = PcBoard::load_state(&g);
    }
}

/// What Linux does at boot on this board: 8259 set up and then masked, IRQ0 routed through IOAPIC
/// pin 2, PIT periodic at HZ=250, local APIC timer calibrated against PIT ticks by reading the
/// current count (divide by 16, masked one-shot from 0xffffffff).
#[test]
fn linux_style_lapic_calibration_against_pit() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x21, 1, 0xff);
    b.io_write(0xa1, 1, 0xff);
    lapic_write(&mut b, 0xe0, 0xffff_ffff);
    lapic_write(&mut b, 0xd0, 0x0100_0000);
    lapic_write(&mut b, 0xf0, 0x1ff);
    lapic_write(&mut b, 0x350, 0x1_0700);
    ioapic_route(&mut b, 2, 0x30);
    let latch = (pit::PIT_FREQ + 125) / 250;
    b.io_write(0x43, 1, 0x34);
    b.io_write(0x40, 1, latch as u32 & 0xff);
    b.io_write(0x40, 1, latch as u32 >> 8);
    lapic_write(&mut b, 0x3e0, 0x3);
    lapic_write(&mut b, 0x320, 0x1_00ec);
    lapic_write(&mut b, 0x380, 0xffff_ffff);
    let mut counts = vec![];
    for _ in 0..26 {
        // The CPU idles until the next deadline, takes the timer interrupt and reads TMCCT.
        let t = b.next_deadline_ns().unwrap();
        b.advance_to(t);
        assert!(b.intr_level());
        assert_eq!(b.interrupt_ack(), 0x30);
        counts.push(lapic_read(&mut b, 0x390));
        lapic_write(&mut b, 0xb0, 0);
    }
    let delta = counts[0] - counts[25];
    // 25 PIT periods of `latch` clocks at 62.5 MHz (1 GHz / 16).
    let expect = (25 * latch * 1_000_000_000 / pit::PIT_FREQ / 16) as u32;
    assert!(delta.abs_diff(expect) <= 2, "{delta} vs {expect}");
}

#[test]
fn spurious_answers_per_wiring() {
    let mut b = board();
    // Reset state: APIC software-disabled, 8259 base 0: spurious IRQ7 is vector 7.
    b.io_write(0x43, 1, 0x30); // stop the PIT so nothing is pending
    assert!(!b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x07);
    init_pic(&mut b);
    assert_eq!(b.interrupt_ack(), 0x37);
    // APIC enabled with spurious vector 0xef and LINT0 masked: the APIC answers.
    lapic_write(&mut b, 0xf0, 0x1ef);
    assert_eq!(b.interrupt_ack(), 0xef);
    // Virtual wire: the 8259 answers again.
    lapic_write(&mut b, 0x350, 0x700);
    assert_eq!(b.interrupt_ack(), 0x37);
}

#[test]
fn pic_ocw3_reads_and_poll_through_ports() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x43, 1, 0x30);
    b.io_write(0x3fc, 1, 0x08);
    b.io_write(0x3f9, 1, 0x02); // COM1 THRE interrupt: IRQ4
    b.io_write(0x20, 1, 0x0a);
    assert_eq!(b.io_read(0x20, 1), 0x10, "IRR");
    b.io_write(0x20, 1, 0x0c); // poll
    assert_eq!(b.io_read(0x20, 1), 0x84);
    b.io_write(0x20, 1, 0x0b);
    assert_eq!(b.io_read(0x20, 1), 0x10, "ISR after the poll acknowledged it");
    b.io_write(0x20, 1, 0x64);
    assert_eq!(b.io_read(0x20, 1), 0x00);
}

#[test]
fn rtc_twelve_hour_binary_through_ports() {
    let mut b = board();
    b.io_write(0x70, 1, 0x0b);
    b.io_write(0x71, 1, 0x04); // binary, 12 hour
    assert_eq!(cmos(&mut b, 0x04), 0x80 | 10);
    assert_eq!(cmos(&mut b, 0x00), 20);
    // UIP shows in the last 244 us before the update.
    b.advance_to(999_800_000);
    assert_eq!(cmos(&mut b, 0x0a) & 0x80, 0x80);
    b.advance_to(1_000_000_000);
    assert_eq!(cmos(&mut b, 0x0a) & 0x80, 0);
    assert_eq!(cmos(&mut b, 0x00), 21);
}

#[test]
fn one_byte_per_interrupt_guest_sees_an_edge_per_byte() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x43, 1, 0x30);
    b.io_write(0x3fc, 1, 0x0b);
    b.io_write(0x3f9, 1, 0x01); // RDI, FIFO off
    b.serial_input(b"abc");
    let mut got = vec![];
    for _ in 0..3 {
        assert!(b.intr_level());
        assert_eq!(b.interrupt_ack(), 0x34);
        got.push(b.io_read(0x3f8, 1) as u8);
        b.io_write(0x20, 1, 0x20);
    }
    assert_eq!(got, b"abc");
    assert!(!b.intr_level());
}

#[test]
fn acpi_pm_block_through_ports() {
    let mut b = board();
    // PM1a_CNT: SCI_EN reads as 1; an S5 sleep request (16-bit write as ACPICA does) powers off.
    assert_eq!(b.io_read(0x604, 2) & 1, 1);
    b.io_write(0x604, 2, 0);
    assert!(b.take_requests().is_empty());
    b.io_write(0x604, 2, 1 << 13);
    assert_eq!(b.take_requests(), vec![BoardRequest::PowerOff]);
    // PM timer: 3.579545 MHz from virtual time, read as one 32-bit access.
    b.advance_to(10_000_000);
    assert_eq!(b.io_read(0x608, 4), 35_795);
}

#[test]
fn acpi_sci_reaches_ioapic_and_pic_as_level_irq9() {
    let mut b = board();
    init_pic(&mut b);
    b.io_write(0x4d1, 1, 0x02); // ELCR: IRQ9 level triggered
    b.io_write(0x21, 1, 0x01); // mask the PIT's IRQ0
    b.io_write(0x602, 2, 1); // TMR_EN
                             // TMR_STS is set when bit 23 of the counter toggles: 2^23 ticks at 3.579545 MHz.
    let d = ((1u64 << 23) * 1_000_000_000).div_ceil(3_579_545);
    let mut t = 0;
    while t < d {
        t = b.next_deadline_ns().expect("a deadline");
        assert!(t <= d, "the PM timer must announce its event");
        assert!(t == d || !b.intr_level());
        b.advance_to(t);
    }
    assert!(b.intr_level(), "SCI raised through the 8259 (cascade IRQ2 -> IRQ9)");
    assert_eq!(b.interrupt_ack(), 0x39);
    b.io_write(0x600, 2, 1); // clear TMR_STS: the level falls
    b.io_write(0xa0, 1, 0x20);
    b.io_write(0x20, 1, 0x20);
    assert!(!b.intr_level());
}

#[test]
fn nmi_ipi_reaches_take_nmi_and_survives_save_load() {
    let mut b = board();
    assert!(!b.take_nmi());
    // Even with the APIC software-disabled (reset state), an NMI IPI to self is delivered.
    b.mmio_write(LAPIC + 0x300, 4, 0x0004_0400);
    let mut c = PcBoard::load_state(&b.save_state()).unwrap();
    assert!(!c.intr_level(), "NMI does not use INTR");
    assert!(c.take_nmi());
    assert!(!c.take_nmi());
    assert!(b.take_nmi());
    // All including self.
    b.mmio_write(LAPIC + 0x300, 4, 0x0008_0400);
    assert!(b.take_nmi());
}

fn testdev_board() -> PcBoard {
    PcBoard::with_devices(
        PcConfig { ram_size: 128 << 20, rtc_base_unix: 1_700_000_000 },
        &PcDevices { cmdline: "a b".into(), pc_testdev: true, ..PcDevices::default() },
    )
}

fn fw_cfg_read(b: &mut PcBoard, key: u16, n: usize) -> Vec<u8> {
    b.io_write(0x510, 2, key as u32);
    (0..n).map(|_| b.io_read(0x511, 1) as u8).collect()
}

#[test]
fn fw_cfg_is_present_by_default() {
    let mut b = board();
    assert_eq!(fw_cfg_read(&mut b, 0x0000, 4), b"QEMU");
    assert_eq!(fw_cfg_read(&mut b, 0x0003, 8), (128u64 << 20).to_le_bytes());
    assert_eq!(fw_cfg_read(&mut b, 0x0005, 2), [1, 0]);
    assert_eq!(fw_cfg_read(&mut b, 0x0014, 4), [1, 0, 0, 0]);
    // Byte writes to the selector do not select (QEMU: only a 16-bit write does).
    b.io_write(0x510, 1, 0x05);
    assert_eq!(b.io_read(0x511, 1), 0, "still past the end of the CMDLINE_SIZE item");
    // No DMA interface.
    assert_eq!(b.io_read(0x514, 4), 0xffff_ffff);
}

#[test]
fn fw_cfg_command_line_from_devices() {
    let mut b = testdev_board();
    assert_eq!(fw_cfg_read(&mut b, 0x0014, 4), [4, 0, 0, 0]);
    assert_eq!(fw_cfg_read(&mut b, 0x0015, 5), b"a b\0\0");
}

#[test]
fn pc_testdev_absent_unless_asked_for() {
    let mut b = board();
    assert_eq!(b.io_read(0xe0, 4), 0xffff_ffff);
    b.io_write(0xe0, 4, 0x1234);
    assert_eq!(b.io_read(0xe0, 4), 0xffff_ffff);
    assert_eq!(b.io_read(0xe8, 1), 0xff);
    b.mmio_write(0xff00_0000, 4, 7);
    assert_eq!(b.mmio_read(0xff00_0000, 4), 0xffff_ffff);
    b.io_write(0x2003, 1, 1);
    assert!(!b.intr_level());
}

#[test]
fn pc_testdev_registers_through_the_board() {
    let mut b = testdev_board();
    b.io_write(0xe0, 4, 0xcafe_f00d);
    assert_eq!(b.io_read(0xe0, 4), 0xcafe_f00d);
    assert_eq!(b.io_read(0xe2, 2), 0xcafe);
    assert_eq!(b.io_read(0xeb, 1), 0xca);
    b.io_write(0xe9, 1, 0x11);
    assert_eq!(b.io_read(0xe0, 4), 0xcafe_110d);
    // Flush page: accepted, no effect on anything the guest can read.
    b.io_write(0xe4, 4, 0x0010_0000);
    assert_eq!(b.io_read(0xe0, 4), 0xcafe_110d);
    assert_eq!(b.io_read(0xe4, 4), 0xffff_ffff);
    b.mmio_write(0xff00_0ff0, 8, 0x1122_3344_5566_7788);
    assert_eq!(b.mmio_read(0xff00_0ff0, 8), 0x1122_3344_5566_7788);
    assert_eq!(b.mmio_read(0xff00_0ff4, 2), 0x3344);
    assert_eq!(b.mmio_read(0xff01_0000, 4), 0xffff_ffff, "past the 64 KiB window");
}

#[test]
fn pc_testdev_irq_lines_reach_pic_and_ioapic() {
    let mut b = testdev_board();
    init_pic(&mut b);
    // Mask the PIT so only the testdev line matters.
    b.io_write(0x21, 1, 0x01);
    b.io_write(0x2005, 1, 1);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x35);
    b.io_write(0x20, 1, 0x20);
    b.io_write(0x2005, 1, 0);
    assert!(!b.intr_level());
    // Through the IOAPIC (edge, unmasked, vector 0x45) with the local APIC enabled.
    let mut b = testdev_board();
    lapic_write(&mut b, 0xf0, 0x1ff);
    ioapic_route(&mut b, 7, 0x45);
    b.io_write(0x2007, 1, 1);
    assert!(b.intr_level());
    assert_eq!(b.interrupt_ack(), 0x45);
    // A line shared with COM1 stays high while the testdev holds it.
    let mut b = testdev_board();
    b.io_write(0x2004, 1, 1);
    b.advance_to(1_000_000);
    assert_ne!(b.isa_levels & (1 << 4), 0);
}

#[test]
fn fw_cfg_and_testdev_survive_save_load() {
    let mut b = testdev_board();
    b.io_write(0xe0, 4, 0x55aa);
    b.mmio_write(0xff00_0010, 4, 0x77);
    b.io_write(0x510, 2, 0);
    b.io_read(0x511, 1);
    let mut c = PcBoard::load_state(&b.save_state()).unwrap();
    assert_eq!(c, b);
    assert_eq!(c.io_read(0x511, 1), b'E' as u32);
    assert_eq!(c.io_read(0xe0, 4), 0x55aa);
    assert_eq!(c.mmio_read(0xff00_0010, 4), 0x77);
}

#[test]
fn version_3_state_loads_without_the_new_devices() {
    let a = board();
    // Version 3 wrote the version tag and the board alone (the new devices are not in its layout).
    let v3 = postcard::to_stdvec(&(3u32, &a)).unwrap();
    let mut b = PcBoard::load_state(&v3).unwrap();
    assert!(b.fw_cfg.is_none() && b.testdev.is_none());
    assert_eq!(b.io_read(0x511, 1), 0xff, "the recorded machine had no fw_cfg");
    assert!(b.save_state().len() > v3.len());
}

fn bios_board() -> PcBoard {
    let mut rom = vec![0u8; 128 << 10];
    let n = rom.len();
    rom[n - 16] = 0xea;
    rom[0] = 0x42;
    PcBoard::with_devices(
        PcConfig { ram_size: 16 << 20, rtc_base_unix: 0 },
        &PcDevices { bios: Some(FirmwareImage::new(rom).unwrap()), debugcon: Some(0x402), ..PcDevices::default() },
    )
}

#[test]
fn firmware_rom_is_read_only_at_the_top_of_4_gib() {
    let mut b = bios_board();
    assert_eq!(b.mmio_read(0xffff_fff0, 1), 0xea);
    assert_eq!(b.mmio_read(0xfffe_0000, 4), 0x42);
    b.mmio_write(0xfffe_0000, 4, 0x1234_5678);
    assert_eq!(b.mmio_read(0xfffe_0000, 4), 0x42, "ROM stores are dropped");
    // Below the image: unmapped.
    assert_eq!(b.mmio_read(0xfffd_fffc, 4), 0xffff_ffff);
    // The PAM registers keep QEMU's reset value (the firmware enables shadow RAM itself).
    b.io_write(0xcf8, 4, 0x8000_0058);
    assert_eq!(b.io_read(0xcfc, 4), 0);
    assert_eq!(board().mmio_read(0xffff_fff0, 1), 0xff, "no ROM without -bios");
}

#[test]
fn debugcon_collects_bytes_and_reads_back() {
    let mut b = bios_board();
    assert_eq!(b.io_read(0x402, 1), 0xe9);
    for c in b"hi\n" {
        b.io_write(0x402, 1, u32::from(*c));
    }
    assert_eq!(b.take_debugcon_output(), b"hi\n");
    assert!(b.take_debugcon_output().is_empty());
    assert!(b.take_serial_output().is_empty());
    let mut plain = board();
    assert_eq!(plain.io_read(0x402, 1), 0xff);
    plain.io_write(0x402, 1, 0x41);
    assert!(plain.take_debugcon_output().is_empty());
}

#[test]
fn firmware_and_debugcon_survive_save_load_and_version_4_loads() {
    let b = bios_board();
    let mut c = PcBoard::load_state(&b.save_state()).unwrap();
    assert_eq!(c, b);
    assert_eq!(c.mmio_read(0xffff_fff0, 1), 0xea);
    assert_eq!(c.debugcon().map(|d| d.port), Some(0x402));
    // Version 4 wrote fw_cfg and the testdev after the board, nothing more.
    let a = board();
    let v4 = postcard::to_stdvec(&(4u32, &a, &a.fw_cfg, &a.testdev)).unwrap();
    let d = PcBoard::load_state(&v4).unwrap();
    assert!(d.firmware().is_none() && d.debugcon().is_none() && d.fw_cfg.is_some());
}
