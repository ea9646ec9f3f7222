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

impl From<StateV2> for StateV3 {
    /// The registers version 3 added take their reset values; no NMI or debug trap is pending.
    fn from(v2: StateV2) -> StateV3 {
        StateV3 {
            v2,
            misc_enable: msr::MISC_ENABLE_RESET,
            pat: msr::PAT_RESET,
            nmi_pending: false,
            nmi_blocked: false,
            ss_shadow: false,
            dbg_pending: 0,
        }
    }
}

/// State format version 3 (before the PAE PDPTE registers were added).
#[derive(Deserialize)]
pub(crate) struct StateV3 {
    /// Version 3 appended fields to version 2's; postcard writes a nested struct's fields inline,
    /// so this nesting has exactly the version-3 layout.
    v2: StateV2,
    misc_enable: u64,
    pat: u64,
    nmi_pending: bool,
    nmi_blocked: bool,
    ss_shadow: bool,
    dbg_pending: u32,
}

/// State format version 4 (before the long-mode MSRs and SSE registers were added).
#[derive(Deserialize)]
pub(crate) struct StateV4 {
    v3: StateV3,
    pdpte: [u64; 4],
}

impl From<StateV3> for StateV4 {
    /// Version 3 had no PAE (CR4.PAE could not be set), so the PDPTE registers are unused: zero.
    fn from(v3: StateV3) -> StateV4 {
        StateV4 { v3, pdpte: [0; 4] }
    }
}

impl From<StateV4> for State {
    /// Version 4 had no long mode and no SSE: those registers take their reset values.
    fn from(v4: StateV4) -> State {
        let o = v4.v3;
        let _ = o.v2.version;
        State {
            version: crate::STATE_VERSION,
            model: o.v2.model,
            regs: o.v2.regs,
            rip: o.v2.rip,
            rflags: o.v2.rflags,
            seg: o.v2.seg,
            ldtr: o.v2.ldtr,
            tr: o.v2.tr,
            gdtr: o.v2.gdtr,
            idtr: o.v2.idtr,
            cr0: o.v2.cr0,
            cr2: o.v2.cr2,
            cr3: o.v2.cr3,
            cr4: o.v2.cr4,
            efer: o.v2.efer,
            dr: o.v2.dr,
            cpl: o.v2.cpl,
            tsc_offset: o.v2.tsc_offset,
            sysenter_cs: o.v2.sysenter_cs,
            sysenter_esp: o.v2.sysenter_esp,
            sysenter_eip: o.v2.sysenter_eip,
            apic_base: o.v2.apic_base,
            icount: o.v2.icount,
            halted: o.v2.halted,
            shutdown: o.v2.shutdown,
            intr: o.v2.intr,
            shadow: o.v2.shadow,
            fpu: o.v2.fpu,
            misc_enable: o.misc_enable,
            pat: o.pat,
            nmi_pending: o.nmi_pending,
            nmi_blocked: o.nmi_blocked,
            ss_shadow: o.ss_shadow,
            dbg_pending: o.dbg_pending,
            pdpte: v4.pdpte,
            lm: crate::LongModeRegs::default(),
            sse: crate::SseRegs::default(),
            lazy: Default::default(),
        }
    }
}
