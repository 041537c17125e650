//! Link the `mailoauth` binary as a non-PIE executable on Linux.
//!
//! Why: `mailoauth token` is run by mail clients on every connection, so its
//! start-up is the product's hot path. A PIE binary of this size carries ~11,000
//! relative relocations that the dynamic loader applies on every start (copying
//! each touched page), about a fifth of the cached path's instructions. A non-PIE
//! executable has them resolved at link time. ASLR of the main image is the cost;
//! libraries, heap and stack stay randomised.
fn main() {
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|x| x == "crt-static"));
    // A crt-static build chooses its own (static) link mode; -no-pie would break it.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") && !static_crt {
        println!("cargo:rustc-link-arg-bins=-no-pie");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,lazy");
    }
}
