; timer - 8254 PIT and 8259 PIC: latch reads of channel 0 progress, then 100 IRQ0s (PIT mode 2 at
; ~1 kHz) taken while looping on HLT; every HLT must be woken by exactly one timer interrupt.
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "timer"
%include "common.inc"

PIT_CH0     equ 0x40
PIT_CMD     equ 0x43
PIT_DIVISOR equ 1193                      ; 1193182 Hz / 1193 = ~1000.15 Hz
TICKS       equ 100
LATCH_READS equ 5

section .bss
ticks:      resd 1
wakeups:    resd 1
latched:    resd LATCH_READS

section .text
irq0:
    inc dword [ticks]
    call pic_eoi_master
    iret

; read_latched - ax = PIT channel 0 count (counter latch command).
read_latched:
    push edx
    mov al, 0x00                          ; channel 0, counter latch
    out PIT_CMD, al
    in al, PIT_CH0
    mov dl, al
    in al, PIT_CH0
    mov ah, al
    mov al, dl
    movzx eax, ax
    pop edx
    ret

main:
    PUTLN "timer: 8254 PIT channel 0 + 8259 PIC, IRQ0 with HLT"
    call pic_remap
    SET_GATE 0x20, irq0, GATE_INT

    ; Channel 0: lobyte/hibyte, mode 2 (rate generator), binary.
    mov al, 0x34
    out PIT_CMD, al
    mov ax, PIT_DIVISOR
    out PIT_CH0, al
    mov al, ah
    out PIT_CH0, al

    ; Latch reads, with some work in between: the count must move and stay within 1..divisor.
    xor ebx, ebx
.latch_loop:
    mov ecx, 2000
    call delay
    call read_latched
    mov [latched + ebx * 4], eax
    inc ebx
    cmp ebx, LATCH_READS
    jb .latch_loop
    PUTS "latched counts:"
    xor ebx, ebx
    xor ebp, ebp                          ; number of changes
.print_latch:
    call space
    mov eax, [latched + ebx * 4]
    call putdec
    cmp eax, PIT_DIVISOR
    jbe .in_range
    call newline
    FAIL "latched count above the divisor"
.in_range:
    test ebx, ebx
    jz .next_latch
    cmp eax, [latched + ebx * 4 - 4]
    je .next_latch
    inc ebp
.next_latch:
    inc ebx
    cmp ebx, LATCH_READS
    jb .print_latch
    call newline
    test ebp, ebp
    jnz .latch_ok
    FAIL "PIT channel 0 count does not progress"
.latch_ok:

    ; Unmask IRQ0 and wait for TICKS interrupts, halting in between.
    in al, PIC1_DATA
    and al, 0xfe
    out PIC1_DATA, al
.wait:
    cli
    cmp dword [ticks], TICKS
    jae .done
    sti
    hlt                                   ; STI shadow: the interrupt cannot slip in before HLT
    inc dword [wakeups]
    jmp .wait
.done:
    mov al, 0xff
    out PIC1_DATA, al                     ; mask IRQ0 again

    PUTS "irq0 ticks: "
    mov eax, [ticks]
    call putdec
    call newline
    PUTS "hlt wake-ups: "
    mov eax, [wakeups]
    call putdec
    call newline
    cmp dword [ticks], TICKS
    je .ticks_ok
    FAIL "tick count is not exactly 100"
.ticks_ok:
    cmp dword [wakeups], TICKS
    je .wake_ok
    FAIL "hlt wake-ups differ from the tick count"
.wake_ok:
    jmp pass
