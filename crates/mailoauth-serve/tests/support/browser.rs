//! A real headless browser for the page tests: Debian's chromium driven through
//! chromedriver over the WebDriver protocol (plain HTTP + JSON, spoken here
//! with std, so no client crate is needed). A screenshot is saved on failure.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one browser session; both stop on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    /// Where a failing test's screenshot goes.
    pub screenshot: PathBuf,
}

impl Browser {
    pub fn start() -> Browser {
        for (p, pkg) in [
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/chromedriver", "chromium-driver"),
        ] {
            assert!(
                std::path::Path::new(p).exists(),
                "this test needs a real browser: install it with `apt-get install -y chromium chromium-driver` (or run .ci/run); {pkg} is missing"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: chromium's helpers go with it on drop, even when
        // a failing test never closed its session.
        let driver = Command::new("/usr/bin/chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            screenshot: std::env::temp_dir().join("mailoauth-serve-failure.png"),
            _profile: profile,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", b._profile.path().display())]
            }
        }}});
        let v = b.wd("POST", "/session", Some(caps));
        b.session = v["value"]["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        b
    }

    fn wd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // chromedriver keeps connections open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => raw.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        self.wd(method, &format!("/session/{}{what}", self.session), body)
    }

    /// Open `url` and wait for the page (WebDriver waits for the load).
    pub fn open(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None)["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The visible text of the page.
    pub fn text(&self) -> String {
        let el = self.find("body");
        self.cmd("GET", &format!("/element/{el}/text"), None)["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The first element matching a CSS selector (panics, with a screenshot, if none).
    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match v["value"][ELEMENT].as_str() {
            Some(id) => id.to_owned(),
            None => {
                self.save_screenshot();
                panic!(
                    "no `{css}` on {} ({}): {v}; screenshot {}",
                    self.url(),
                    self.title(),
                    self.screenshot.display()
                )
            }
        }
    }

    /// Press a key on the focused element (keyboard-only use).
    pub fn keys(&self, css: &str, keys: &str) {
        let el = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": keys })),
        );
    }

    /// Resize the window (a wide screen, or a phone's width).
    pub fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// An attribute (or property) of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css);
        self.cmd("GET", &format!("/element/{el}/property/{name}"), None)["value"]
            .as_str()
            .map(str::to_owned)
    }

    /// The cookies of the current page, HttpOnly ones included (name, value,
    /// path, httpOnly, sameSite, …).
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Set a cookie for the current page's site (a forged session, say).
    pub fn add_cookie(&self, name: &str, value: &str, path: &str) {
        self.cmd(
            "POST",
            "/cookie",
            Some(json!({"cookie": {"name": name, "value": value, "path": path}})),
        );
    }

    /// Type `text` into the input matching `css`, then press Enter (a form
    /// sent with the keyboard alone).
    pub fn type_and_submit(&self, css: &str, text: &str) {
        self.keys(css, text);
        self.keys(css, "\u{E007}");
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Wait until the title is `title` (the provider's redirects take a moment).
    pub fn wait_for_title(&self, title: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.title() != title {
            if Instant::now() > deadline {
                self.save_screenshot();
                panic!(
                    "the page `{}` at {} never became `{title}`: {}; screenshot {}",
                    self.title(),
                    self.url(),
                    self.text(),
                    self.screenshot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn save_screenshot(&self) {
        use base64::Engine;
        if let Some(b64) = self.cmd("GET", "/screenshot", None)["value"].as_str()
            && let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            let _ = std::fs::write(&self.screenshot, png);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.wd("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
