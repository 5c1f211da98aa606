//! A small WebDriver client for the page's tests: Debian's `chromedriver` driving its headless
//! `chromium`, both started here on loopback and stopped when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One request to chromedriver, its answer read to its Content-Length (chromedriver keeps the
/// connection open after some answers, whatever the request asks).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut text = vec![0u8; length];
    reader.read_exact(&mut text).unwrap();
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

/// What `chromedriver` answered with an error.
#[derive(Debug)]
pub struct DriverError {
    pub error: String,
    pub message: String,
}

impl Browser {
    /// Starts `chromedriver` and a headless `chromium` with an empty profile in `dir`.
    pub fn start(dir: &Path) -> Browser {
        let driver_path = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the page's tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver");
        let addr = crate::standin::free_addr();
        let driver = Command::new(driver_path)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut browser = Browser { driver, addr, session: String::new() };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < until, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1000,760".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        } } });
        let created = browser.call("POST", "/session", Some(caps)).expect("a browser session");
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = request(self.addr, method, path, &body);
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("chromedriver answered {status}: {e}: {text}"));
        if status == 200 {
            Ok(value["value"].clone())
        } else {
            Err(DriverError {
                error: value["value"]["error"].as_str().unwrap_or("").to_string(),
                message: value["value"]["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, DriverError> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn go(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url }))).expect("navigates");
    }

    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None).unwrap().as_str().unwrap_or_default().to_string()
    }

    /// The first element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        self.session_call("POST", "/element", Some(json!({ "using": "css selector", "value": css })))
            .ok()
            .and_then(|v| v[ELEMENT].as_str().map(str::to_string))
    }

    /// The element `css` selects, waited for (up to 10 s).
    pub fn wait_for(&self, css: &str) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(id) = self.find(css) {
                return id;
            }
            if Instant::now() >= until {
                let html = self.script("return document.documentElement.outerHTML;");
                panic!("no element {css:?} on {}: {}", self.url(), html.as_str().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.wait_for(css);
        let v = self.session_call("GET", &format!("/element/{id}/text"), None).unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    pub fn click(&self, css: &str) {
        let id = self.wait_for(css);
        self.session_call("POST", &format!("/element/{id}/click"), Some(json!({}))).expect("clicks");
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.wait_for(css);
        self.session_call("POST", &format!("/element/{id}/value"), Some(json!({ "text": text })))
            .expect("types");
    }

    /// Runs `script` in the page; what it returns.
    pub fn script(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
            .expect("the script runs")
    }

    /// The text of an open alert, confirm or prompt dialog, if one is open.
    pub fn dialog(&self) -> Option<String> {
        match self.session_call("GET", "/alert/text", None) {
            Ok(text) => Some(text.as_str().unwrap_or_default().to_string()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("asking for a dialog: {}: {}", e.error, e.message),
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.session_call("GET", "/screenshot", None).expect("a screenshot");
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
