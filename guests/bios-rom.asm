; bios-rom - a 64 KiB system firmware image for `-bios` (nasm -f bin).
;
; The PC maps the image at 0xffff0000-0xffffffff and, through the ISA alias, at 0xf0000-0xfffff.
; The CPU starts at the reset vector (F000:FFF0, CS.base 0xffff0000: the last 16 bytes of the
; image), which far-jumps into the alias below 1 MiB. Then, in real mode: print on COM1, check the
; alias and the ROM's own bytes; switch to 32-bit protected mode (flat segments, GDT in the ROM),
; compare the high mapping with the alias, check that a store to the high mapping is ignored,
; write and check RAM, run a timer-free checksum loop, and exit through isa-debug-exit:
;
;     pass -> "PASS", "bios-rom: done", write 0 to port 0xf4 (exit status 1)
;     fail -> "FAIL: <reason>", "bios-rom: done", write 1 to port 0xf4 (exit status 3)
;
; When QEMU's isa-debugcon answers at port 0x402 (read-back 0xe9), a line goes there too.
;
; Build: nasm -f bin -o bios-rom.bin guests/bios-rom.asm
; QEMU:  qemu-system-i386 -bios bios-rom.bin -display none -serial stdio -monitor none \
;            -device isa-debug-exit,iobase=0xf4,iosize=0x04

COM1            equ 0x3f8
DEBUG_EXIT_PORT equ 0xf4
DEBUGCON        equ 0x402
ROM_BASE        equ 0xf0000                 ; the ISA alias of a 64 KiB image
HIGH_BASE       equ 0xffff0000              ; the image at the top of 4 GiB
SCRATCH         equ 0x200000                ; RAM used by the checks (2 MiB)

BITS 16
ORG 0                                       ; offsets inside segment F000

; ---------------------------------------------------------------------------------------------
; Real mode

start16:
    cli
    cld
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000
    mov ax, cs
    mov ds, ax                              ; DS = F000: strings live in the ROM
    mov si, msg_real
    call puts16
    ; The alias holds this image: its last bytes are the reset vector's far jump.
    cmp byte [0xfff0], 0xea
    jne fail16
    mov dx, DEBUGCON
    in al, dx
    cmp al, 0xe9
    jne .no_debugcon
    mov si, msg_debugcon
    call putsdbg16
.no_debugcon:
    ; Enter protected mode: GDT from the ROM (linear address through the alias).
    o32 lgdt [gdt_desc]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword 0x08:(ROM_BASE + start32)

fail16:
    mov si, msg_fail16
    call puts16
    mov dx, DEBUG_EXIT_PORT
    mov eax, 1
    out dx, eax
.hang:
    hlt
    jmp .hang

; puts16: print the NUL-terminated string at DS:SI on COM1.
puts16:
    push ax
    push dx
    mov dx, COM1
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    pop dx
    pop ax
    ret

; putsdbg16: print the NUL-terminated string at DS:SI on the debugcon.
putsdbg16:
    push ax
    push dx
    mov dx, DEBUGCON
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    pop dx
    pop ax
    ret

msg_real:      db "bios-rom: reset vector reached, real mode", 10, 0
msg_debugcon:  db "bios-rom: debugcon present", 10, 0
msg_fail16:    db "FAIL: the ISA alias does not hold the image", 10, "bios-rom: done", 10, 0

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff                   ; 0x08: flat 32-bit code
    dq 0x00cf92000000ffff                   ; 0x10: flat data
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd ROM_BASE + gdt

; ---------------------------------------------------------------------------------------------
; 32-bit protected mode (flat; code runs from the alias at ROM_BASE + offset)

BITS 32
start32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, 0x7000
    mov esi, ROM_BASE + msg_pm
    call puts32

    ; The high mapping and the alias hold the same bytes (the high one is read through MMIO).
    mov esi, ROM_BASE + 0xff00
    mov edi, HIGH_BASE + 0xff00
    mov ecx, 0x100 / 4
.cmp:
    mov eax, [esi]
    cmp eax, [edi]
    jne .bad_high
    add esi, 4
    add edi, 4
    loop .cmp
    ; A store to the ROM at the top of 4 GiB is dropped.
    mov eax, [HIGH_BASE + 0xfff0]
    mov dword [HIGH_BASE + 0xfff0], 0x12345678
    cmp eax, [HIGH_BASE + 0xfff0]
    jne .bad_store
    mov esi, ROM_BASE + msg_high
    call puts32

    ; RAM above 1 MiB works: fill 64 KiB, sum it back.
    mov edi, SCRATCH
    mov ecx, 0x4000
    mov eax, 0x01020304
.fill:
    mov [edi], eax
    add eax, 0x01010101
    add edi, 4
    loop .fill
    mov esi, SCRATCH
    mov ecx, 0x4000
    xor edx, edx
.sum:
    add edx, [esi]
    rol edx, 1
    add esi, 4
    loop .sum
    mov [SCRATCH - 4], edx
    mov esi, ROM_BASE + msg_ram
    call puts32
    mov eax, edx
    call puthex32
    mov dx, COM1
    mov al, 10
    out dx, al

    mov esi, ROM_BASE + msg_pass
    call puts32
    mov dx, DEBUG_EXIT_PORT
    xor eax, eax
    out dx, eax
    jmp halt32

.bad_high:
    mov esi, ROM_BASE + msg_bad_high
    jmp fail32
.bad_store:
    mov esi, ROM_BASE + msg_bad_store
fail32:
    call puts32
    mov esi, ROM_BASE + msg_done
    call puts32
    mov dx, DEBUG_EXIT_PORT
    mov eax, 1
    out dx, eax
halt32:
    cli
    hlt
    jmp halt32

; puts32: print the NUL-terminated string at ESI on COM1.
puts32:
    push eax
    push edx
    push esi
    mov dx, COM1
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    pop esi
    pop edx
    pop eax
    ret

; puthex32: print EAX as 8 hex digits on COM1.
puthex32:
    push eax
    push ecx
    push edx
    push ebx
    mov ebx, eax
    mov ecx, 8
    mov dx, COM1
.digit:
    rol ebx, 4
    mov al, bl
    and al, 0xf
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '9' - 1
.out:
    out dx, al
    loop .digit
    pop ebx
    pop edx
    pop ecx
    pop eax
    ret

msg_pm:        db "bios-rom: protected mode", 10, 0
msg_high:      db "bios-rom: high mapping matches the alias, ROM stores dropped", 10, 0
msg_ram:       db "bios-rom: RAM checksum ", 0
msg_pass:      db "PASS", 10, "bios-rom: done", 10, 0
msg_done:      db "bios-rom: done", 10, 0
msg_bad_high:  db "FAIL: the high mapping differs from the alias", 10, 0
msg_bad_store: db "FAIL: a store to the ROM changed it", 10, 0

; ---------------------------------------------------------------------------------------------
; Reset vector: the last 16 bytes of the image (F000:FFF0).

BITS 16
    times 0xfff0 - ($ - $$) db 0xff
reset_vector:
    jmp 0xf000:start16
    times 0x10000 - ($ - $$) db 0xff
