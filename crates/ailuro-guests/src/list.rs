// The bundled guests, one `guests/<name>.asm` each. Shared by build.rs and lib.rs via include!.
&["hello", "timer", "apic", "paging", "serial", "clock", "cpubound", "smc"]
