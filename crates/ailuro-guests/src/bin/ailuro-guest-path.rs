//! `ailuro-guest-path NAME`: print where the bundled guest NAME was built (for scripts).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [name] => match ailuro_guests::guest_path(name) {
            Some(p) => println!("{}", p.display()),
            None => {
                eprintln!("ailuro-guest-path: no bundled guest '{name}' (have: {})", ailuro_guests::GUESTS.join(", "));
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("usage: ailuro-guest-path NAME   (guests: {})", ailuro_guests::GUESTS.join(", "));
            std::process::exit(2);
        }
    }
}
