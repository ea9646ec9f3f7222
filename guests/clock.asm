; clock - time sources: RDTSC (several reads, printed with deltas, must increase), the CMOS RTC
; (wait for UIP clear, read date/time until two reads agree, print BCD date/time and status
; registers A-D, validate them) and the RTC periodic interrupt (register A rate 6 = 1024 Hz,
; register B PIE, IRQ8 through the slave 8259, vector 0x28) counted for 16 ticks while halting.
; The printed values are legitimately different on every run: this is what record/replay captures.
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "clock"
%include "common.inc"

TSC_READS   equ 5
RTC_TICKS   equ 16

CMOS_SEC    equ 0x00
CMOS_MIN    equ 0x02
CMOS_HOUR   equ 0x04
CMOS_DAY    equ 0x07
CMOS_MONTH  equ 0x08
CMOS_YEAR   equ 0x09
CMOS_A      equ 0x0a
CMOS_B      equ 0x0b
CMOS_C      equ 0x0c
CMOS_D      equ 0x0d
CMOS_CENTURY equ 0x32

section .rodata
time_regs:  db CMOS_CENTURY, CMOS_YEAR, CMOS_MONTH, CMOS_DAY, CMOS_HOUR, CMOS_MIN, CMOS_SEC
TIME_NREGS  equ $ - time_regs
; Upper bounds (BCD) for year, month, day, hour, minute, second; lower bounds 0 except month/day.
time_max:   db 0x99, 0x99, 0x12, 0x31, 0x23, 0x59, 0x59
time_min:   db 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00

section .bss
tsc:        resq TSC_READS
time1:      resb TIME_NREGS
time2:      resb TIME_NREGS
rtc_ticks:  resd 1
wakeups:    resd 1
tsc_start:  resq 1

section .text
; cmos_read - al = register; returns al = value.
cmos_read:
    out 0x70, al
    in al, 0x71
    ret

; cmos_write - al = register, ah = value.
cmos_write:
    out 0x70, al
    mov al, ah
    out 0x71, al
    ret

; read_time - edi = buffer of TIME_NREGS bytes.
read_time:
    push eax
    push ecx
    push esi
    push edi
    mov esi, time_regs
    mov ecx, TIME_NREGS
.loop:
    mov al, [esi]
    call cmos_read
    mov [edi], al
    inc esi
    inc edi
    loop .loop
    pop edi
    pop esi
    pop ecx
    pop eax
    ret

irq8:
    push eax
    mov al, CMOS_C                        ; reading register C acknowledges the interrupt
    call cmos_read
    test al, 0x40                         ; PF
    jz .not_pf
    inc dword [rtc_ticks]
.not_pf:
    call pic_eoi_slave
    pop eax
    iret

main:
    PUTLN "clock: RDTSC, CMOS RTC, RTC periodic interrupt"
    mov eax, 1
    cpuid
    bt edx, 4
    jc .has_tsc
    FAIL "CPUID: no TSC"
.has_tsc:

    ; --- RDTSC
    xor ebx, ebx
.tsc_loop:
    rdtsc
    mov [tsc + ebx * 8], eax
    mov [tsc + ebx * 8 + 4], edx
    mov ecx, 1000
    call delay
    inc ebx
    cmp ebx, TSC_READS
    jb .tsc_loop
    xor ebx, ebx
.tsc_print:
    PUTS "rdtsc: "
    mov eax, [tsc + ebx * 8]
    mov edx, [tsc + ebx * 8 + 4]
    call puthex64
    test ebx, ebx
    jz .tsc_next
    PUTS "  delta "
    sub eax, [tsc + ebx * 8 - 8]
    sbb edx, [tsc + ebx * 8 - 4]
    jc .tsc_back                          ; borrow: went backwards
    call putdec64
    mov ecx, eax
    or ecx, edx
    jnz .tsc_next
    jmp .tsc_bad
.tsc_back:
    PUTS "negative"
.tsc_bad:
    call newline
    FAIL "time-stamp counter did not increase"
.tsc_next:
    call newline
    inc ebx
    cmp ebx, TSC_READS
    jb .tsc_print

    ; --- CMOS RTC: wait for no update in progress, then read until two reads agree.
    mov ebp, 10                           ; attempts
.rtc_again:
    mov ecx, 10000000
.uip:
    mov al, CMOS_A
    call cmos_read
    test al, 0x80
    jz .uip_clear
    dec ecx
    jnz .uip
    FAIL "RTC update-in-progress never clears"
.uip_clear:
    mov edi, time1
    call read_time
    mov edi, time2
    call read_time
    mov esi, time1
    mov ecx, TIME_NREGS
    repe cmpsb
    je .rtc_stable
    dec ebp
    jnz .rtc_again
    FAIL "RTC time keeps changing between reads"
