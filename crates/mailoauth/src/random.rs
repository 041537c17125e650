//! Cryptographic randomness (PKCE verifiers, `state`, nonces, keys).
//!
//! Owns: one source of random bytes (ring's `SystemRandom`, i.e. getrandom).
//! Must not: be replaced by a seeded or non-cryptographic generator.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

/// Fill `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the OS random source failed");
}

/// `n` random bytes as unpadded base64url (43 characters for 32 bytes).
pub fn token(n: usize) -> String {
    let mut b = vec![0u8; n];
    fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
