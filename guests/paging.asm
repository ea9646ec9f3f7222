; paging - protection and paging: GDT with ring-3 segments and a TSS, page tables with 4 KiB pages
; and 4 MiB PSE pages (one global, CR4.PGE), CR0.WP, then ring 3 via IRET with system calls through
; `int 0x80` and SYSENTER/SYSEXIT, demand paging of a not-present page from user mode, write
; protection faults (ring 0 with CR0.WP and ring 3), a user access to a supervisor page, and the
; accessed/dirty bits the CPU sets.
;
; Virtual memory: 0..4 MiB identity through a page table (page 0 not present, the .user section and
; two test pages user-accessible), 4..8 MiB identity through a PSE page, 8..12 MiB a global PSE
; alias of 4..8 MiB, 12..16 MiB a page table with nothing present (demand-paged from the #PF handler).
; Exit: PASS -> debug-exit 0 (QEMU status 1); FAIL -> debug-exit 1 (QEMU status 3).

%define NAME "paging"
%include "common.inc"

PTE_P       equ 1 << 0
PTE_RW      equ 1 << 1
PTE_US      equ 1 << 2
PTE_A       equ 1 << 5
PTE_D       equ 1 << 6
PDE_PS      equ 1 << 7
PTE_G       equ 1 << 8

ALIAS_VADDR  equ 0x800000                ; PSE alias of physical 0x400000 (global)
DEMAND_VADDR equ 0xc00000                ; not present until the first user access

SYS_WRITE   equ 1
SYS_GETPID  equ 2
SYS_EXIT    equ 3
FAKE_PID    equ 42

MSR_SYSENTER_CS  equ 0x174
MSR_SYSENTER_ESP equ 0x175
MSR_SYSENTER_EIP equ 0x176

PF_LOG_MAX  equ 8

extern user_start, user_end              ; from link.ld

section .bss
alignb 4096
page_dir:       resb 4096
pt0:            resb 4096
pt_demand:      resb 4096
demand_page:    resb 4096                ; physical page mapped at DEMAND_VADDR on demand
ro_page:        resb 4096                ; user-accessible, read-only
rd_page:        resb 4096                ; user-accessible, read-only, only ever read
kernel_secret:  resb 4096                ; supervisor-only
                resb 4096
int_stack_top:                           ; ring-0 stack for interrupts from ring 3 (TSS.esp0)
                resb 4096
sysenter_stack_top:                      ; ring-0 stack for SYSENTER
kernel_saved_esp: resd 1
user_exit_code: resd 1
int80_count:    resd 1
sysenter_count: resd 1
pf_count:       resd 1
pf_log:         resd 2 * PF_LOG_MAX       ; (cr2, error code) pairs

; ---------------------------------------------------------------------------------------------
; Ring-3 code and data (mapped user-accessible).
section .user progbits alloc exec write align=4096

user_main:
    mov eax, SYS_WRITE
    mov ebx, u_msg_int80
    mov ecx, u_msg_int80_len
    int 0x80
    mov ebx, 10
    cmp eax, u_msg_int80_len
    jne user_fail
    mov eax, SYS_GETPID
    int 0x80
    mov ebx, 11
    cmp eax, FAKE_PID
    jne user_fail

    mov eax, SYS_WRITE
    mov ebx, u_msg_sysenter
    mov edi, u_msg_sysenter_len
    call u_sysenter
    mov ebx, 12
    cmp eax, u_msg_sysenter_len
    jne user_fail
    mov eax, SYS_GETPID
    call u_sysenter
    mov ebx, 13
    cmp eax, FAKE_PID
    jne user_fail

    ; Read-only page that is only read: accessed, not dirty.
    mov eax, [rd_page + 0x40]

    ; Not-present page: faults, the kernel maps it, the store is retried.
    mov dword [DEMAND_VADDR + 0x100], 0x12345678
    mov ebx, 14
    cmp dword [DEMAND_VADDR + 0x100], 0x12345678
    jne user_fail

    ; Write to a read-only user page: faults, the kernel makes it writable, retried.
    mov dword [ro_page + 0x20], 0xabcdef01
    mov ebx, 15
    cmp dword [ro_page + 0x20], 0xabcdef01
    jne user_fail

    ; Supervisor page: the kernel resumes us at u_probe_resume with eax untouched.
    mov eax, 0x5a5a5a5a
u_probe:
    mov eax, [kernel_secret]
u_probe_resume:
    mov ebx, 16
    cmp eax, 0x5a5a5a5a
    jne user_fail

    mov eax, SYS_EXIT
    xor ebx, ebx
    int 0x80
user_fail:                                ; ebx = failure code
    mov eax, SYS_EXIT
    int 0x80
    jmp user_fail

; u_sysenter - system call through SYSENTER: eax = number, ebx = arg1, edi = arg2; result in eax.
u_sysenter:
    push ecx
    push edx
    mov ecx, esp                          ; SYSEXIT restores ESP from ECX ...
    mov edx, .ret                         ; ... and EIP from EDX
    sysenter
.ret:
    pop edx
    pop ecx
    ret

u_msg_int80:    db "user: hello from ring 3 via int 0x80", 10
u_msg_int80_len equ $ - u_msg_int80
u_msg_sysenter: db "user: hello from ring 3 via sysenter", 10
u_msg_sysenter_len equ $ - u_msg_sysenter

align 16
    times 1024 dd 0
user_stack_top:

; ---------------------------------------------------------------------------------------------
section .text

; syscall_dispatch - eax = number, ebx = arg1, ecx = arg2; returns eax. Ring 0, kernel segments.
syscall_dispatch:
    cmp eax, SYS_WRITE
    jne .not_write
    push esi
    mov esi, ebx
    call putsn
    pop esi
    mov eax, ecx
    ret
.not_write:
    cmp eax, SYS_GETPID
    jne .not_getpid
    mov eax, FAKE_PID
    ret
.not_getpid:
    cmp eax, SYS_EXIT
    jne .unknown
    ; Abandon the user context and continue the kernel where it entered ring 3.
    mov [user_exit_code], ebx
    mov esp, [kernel_saved_esp]
    jmp user_exited
.unknown:
    mov eax, -1
    ret

int80_handler:
    push ds
    push es
    pushad
    mov bx, KDATA_SEL
    mov ds, bx
    mov es, bx
    mov ebx, [esp + 16]                   ; restore the caller's ebx (pushad slot)
    inc dword [int80_count]
    call syscall_dispatch
    mov [esp + 28], eax                   ; return value in the saved eax
    popad
    pop es
    pop ds
    iret

sysenter_entry:
    push ecx                              ; user esp
    push edx                              ; user return eip
    push ds
    push es
    push eax
    mov ax, KDATA_SEL
    mov ds, ax
    mov es, ax
    pop eax
    inc dword [sysenter_count]
    mov ecx, edi
    call syscall_dispatch
    pop es
    pop ds
    pop edx
    pop ecx
    sysexit

; Page-fault handler: log (cr2, error code), then repair the fault so the access can be retried.
pf_handler:
    push ds
    push es
    pushad
    mov ax, KDATA_SEL
    mov ds, ax
    mov es, ax
    mov eax, cr2
    mov ebx, [esp + 40]                   ; error code
    mov ecx, [pf_count]
    cmp ecx, PF_LOG_MAX
    jae .logged
    mov [pf_log + ecx * 8], eax
    mov [pf_log + ecx * 8 + 4], ebx
.logged:
    inc dword [pf_count]

    mov edx, eax
    and edx, 0xfffff000
    cmp edx, DEMAND_VADDR
    jne .not_demand
    mov dword [pt_demand], demand_page + (PTE_P | PTE_RW | PTE_US)
    invlpg [eax]
    jmp .out
.not_demand:
    cmp edx, ro_page
    jne .not_ro
    mov ecx, edx
    shr ecx, 12
    or dword [pt0 + ecx * 4], PTE_RW
    invlpg [eax]
    jmp .out
.not_ro:
    cmp edx, kernel_secret
    jne .unexpected
    mov dword [esp + 44], u_probe_resume  ; skip the probing load
    jmp .out
.unexpected:
    PUTS "FAIL: unexpected page fault, cr2 "
    call puthex
    PUTS " error code "
    mov eax, ebx
    call puthex
    PUTS " eip "
    mov eax, [esp + 44]
    call puthex
    call newline
    mov eax, 1
    jmp finish
.out:
    popad
    pop es
    pop ds
    add esp, 4                            ; error code
    iret

; page_entry_addr - eax = identity-mapped address in 0..4 MiB; returns eax = address of its PTE.
page_entry_addr:
    shr eax, 12
    lea eax, [pt0 + eax * 4]
    ret

; check_pf - ecx = log index, eax = expected cr2, edx = expected error code; FAILs on mismatch.
check_pf:
    PUTS "page fault "
    push eax
    mov eax, ecx
    call putdec
    PUTS ": cr2 "
    mov eax, [pf_log + ecx * 8]
    call puthex
    PUTS " error "
    mov eax, [pf_log + ecx * 8 + 4]
    call puthex
    call newline
    pop eax
    cmp [pf_log + ecx * 8], eax
    jne .bad
    cmp [pf_log + ecx * 8 + 4], edx
    jne .bad
    ret
.bad:
    FAIL "page fault cr2/error code not as expected"

main:
    PUTLN "paging: rings, TSS, 4K/4M pages, int 0x80, sysenter, page faults"
    mov eax, 1
    cpuid
    bt edx, 3
    jc .pse
    FAIL "CPUID: no PSE"
.pse:
    bt edx, 13
    jc .pge
    FAIL "CPUID: no PGE"
.pge:
    bt edx, 11
    jc .sep
    FAIL "CPUID: no SEP (sysenter)"
.sep:

    ; Page table for 0..4 MiB: identity, supervisor read/write, page 0 absent.
    xor ecx, ecx
.fill:
    mov eax, ecx
    shl eax, 12
    or eax, PTE_P | PTE_RW
    mov [pt0 + ecx * 4], eax
    inc ecx
    cmp ecx, 1024
    jb .fill
    mov dword [pt0], 0
    ; .user section: user read/write.
    mov eax, user_start
.user_pages:
    push eax
    call page_entry_addr
    or dword [eax], PTE_US
    pop eax
    add eax, 4096
    cmp eax, user_end
    jb .user_pages
    ; Test pages: user read-only.
    mov eax, ro_page
    call page_entry_addr
    mov dword [eax], ro_page + (PTE_P | PTE_US)
    mov eax, rd_page
    call page_entry_addr
    mov dword [eax], rd_page + (PTE_P | PTE_US)

    mov dword [page_dir + 0 * 4], pt0 + (PTE_P | PTE_RW | PTE_US)
    mov dword [page_dir + 1 * 4], 0x400000 | PTE_P | PTE_RW | PDE_PS
    mov dword [page_dir + 2 * 4], 0x400000 | PTE_P | PTE_RW | PDE_PS | PTE_G
    mov dword [page_dir + 3 * 4], pt_demand + (PTE_P | PTE_RW | PTE_US)

    mov eax, page_dir
    mov cr3, eax
    mov eax, cr4
    or eax, (1 << 4) | (1 << 7)           ; PSE, PGE
    mov cr4, eax
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16)         ; PG, WP
    mov cr0, eax
    jmp .paging_on                        ; (not required on 486+, harmless)
