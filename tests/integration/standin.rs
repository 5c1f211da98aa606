//! A stand-in for the hosts' and chat services' APIs: a real HTTPS server (a test CA made
//! here, trusted by the daemon through `server.ca_file`) that records every request and answers
//! as the test says.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One request received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// How the stand-in answers the `n`th request (from 0): status and JSON body.
pub type Answer = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

/// Answers every request with 201 and a deployment id (GitHub's answers carry an `id`).
pub fn always_ok() -> Answer {
    Arc::new(|_, n| (201, format!("{{\"id\": {}}}", 1000 + n)))
}

pub struct StandIn {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

/// A test CA and a certificate it signed for 127.0.0.1 and localhost; the CA's PEM is added
/// to `dir/test-ca.pem` (the settings' `ca_file`).
fn certificates(dir: &Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "wh-automata test CA");
    ca.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    // Appended: the stand-ins of one test share the daemon's one ca_file.
    use std::io::Write;
    let mut bundle =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("test-ca.pem")).unwrap();
    bundle.write_all(ca_cert.pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config
}

/// A free port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl StandIn {
    /// Starts on a free port.
    pub fn start(dir: &Path, answer: Answer) -> StandIn {
        StandIn::start_at(dir, free_addr(), answer)
    }

    /// Starts on `addr` (a stand-in that was down comes up).
    pub fn start_at(dir: &Path, addr: SocketAddr, answer: Answer) -> StandIn {
        let config = certificates(dir);
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let log = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, log, answer) = (acceptor.clone(), log.clone(), answer.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (log, answer) = (log.clone(), answer.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body =
                                body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let mut seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                headers: parts.headers,
                                body,
                                answered: 0,
                            };
                            let mut all = log.lock().unwrap();
                            let (status, text) = answer(&seen, all.len());
                            seen.answered = status;
                            all.push(seen);
                            drop(all);
                            let mut res = http::Response::new(Full::new(Bytes::from(text)));
                            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        StandIn { addr, seen, _runtime: runtime }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `cond` holds for the requests received (at most 30 s); returns them.
    pub fn wait(&self, what: &str, cond: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.seen();
            if cond(&seen) {
                return seen;
            }
            if std::time::Instant::now() > until {
                let list: Vec<String> =
                    seen.iter().map(|s| format!("{} {} -> {}", s.method, s.path, s.answered)).collect();
                panic!("timed out waiting for {what}; received:\n{}", list.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
