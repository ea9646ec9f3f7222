; smc - self-modifying code. An emulator that caches decoded instructions must notice every write to
; code it has already decoded. Tests: (1) a buffer with `mov eax, imm32; ret` rewritten and called
; 100 times; (2) instruction boundaries changed in place; (3) a store that patches the very next
; instruction in the same straight-line block, repeated with different values; (4) an instruction
; straddling a page boundary, patched on its second page only; (5) code written with REP MOVSB and
; REP STOSB; (6) a callee that patches the instruction at its return address.
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "smc"
%include "common.inc"

section .bss
alignb 4096
code_buf:   resb 4096
page_buf:   resb 8192                     ; two pages: an instruction across the boundary
copy_buf:   resb 64

section .rodata
template:                                 ; mov eax, 0x01020304 ; add eax, 0x10 ; ret
    db 0xb8, 0x04, 0x03, 0x02, 0x01
    db 0x83, 0xc0, 0x10
    db 0xc3
TEMPLATE_LEN equ $ - template

section .text
; write_mov_ret - edi = address, eax = immediate: writes `mov eax, imm32; ret`.
write_mov_ret:
    mov byte [edi], 0xb8
    mov [edi + 1], eax
    mov byte [edi + 5], 0xc3
    ret

; patch_return_site - writes eax into the imm32 of the `mov ebx, imm32` at the return address.
patch_return_site:
    push edx
    mov edx, [esp + 4]
    mov [edx + 1], eax
    pop edx
    ret

main:
    PUTLN "smc: self-modifying code"

    ; (1) rewrite the immediate and call, 100 times.
    xor esi, esi                          ; sum of results
    mov ebx, 1
.t1:
    mov eax, ebx
    imul eax, eax, 0x01010101
    mov edi, code_buf
    call write_mov_ret
    call code_buf
    add esi, eax
    inc ebx
    cmp ebx, 100
    jbe .t1
    PUTS "1 rewritten immediate x100: sum "
    mov eax, esi
    call puthex
    call newline
    cmp esi, (5050 * 0x01010101) & 0xffffffff
    je .t1_ok
    FAIL "stale code after rewriting an immediate"
.t1_ok:

    ; (2) change instruction boundaries: mov eax, imm32 (5 bytes) -> xor eax,eax; inc eax; inc eax; nop
    mov edi, code_buf
    mov esi, template
    mov ecx, TEMPLATE_LEN
    rep movsb
    call code_buf
    mov ebx, eax                          ; 0x01020314
    mov dword [code_buf], 0x4040c031     ; bytes 31 c0 40 40: xor eax,eax; inc eax; inc eax
    mov byte [code_buf + 4], 0x90         ; nop
    call code_buf
    PUTS "2 new instruction boundaries: "
    push eax
    mov eax, ebx
    call puthex
    PUTS " then "
    pop eax
    call puthex
    call newline
    cmp ebx, 0x01020314
    jne .t2_bad
    cmp eax, 2 + 0x10
    je .t2_ok
.t2_bad:
    FAIL "stale decode after changing instruction boundaries"
.t2_ok:

    ; (3) patch the next instruction from inside the same straight-line block.
    xor ebx, ebx
    xor esi, esi
.t3:
    mov eax, ebx
    add al, 0x40
    mov [.t3_target + 1], al              ; imm8 of the next instruction
.t3_target:
    mov dl, 0x00
    movzx edx, dl
    add esi, edx
    cmp dl, al
    jne .t3_bad
    inc ebx
    cmp ebx, 10
    jb .t3
    PUTS "3 patched next instruction x10: sum "
    mov eax, esi
    call puthex
    call newline
    jmp .t3_ok
.t3_bad:
    FAIL "store to the next instruction not seen"
.t3_ok:

    ; (4) an instruction straddling a page boundary: mov eax, imm32 at page_buf + 4093 (opcode and
    ; two immediate bytes on the first page, two on the second), patched on the second page only.
    mov edi, page_buf + 4093
    mov eax, 0x11223344
    call write_mov_ret
    call page_buf + 4093
    mov ebx, eax
    mov byte [page_buf + 4096], 0xaa      ; byte 2 of the immediate (0x22 -> 0xaa)
    mov byte [page_buf + 4097], 0xbb      ; byte 3 of the immediate (0x11 -> 0xbb)
    call page_buf + 4093
    PUTS "4 page-straddling instruction: "
    push eax
    mov eax, ebx
    call puthex
    PUTS " then "
    pop eax
    call puthex
    call newline
    cmp ebx, 0x11223344
    jne .t4_bad
    cmp eax, 0xbbaa3344
    je .t4_ok
.t4_bad:
    FAIL "stale decode across a page boundary"
.t4_ok:

    ; (5) code written by string instructions.
    mov edi, copy_buf
    mov esi, template
    mov ecx, TEMPLATE_LEN
    rep movsb
    call copy_buf
    mov ebx, eax
    mov edi, copy_buf + 1
    mov al, 0x55
    mov ecx, 4
    rep stosb                             ; immediate -> 0x55555555
    call copy_buf
    PUTS "5 rep movsb / rep stosb: "
    push eax
    mov eax, ebx
    call puthex
    PUTS " then "
    pop eax
    call puthex
    call newline
    cmp ebx, 0x01020314
    jne .t5_bad
    cmp eax, 0x55555565
    je .t5_ok
.t5_bad:
    FAIL "stale code after REP MOVSB/STOSB"
.t5_ok:

    ; (6) a callee patches the instruction at its return address; three rounds.
    xor esi, esi
    mov ecx, 1
.t6:
    mov eax, ecx
    imul eax, eax, 0x111
    call patch_return_site
    mov ebx, 0                            ; imm32 patched by the callee
    cmp ebx, eax
    jne .t6_bad
    add esi, ebx
    inc ecx
    cmp ecx, 3
    jbe .t6
    PUTS "6 callee patches its return site x3: sum "
    mov eax, esi
    call puthex
    call newline
    cmp esi, 6 * 0x111
    je .t6_ok
.t6_bad:
    FAIL "stale code at a patched return site"
.t6_ok:
    jmp pass