.paging_on:
    PUTS "paging on: cr0 "
    mov eax, cr0
    call puthex
    PUTS " cr3 "
    mov eax, cr3
    call puthex
    PUTS " cr4 "
    mov eax, cr4
    call puthex
    call newline

    ; PSE pages and the global alias.
    mov dword [ALIAS_VADDR + 0x10], 0xcafebabe
    cmp dword [0x400010], 0xcafebabe
    je .alias_ok
    FAIL "4 MiB alias page does not reach physical 0x400000"
.alias_ok:
    mov dword [0x600010], 0x55555555       ; through the identity PSE page
    mov dword [page_dir + 2 * 4], 0x000000 | PTE_P | PTE_RW | PDE_PS | PTE_G
    invlpg [ALIAS_VADDR]
    mov dword [ALIAS_VADDR + 0x200010], 0x11223344
    cmp dword [0x200010], 0x11223344
    jne .remap_bad
    cmp dword [0x600010], 0x55555555
    je .remap_ok
.remap_bad:
    FAIL "INVLPG of a global 4 MiB page did not take effect"
.remap_ok:
    mov dword [page_dir + 2 * 4], 0x400000 | PTE_P | PTE_RW | PDE_PS | PTE_G
    mov eax, cr4
    and eax, ~(1 << 7)                    ; clearing PGE flushes global entries too
    mov cr4, eax
    or eax, 1 << 7
    mov cr4, eax
    cmp dword [ALIAS_VADDR + 0x10], 0xcafebabe
    jne .pge_bad
    cmp dword [ALIAS_VADDR + 0x200010], 0x55555555
    je .pge_ok