.rtc_stable:
    PUTS "rtc: "
    mov al, [time1 + 0]                   ; century
    call puthex8
    mov al, [time1 + 1]
    call puthex8
    mov al, '-'
    call putc
    mov al, [time1 + 2]
    call puthex8
    mov al, '-'
    call putc
    mov al, [time1 + 3]
    call puthex8
    mov al, ' '
    call putc
    mov al, [time1 + 4]
    call puthex8
    mov al, ':'
    call putc
    mov al, [time1 + 5]
    call puthex8
    mov al, ':'
    call putc
    mov al, [time1 + 6]
    call puthex8
    PUTLN " (raw register values)"
    PUTS "rtc status: A="
    mov al, CMOS_A
    call cmos_read
    call puthex8
    PUTS " B="
    mov al, CMOS_B
    call cmos_read
    mov bl, al                            ; keep B
    call puthex8
    PUTS " C="
    mov al, CMOS_C
    call cmos_read
    call puthex8
    PUTS " D="
    mov al, CMOS_D
    call cmos_read
    mov bh, al
    call puthex8
    call newline
    test bh, 0x80
    jnz .vrt_ok
    FAIL "RTC register D: valid RAM and time bit clear"
.vrt_ok:
    test bl, 0x04                         ; DM: binary mode?
    jnz .validated
    test bl, 0x02                         ; 24-hour mode?
    jnz .h24
    and byte [time1 + 4], 0x7f            ; 12-hour mode: drop the PM bit
.h24:
    xor ecx, ecx
.validate:
    mov al, [time1 + ecx]
    mov ah, al
    and ah, 0x0f
    cmp ah, 9
    ja .bad_bcd
    cmp al, 0x99
    ja .bad_bcd
    cmp ecx, 0
    je .next_field                        ; century: any BCD
    cmp al, [time_max + ecx]
    ja .bad_bcd
    cmp al, [time_min + ecx]
    jb .bad_bcd
.next_field:
    inc ecx
    cmp ecx, TIME_NREGS
    jb .validate
    jmp .validated
.bad_bcd:
    FAIL "RTC date/time is not valid BCD"
.validated:

    ; --- RTC periodic interrupt.
    call pic_remap
    SET_GATE 0x28, irq8, GATE_INT
    mov al, CMOS_A
    call cmos_read
    and al, 0xf0
    or al, 0x06                           ; rate 6: 1024 Hz
    mov ah, al
    mov al, CMOS_A
    call cmos_write
    mov al, CMOS_C
    call cmos_read                        ; clear pending flags
    mov al, CMOS_B
    call cmos_read
    or al, 0x40                           ; PIE
    mov ah, al
    mov al, CMOS_B
    call cmos_write
    in al, PIC2_DATA
    and al, 0xfe                          ; IRQ8
    out PIC2_DATA, al
    in al, PIC1_DATA
    and al, 0xfb                          ; IRQ2 (cascade)
    out PIC1_DATA, al
    rdtsc
    mov [tsc_start], eax
    mov [tsc_start + 4], edx
.wait:
    cli
    cmp dword [rtc_ticks], RTC_TICKS
    jae .ticks_done
    sti
    hlt
    inc dword [wakeups]
    jmp .wait
.ticks_done:
    rdtsc
    sub eax, [tsc_start]
    sbb edx, [tsc_start + 4]
    mov esi, eax
    mov edi, edx
    mov al, CMOS_B
    call cmos_read
    and al, ~0x40
    mov ah, al
    mov al, CMOS_B
    call cmos_write
    mov al, 0xff
    out PIC1_DATA, al
    out PIC2_DATA, al
    mov al, CMOS_C
    call cmos_read

    PUTS "rtc periodic interrupts: "
    mov eax, [rtc_ticks]
    call putdec
    PUTS ", hlt wake-ups: "
    mov eax, [wakeups]
    call putdec
    call newline
    PUTS "tsc cycles over the ticks: "
    mov eax, esi
    mov edx, edi
    call putdec64
    PUTS " (per tick "
    shrd eax, edx, 4
    shr edx, 4
    call putdec64
    PUTLN ")"
    cmp dword [rtc_ticks], RTC_TICKS
    je .ticks_ok
    FAIL "wrong number of RTC periodic interrupts"
.ticks_ok:
    mov eax, [wakeups]
    cmp eax, RTC_TICKS
    je .wake_ok
    FAIL "hlt wake-ups differ from the number of RTC interrupts"
.wake_ok:
    or esi, edi
    jnz .tsc_moved
    FAIL "time-stamp counter did not move across the RTC ticks"
.tsc_moved:
    jmp pass
