//! `ailuro-system-i386`: a PC with a 32-bit x86 CPU.

fn main() {
    std::process::exit(ailuro_cli::main_for(ailuro_machine::GuestArch::I386));
}