.pge_bad:
    FAIL "toggling CR4.PGE did not flush the global alias"
.pge_ok:
    PUTLN "4 MiB pages, global alias, INVLPG and CR4.PGE flush: ok"

    ; CR0.WP: a supervisor write to a read-only page faults (error 3); the handler makes it writable.
    SET_GATE 14, pf_handler, GATE_INT
    mov dword [ro_page + 0x8], 0x77
    mov ecx, 0
    mov eax, ro_page + 0x8
    mov edx, 3                            ; protection, write, supervisor
    call check_pf
    cmp dword [ro_page + 0x8], 0x77
    je .wp_ok
    FAIL "store not retried after the write-protect fault"
.wp_ok:
    mov eax, ro_page
    call page_entry_addr
    mov dword [eax], ro_page + (PTE_P | PTE_US)   ; read-only again, A/D clear
    invlpg [ro_page]

    ; TSS, system call gates, SYSENTER MSRs.
    mov dword [tss + 4], int_stack_top
    mov ax, TSS_SEL
    ltr ax
    SET_GATE 0x80, int80_handler, GATE_INT_USER
    mov ecx, MSR_SYSENTER_CS
    xor edx, edx
    mov eax, KCODE_SEL
    wrmsr
    mov ecx, MSR_SYSENTER_ESP
    mov eax, sysenter_stack_top
    wrmsr
    mov ecx, MSR_SYSENTER_EIP
    mov eax, sysenter_entry
    wrmsr

    ; To ring 3.
    PUTLN "entering ring 3"
    mov [kernel_saved_esp], esp
    push dword UDATA_SEL | 3              ; ss
    push dword user_stack_top             ; esp
    push dword 0x2                        ; eflags: IF=0, IOPL=0
    push dword UCODE_SEL | 3              ; cs
    push dword user_main                  ; eip
    mov ax, UDATA_SEL | 3
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    iret

