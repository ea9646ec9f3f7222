; serial - COM1 input. First polled: read LSR.DR/RBR until a newline, echoing each character. Then
; interrupt-driven: receive-data interrupt (IER bit 0) through IRQ4 of the master 8259 (vector
; 0x24), HLT between interrupts, each line printed as received and uppercased, until a line "quit".
; Input comes from the emulator's serial input (QEMU: piped into -serial stdio).
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "serial"
%include "common.inc"

LINE_MAX    equ 120

section .bss
line_buf:   resb LINE_MAX + 1
line_len:   resd 1
ring:       resb 256                      ; filled by the IRQ handler
ring_head:  resd 1                        ; written by the IRQ handler
ring_tail:  resd 1                        ; written by the main loop
irq_count:  resd 1
wakeups:    resd 1
line_count: resd 1
rx_bytes:   resd 1

section .text
irq4:
    push eax
    push ebx
    push edx
    inc dword [irq_count]
.drain:
    mov dx, COM1 + 5
    in al, dx
    test al, 1                            ; LSR.DR
    jz .out
    mov dx, COM1
    in al, dx
    mov ebx, [ring_head]
    mov [ring + ebx], al
    inc bl
    mov [ring_head], ebx
    jmp .drain
.out:
    call pic_eoi_master
    pop edx
    pop ebx
    pop eax
    iret

; print_line - print "'<line>'" from line_buf.
print_line:
    push ecx
    push esi
    mov al, "'"
    call putc
    mov esi, line_buf
    mov ecx, [line_len]
    call putsn
    mov al, "'"
    call putc
    pop esi
    pop ecx
    ret

; add_char - al = character, appended to line_buf if there is room.
add_char:
    push ebx
    mov ebx, [line_len]
    cmp ebx, LINE_MAX
    jae .full
    mov [line_buf + ebx], al
    inc dword [line_len]
.full:
    pop ebx
    ret

main:
    PUTLN "serial: polled input, one line"
.poll:
    mov dx, COM1 + 5
    in al, dx
    test al, 1
    jz .poll
    mov dx, COM1
    in al, dx
    cmp al, 13
    je .polled_line
    cmp al, 10
    je .polled_line
    call putc                             ; echo
    call add_char
    jmp .poll
.polled_line:
    call newline
    PUTS "polled line: "
    call print_line
    PUTS " ("
    mov eax, [line_len]
    call putdec
    PUTLN " bytes)"
    mov dword [line_len], 0

    PUTLN "serial: interrupt-driven input until 'quit'"
    call pic_remap
    SET_GATE 0x24, irq4, GATE_INT
    SET_GATE 0x27, spurious_irq7, GATE_INT
    mov dx, COM1 + 1
    mov al, 0x01                          ; IER: received data available
    out dx, al
    in al, PIC1_DATA
    and al, ~(1 << 4)
    out PIC1_DATA, al

.loop:
    cli
    mov ebx, [ring_tail]
    cmp ebx, [ring_head]
    jne .have_byte
    sti
    hlt
    inc dword [wakeups]
    jmp .loop
.have_byte:
    mov al, [ring + ebx]
    inc bl
    mov [ring_tail], ebx
    sti
    inc dword [rx_bytes]
    cmp al, 13
    je .eol
    cmp al, 10
    je .eol
    call add_char
    jmp .loop
.eol:
    cmp dword [line_len], 0
    je .loop                              ; empty line (e.g. the LF of a CR LF)
    inc dword [line_count]
    PUTS "irq line: "
    call print_line
    ; uppercase in place
    mov ecx, [line_len]
    xor ebx, ebx
.upper:
    mov al, [line_buf + ebx]
    cmp al, 'a'
    jb .keep
    cmp al, 'z'
    ja .keep
    sub byte [line_buf + ebx], 0x20
.keep:
    inc ebx
    loop .upper
    PUTS " -> "
    call print_line
    call newline
    cmp dword [line_len], 4
    jne .not_quit
    cmp dword [line_buf], 'QUIT'
    je .quit
.not_quit:
    mov dword [line_len], 0
    jmp .loop

.quit:
    cli
    mov dx, COM1 + 1
    xor al, al
    out dx, al                            ; IER = 0
    mov al, 0xff
    out PIC1_DATA, al
    PUTS "irq lines: "
    mov eax, [line_count]
    call putdec
    PUTS ", bytes: "
    mov eax, [rx_bytes]
    call putdec
    PUTS ", irq4 interrupts: "
    mov eax, [irq_count]
    call putdec
    PUTS ", hlt wake-ups: "
    mov eax, [wakeups]
    call putdec
    call newline
    cmp dword [irq_count], 0
    jne .irqs_ok
    FAIL "no receive interrupts"
.irqs_ok:
    jmp pass

spurious_irq7:
    iret
