//! `mailoauth-serve`: see the library's module map.
fn main() {
    std::process::exit(mailoauth_serve::cli::main());
}
