//! Older CPU state layouts that [`crate::Cpu::load_state`] still accepts (postcard is not
//! self-describing, so each layout needs its own struct).

use serde::Deserialize;

use crate::{fpu, msr, CpuModel, DescTable, Segment, State};

/// State format version 2 (before MSRs 0x1a0/0x277, NMI and debug-trap state were added).
#[derive(Deserialize)]
pub(crate) struct StateV2 {
    version: u32,
    model: CpuModel,
    regs: [u64; 16],
    rip: u64,
    rflags: u64,
    seg: [Segment; 6],
    ldtr: Segment,
    tr: Segment,
    gdtr: DescTable,
    idtr: DescTable,
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    dr: [u64; 8],
    cpl: u8,
    tsc_offset: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    apic_base: u64,
    icount: u64,
    halted: bool,
    shutdown: bool,
    intr: bool,
    shadow: bool,
    fpu: fpu::Fpu,
}

impl From<StateV2> for State {
    /// The new registers take their reset values; no NMI or debug trap is pending.
    fn from(o: StateV2) -> State {
        let _ = o.version;
        State {
            version: crate::STATE_VERSION,
            model: o.model,
            regs: o.regs,
            rip: o.rip,
            rflags: o.rflags,
            seg: o.seg,
            ldtr: o.ldtr,
            tr: o.tr,
            gdtr: o.gdtr,
            idtr: o.idtr,
            cr0: o.cr0,
            cr2: o.cr2,
            cr3: o.cr3,
            cr4: o.cr4,
            efer: o.efer,
            dr: o.dr,
            cpl: o.cpl,
            tsc_offset: o.tsc_offset,
            sysenter_cs: o.sysenter_cs,
            sysenter_esp: o.sysenter_esp,
            sysenter_eip: o.sysenter_eip,
            apic_base: o.apic_base,
            icount: o.icount,
            halted: o.halted,
            shutdown: o.shutdown,
            intr: o.intr,
            shadow: o.shadow,
            fpu: o.fpu,
            misc_enable: msr::MISC_ENABLE_RESET,
            pat: msr::PAT_RESET,
            nmi_pending: false,
            nmi_blocked: false,
            ss_shadow: false,
            dbg_pending: 0,
            pdpte: [0; 4],
        }
    }
}

/// State format version 3 (before the PAE PDPTE registers were added).
#[derive(Deserialize)]
pub(crate) struct StateV3 {
    version: u32,
    model: CpuModel,
    regs: [u64; 16],
    rip: u64,
    rflags: u64,
    seg: [Segment; 6],
    ldtr: Segment,
    tr: Segment,
    gdtr: DescTable,
    idtr: DescTable,
    cr0: u64,
    cr2: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    dr: [u64; 8],
    cpl: u8,
    tsc_offset: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    apic_base: u64,
    icount: u64,
    halted: bool,
    shutdown: bool,
    intr: bool,
    shadow: bool,
    fpu: fpu::Fpu,
    misc_enable: u64,
    pat: u64,
    nmi_pending: bool,
    nmi_blocked: bool,
    ss_shadow: bool,
    dbg_pending: u32,
}

impl From<StateV3> for State {
    /// Version 3 had no PAE (CR4.PAE could not be set), so the PDPTE registers are unused: zero.
    fn from(o: StateV3) -> State {
        let _ = o.version;
        State {
            version: crate::STATE_VERSION,
            model: o.model,
            regs: o.regs,
            rip: o.rip,
            rflags: o.rflags,
            seg: o.seg,
            ldtr: o.ldtr,
            tr: o.tr,
            gdtr: o.gdtr,
            idtr: o.idtr,
            cr0: o.cr0,
            cr2: o.cr2,
            cr3: o.cr3,
            cr4: o.cr4,
            efer: o.efer,
            dr: o.dr,
            cpl: o.cpl,
            tsc_offset: o.tsc_offset,
            sysenter_cs: o.sysenter_cs,
            sysenter_esp: o.sysenter_esp,
            sysenter_eip: o.sysenter_eip,
            apic_base: o.apic_base,
            icount: o.icount,
            halted: o.halted,
            shutdown: o.shutdown,
            intr: o.intr,
            shadow: o.shadow,
            fpu: o.fpu,
            misc_enable: o.misc_enable,
            pat: o.pat,
            nmi_pending: o.nmi_pending,
            nmi_blocked: o.nmi_blocked,
            ss_shadow: o.ss_shadow,
            dbg_pending: o.dbg_pending,
            pdpte: [0; 4],
        }
    }
}
