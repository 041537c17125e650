//! The device flow's QR code, so a phone can open the sign-in page.
//!
//! Owns: drawing [`DeviceAuthorization::scan_uri`] as a QR code on stderr, only
//! when stderr is a terminal. Must not: change the script contract (the URI and
//! the code alone on their lines, printed before this by the library), or draw
//! anything into a pipe or file.

use std::io::{IsTerminal, Write};

use mailoauth::flows::device::DeviceAuthorization;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// Draw the QR code of the page to open, when stderr is a terminal.
pub fn show(auth: &DeviceAuthorization) {
    let err = std::io::stderr();
    if !err.is_terminal() || std::env::var_os("TERM").is_some_and(|t| t == "dumb") {
        return;
    }
    let Some(text) = render(auth.scan_uri()) else {
        return;
    };
    let mut err = err.lock();
    let _ = writeln!(err, "or scan this with a phone:");
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The QR code of `uri` as lines of half blocks (two modules per character),
/// black on white whatever the terminal's colours, with the quiet zone scanners need.
fn render(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    let art = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Dark)
        .light_color(Dense1x2::Light)
        .quiet_zone(true)
        .build();
    let mut out = String::new();
    for line in art.lines() {
        // 30;107: black on bright white; reset at the end of every line so a
        // resized or scrolled terminal keeps its own colours elsewhere.
        out.push_str("\x1b[30;107m");
        out.push_str(line);
        out.push_str("\x1b[0m\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_half_blocks_in_fixed_colours() {
        let s = render("https://example.test/device?user_code=ABCD-EFGH").unwrap();
        assert!(s.lines().count() > 10);
        for line in s.lines() {
            assert!(line.starts_with("\x1b[30;107m") && line.ends_with("\x1b[0m"));
        }
        assert!(s.contains('█') || s.contains('▀') || s.contains('▄'));
    }
}