user_exited:
    mov ax, KDATA_SEL
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    PUTS "back in ring 0, user exit code "
    mov eax, [user_exit_code]
    call putdec
    call newline
    cmp dword [user_exit_code], 0
    je .user_ok
    FAIL "user-mode check failed (exit code = failing check number)"
.user_ok:
    PUTS "int 0x80 calls: "
    mov eax, [int80_count]
    call putdec
    PUTS ", sysenter calls: "
    mov eax, [sysenter_count]
    call putdec
    PUTS ", page faults: "
    mov eax, [pf_count]
    call putdec
    call newline
    cmp dword [int80_count], 3
    jne .counts_bad
    cmp dword [sysenter_count], 2
    jne .counts_bad
    cmp dword [pf_count], 4
    je .counts_ok
.counts_bad:
    FAIL "unexpected number of system calls or page faults"
.counts_ok:
    mov ecx, 1
    mov eax, DEMAND_VADDR + 0x100
    mov edx, 6                            ; not present, write, user
    call check_pf
    mov ecx, 2
    mov eax, ro_page + 0x20
    mov edx, 7                            ; protection, write, user
    call check_pf
    mov ecx, 3
    mov eax, kernel_secret
    mov edx, 5                            ; protection, read, user
    call check_pf

    ; Accessed/dirty bits.
    PUTS "pte demand "
    mov eax, [pt_demand]
    call puthex
    PUTS ", pte rd_page "
    mov eax, rd_page
    call page_entry_addr
    mov eax, [eax]
    call puthex
    PUTS ", pde 3 "
    mov eax, [page_dir + 3 * 4]
    call puthex
    call newline
    mov eax, [pt_demand]
    and eax, PTE_A | PTE_D
    cmp eax, PTE_A | PTE_D
    je .demand_ad
    FAIL "written page lacks accessed/dirty bits"
.demand_ad:
    mov eax, rd_page
    call page_entry_addr
    mov eax, [eax]
    and eax, PTE_A | PTE_D
    cmp eax, PTE_A
    je .rd_ad
    FAIL "read-only page: expected accessed set and dirty clear"
.rd_ad:
    test dword [page_dir + 3 * 4], PTE_A
    jnz .pde_a
    FAIL "page directory entry lacks the accessed bit"
.pde_a:
    cmp dword [demand_page + 0x100], 0x12345678
    je .demand_data
    FAIL "demand page does not hold the value stored from ring 3"
.demand_data:
    jmp pass
