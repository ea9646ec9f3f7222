; cpubound - a CPU-bound integer loop for instruction-rate benchmarks: xorshift32, a 64-entry table
; read-modify-write with IMUL, an accumulator with ADD/ROL/SUB; exactly 20 instructions per
; iteration. The iteration count comes from the multiboot command line (`iters=N`); the default,
; 25,000,000 iterations, is about 500 million instructions. Prints a checksum and compares it with
; a built-in reference for the counts listed in `refs` (any other count: printed, not checked).
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "cpubound"
%include "common.inc"

DEFAULT_ITERS   equ 25000000
INSNS_PER_ITER  equ 20
REF_DEFAULT     equ 0x608adbfc           ; checksum for DEFAULT_ITERS

section .rodata
iters_key:  db "iters=", 0
align 4
refs:                                     ; (iterations, expected checksum)
    dd 1,        0xa9b8707c
    dd 1000,     0xfc34c3b5
    dd 100000,   0x66a13609
    dd 1000000,  0xd44aca0e
    dd DEFAULT_ITERS, REF_DEFAULT
refs_end:

section .bss
alignb 64
table:      resd 64
iters:      resd 1
checksum:   resd 1

section .text
main:
    PUTLN "cpubound: integer loop (xorshift, imul, table read-modify-write)"
    mov esi, iters_key
    call cmdline_param
    jnc .have_iters
    mov eax, DEFAULT_ITERS
.have_iters:
    mov [iters], eax
    PUTS "iterations: "
    call putdec
    PUTS ", loop instructions: "
    mov ecx, INSNS_PER_ITER
    mul ecx
    call putdec64
    call newline
    cmp dword [iters], 0
    jne .nonzero
    FAIL "iters must be at least 1"
.nonzero:

    ; table[i] = i
    xor ecx, ecx
.init:
    mov [table + ecx * 4], ecx
    inc ecx
    cmp ecx, 64
    jb .init

    mov ecx, [iters]
    mov esi, 0x12345678                   ; xorshift state
    xor ebp, ebp                          ; accumulator
    mov edi, table
align 16
.loop:                                    ; 20 instructions
    mov eax, esi
    shl eax, 13
    xor esi, eax
    mov eax, esi
    shr eax, 17
    xor esi, eax
    mov eax, esi
    shl eax, 5
    xor esi, eax
    mov edx, esi
    and edx, 63
    mov eax, [edi + edx * 4]
    imul eax, eax, -0x61c8864f            ; 0x9e3779b1
    add eax, ebp
    mov [edi + edx * 4], eax
    add ebp, eax
    rol ebp, 3
    sub ebp, edx
    dec ecx
    jnz .loop

    ; checksum = acc ^ sum(table) ^ state
    xor eax, eax
    xor ecx, ecx
.sum:
    add eax, [table + ecx * 4]
    inc ecx
    cmp ecx, 64
    jb .sum
    xor eax, ebp
    xor eax, esi
    mov [checksum], eax
    PUTS "checksum: "
    call puthex
    call newline

    mov ebx, refs
.ref:
    cmp ebx, refs_end
    jae .no_ref
    mov eax, [ebx]
    cmp eax, [iters]
    je .check
    add ebx, 8
    jmp .ref
.check:
    mov eax, [ebx + 4]
    cmp eax, [checksum]
    je .ok
    PUTS "expected: "
    call puthex
    call newline
    FAIL "checksum mismatch"
.no_ref:
    PUTLN "no reference checksum for this iteration count"
.ok:
    jmp pass
