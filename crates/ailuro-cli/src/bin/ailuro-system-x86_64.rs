//! `ailuro-system-x86_64`: a PC with a 64-bit x86 CPU (long mode). It boots 32-bit and 64-bit
//! kernels and runs 32-bit multiboot guests, as `qemu-system-x86_64` does.

fn main() {
    std::process::exit(ailuro_cli::main_for(ailuro_machine::GuestArch::X86_64));
}
