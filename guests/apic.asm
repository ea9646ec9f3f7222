; apic - local APIC at 0xfee00000: software enable through the spurious-interrupt vector register,
; periodic LAPIC timer interrupts (vector 0x40) with EOI while halting, and one self-IPI (vector
; 0x41) sent through the interrupt command register. The 8259s are remapped and fully masked.
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "apic"
%include "common.inc"

LAPIC           equ 0xfee00000
LAPIC_ID        equ LAPIC + 0x020
LAPIC_VER       equ LAPIC + 0x030
LAPIC_TPR       equ LAPIC + 0x080
LAPIC_EOI       equ LAPIC + 0x0b0
LAPIC_SVR       equ LAPIC + 0x0f0
LAPIC_ESR       equ LAPIC + 0x280
LAPIC_ICR_LO    equ LAPIC + 0x300
LAPIC_ICR_HI    equ LAPIC + 0x310
LAPIC_LVT_TIMER equ LAPIC + 0x320
LAPIC_TIMER_ICR equ LAPIC + 0x380
LAPIC_TIMER_CCR equ LAPIC + 0x390
LAPIC_TIMER_DCR equ LAPIC + 0x3e0

TIMER_VECTOR    equ 0x40
IPI_VECTOR      equ 0x41
SPURIOUS_VECTOR equ 0xff
TIMER_TICKS     equ 20
TIMER_COUNT     equ 100000                ; with divide-by-16

section .bss
timer_ticks:    resd 1
ipi_count:      resd 1
spurious_count: resd 1
wakeups:        resd 1
ccr1:           resd 1
ccr2:           resd 1

section .text
timer_isr:
    inc dword [timer_ticks]
    mov dword [LAPIC_EOI], 0
    iret

ipi_isr:
    inc dword [ipi_count]
    mov dword [LAPIC_EOI], 0
    iret

spurious_isr:                             ; LAPIC spurious vector and PIC IRQ7/IRQ15: no EOI
    inc dword [spurious_count]
    iret

main:
    PUTLN "apic: local APIC timer and self-IPI"
    mov eax, 1
    cpuid
    bt edx, 9
    jc .has_apic
    FAIL "CPUID.1:EDX.APIC is clear"
.has_apic:
    mov ecx, 0x1b                         ; IA32_APIC_BASE
    rdmsr
    PUTS "IA32_APIC_BASE: "
    call puthex
    call newline
    bt eax, 11
    jc .enabled
    FAIL "APIC globally disabled in IA32_APIC_BASE"
.enabled:
    and eax, 0xfffff000
    cmp eax, LAPIC
    je .base_ok
    FAIL "APIC base is not 0xfee00000"
.base_ok:

    call pic_remap                        ; 8259s out of the way (all masked)
    SET_GATE TIMER_VECTOR, timer_isr, GATE_INT
    SET_GATE IPI_VECTOR, ipi_isr, GATE_INT
    SET_GATE SPURIOUS_VECTOR, spurious_isr, GATE_INT
    SET_GATE 0x27, spurious_isr, GATE_INT
    SET_GATE 0x2f, spurious_isr, GATE_INT

    PUTS "lapic id: "
    mov eax, [LAPIC_ID]
    shr eax, 24
    call putdec
    PUTS ", version: "
    mov eax, [LAPIC_VER]
    call puthex
    call newline
    mov eax, [LAPIC_VER]
    and eax, 0xff
    cmp eax, 0x10
    jae .version_ok
    FAIL "LAPIC version register is not an integrated APIC (< 0x10)"
.version_ok:

    mov dword [LAPIC_SVR], 0x100 | SPURIOUS_VECTOR   ; APIC software enable
    mov dword [LAPIC_TPR], 0
    mov eax, [LAPIC_SVR]
    PUTS "svr: "
    call puthex
    call newline

    ; Periodic timer.
    mov dword [LAPIC_TIMER_DCR], 0x3      ; divide by 16
    mov dword [LAPIC_LVT_TIMER], (1 << 17) | TIMER_VECTOR
    mov dword [LAPIC_TIMER_ICR], TIMER_COUNT
    mov eax, [LAPIC_TIMER_CCR]
    mov [ccr1], eax
    mov ecx, 2000
    call delay
    mov eax, [LAPIC_TIMER_CCR]
    mov [ccr2], eax
    PUTS "timer current count: "
    mov eax, [ccr1]
    call putdec
    PUTS " then "
    mov eax, [ccr2]
    call putdec
    call newline
    mov eax, [ccr1]
    cmp eax, TIMER_COUNT
    jbe .ccr_range
    FAIL "timer current count above the initial count"
.ccr_range:
    cmp eax, [ccr2]
    jne .ccr_moves
    FAIL "timer current count does not move"
.ccr_moves:

.wait:
    cli
    cmp dword [timer_ticks], TIMER_TICKS
    jae .timer_done
    sti
    hlt
    inc dword [wakeups]
    jmp .wait
.timer_done:
    mov dword [LAPIC_LVT_TIMER], (1 << 16) | TIMER_VECTOR   ; mask
    mov dword [LAPIC_TIMER_ICR], 0                          ; stop
    PUTS "timer interrupts: "
    mov eax, [timer_ticks]
    call putdec
    PUTS ", hlt wake-ups: "
    mov eax, [wakeups]
    call putdec
    call newline
    cmp dword [timer_ticks], TIMER_TICKS
    je .ticks_ok
    FAIL "wrong number of timer interrupts"
.ticks_ok:
    mov eax, [wakeups]
    cmp eax, TIMER_TICKS
    je .wakeups_ok
    FAIL "hlt wake-ups differ from the number of timer interrupts"
.wakeups_ok:

    ; Self-IPI (destination shorthand "self", fixed delivery), sent with IF=0.
    mov dword [LAPIC_ESR], 0
    mov dword [LAPIC_ICR_HI], 0
    mov dword [LAPIC_ICR_LO], (1 << 18) | IPI_VECTOR
    mov ecx, 100000
.idle:
    test dword [LAPIC_ICR_LO], 1 << 12    ; delivery status
    jz .sent
    dec ecx
    jnz .idle
    FAIL "ICR delivery status stays busy"
.sent:
    cmp dword [ipi_count], 0
    je .not_early
    FAIL "self-IPI delivered while IF=0"
.not_early:
    sti
    mov ecx, 1000000
.spin:
    cmp dword [ipi_count], 0
    jne .got_ipi
    dec ecx
    jnz .spin
    cli
    FAIL "self-IPI never delivered"
.got_ipi:
    cli
    PUTS "self-IPIs: "
    mov eax, [ipi_count]
    call putdec
    PUTS ", spurious: "
    mov eax, [spurious_count]
    call putdec
    PUTS ", esr: "
    mov dword [LAPIC_ESR], 0
    mov eax, [LAPIC_ESR]
    call puthex
    call newline
    cmp dword [ipi_count], 1
    je .ipi_ok
    FAIL "more than one self-IPI delivered"
.ipi_ok:
    test eax, eax
    jz .esr_ok
    FAIL "APIC error status register not zero"
.esr_ok:
    jmp pass
