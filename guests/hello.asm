; hello - print a banner and the multiboot information the loader passed, then exit.
;
; Checks: EAX held the multiboot magic (common entry), the information structure has memory
; information with mem_upper > 0, modules (if any) are page aligned, and a memory map whose
; available entries include RAM at 1 MiB.
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "hello"
%include "common.inc"

section .text
main:
    PUTLN "hello: Ailuro test guest (multiboot, 32-bit protected mode)"
    mov ebx, [mb_info]
    PUTS "multiboot info at "
    mov eax, ebx
    call puthex
    PUTS ", flags "
    mov eax, [ebx]
    call puthex
    call newline

    test dword [ebx], 1 << 0
    jnz .have_mem
    FAIL "no memory information (info flag bit 0)"
.have_mem:
    PUTS "mem_lower: "
    mov eax, [ebx + 4]
    call putdec
    PUTLN " KiB"
    PUTS "mem_upper: "
    mov eax, [ebx + 8]
    call putdec
    PUTLN " KiB"
    cmp dword [ebx + 8], 0
    jne .mem_ok
    FAIL "mem_upper is 0"
.mem_ok:

    call cmdline_ptr
    test eax, eax
    jz .no_cmdline
    PUTS "cmdline: '"
    mov esi, eax
    call puts
    PUTLN "'"
    jmp .cmdline_done
.no_cmdline:
    PUTLN "cmdline: (none)"
.cmdline_done:

    test dword [ebx], 1 << 9
    jz .no_name
    PUTS "boot loader: "
    mov esi, [ebx + 64]
    call puts
    call newline
.no_name:

    test dword [ebx], 1 << 3
    jz .no_mods
    PUTS "modules: "
    mov eax, [ebx + 20]
    call putdec
    call newline
    mov ecx, [ebx + 20]
    mov esi, [ebx + 24]                   ; module list
    xor edx, edx
.mod_loop:
    cmp edx, ecx
    jae .no_mods
    PUTS "module "
    mov eax, edx
    call putdec
    PUTS ": start "
    mov eax, [esi]
    call puthex
    PUTS " end "
    mov eax, [esi + 4]
    call puthex
    PUTS " string '"
    push esi
    mov esi, [esi + 8]
    test esi, esi
    jz .mod_nostr
    call puts
.mod_nostr:
    pop esi
    PUTLN "'"
    test dword [esi], 0xfff
    jz .mod_aligned
    FAIL "module not page aligned (header flag bit 0)"
.mod_aligned:
    mov eax, [esi + 4]
    cmp eax, [esi]
    jae .mod_ordered
    FAIL "module end below its start"
.mod_ordered:
    add esi, 16
    inc edx
    jmp .mod_loop
.no_mods:

    ; Memory map: print every entry, require available RAM at 1 MiB.
    test dword [ebx], 1 << 6
    jnz .have_mmap
    FAIL "no memory map (info flag bit 6)"
.have_mmap:
    mov esi, [ebx + 48]                   ; entry pointer
    mov edi, esi
    add edi, [ebx + 44]                   ; end
    xor ebp, ebp                          ; found available RAM at 1 MiB
.mmap_loop:
    cmp esi, edi
    jae .mmap_done
    PUTS "mmap: base "
    mov eax, [esi + 4]
    mov edx, [esi + 8]
    call puthex64
    PUTS " length "
    mov eax, [esi + 12]
    mov edx, [esi + 16]
    call puthex64
    PUTS " type "
    mov eax, [esi + 20]
    call putdec
    call newline
    cmp dword [esi + 20], 1
    jne .mmap_next
    cmp dword [esi + 8], 0
    jne .mmap_next
    cmp dword [esi + 4], 0x100000
    jne .mmap_next
    mov ebp, 1
.mmap_next:
    mov eax, [esi]
    lea esi, [esi + eax + 4]
    jmp .mmap_loop
.mmap_done:
    test ebp, ebp
    jnz .mmap_ok
    FAIL "memory map has no available entry at 0x100000"
.mmap_ok:
    jmp pass
