//! Shared helpers: the fixture corpus and the built binaries.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};

pub const SECRET: &str = "It's a Secret to Everybody";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One request description of `tests/fixtures/requests`.
pub struct Request {
    /// `github/push.json`
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }
}

pub fn request(name: &str) -> Request {
    let root = fixtures();
    let path = root.join("requests").join(name);
    let desc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let body = std::fs::read(root.join(desc["body_file"].as_str().unwrap())).unwrap();
    let headers = desc["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    Request { name: name.to_string(), headers, body }
}

/// Every request description, sorted by name.
pub fn all_requests() -> Vec<Request> {
    let mut names = Vec::new();
    for dir in std::fs::read_dir(fixtures().join("requests")).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                names.push(format!(
                    "{}/{}",
                    dir.file_name().unwrap().to_string_lossy(),
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    names.sort();
    names.iter().map(|n| request(n)).collect()
}

/// A built binary of this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "wh-automatad" => PathBuf::from(env!("CARGO_BIN_EXE_wh-automatad")),
        "wh-automata-trigger" => PathBuf::from(env!("CARGO_BIN_EXE_wh-automata-trigger")),
        other => panic!("no binary {other}"),
    }
}
