//! `ailuro-guest-path NAME`: print where the bundled guest NAME was built (for scripts).

use ailuro_toolio::{errln, outln};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [name] => match ailuro_guests::guest_path(name) {
            Some(p) => outln!("{}", p.display()),
            None => {
                errln!("ailuro-guest-path: no bundled guest '{name}' (have: {})", ailuro_guests::GUESTS.join(", "));
                std::process::exit(1);
            }
        },
        _ => {
            errln!("usage: ailuro-guest-path NAME   (guests: {})", ailuro_guests::GUESTS.join(", "));
            std::process::exit(2);
        }
    }
}
