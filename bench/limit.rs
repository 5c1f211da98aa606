//! The limit references of `bench/run`: what the hardware allows for a webhook answer, on the
//! daemon's own stack and runtime settings (hyper 1 HTTP/1, hyper-util's Tokio timer, a
//! multi-thread Tokio runtime with its default worker count).
//!
//!     limit reject ADDR     reads the body, answers 401 (the floor of a refused request)
//!     limit ignore ADDR     reads the body, computes its HMAC-SHA256, answers 200 with a short
//!                           JSON body (the floor of an ignored request)
//!
//! Built as an example of the package (`cargo build --release --example limit`), so it is
//! compiled by the tests and never drifts from the dependencies the daemon uses.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::Sha256;

const SECRET: &[u8] = b"bench-secret";

async fn answer(
    req: Request<hyper::body::Incoming>,
    hash: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (status, text): (StatusCode, &'static [u8]) = if hash {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        // Use the result, so that it is not optimised away.
        if tag[0] == 0 && tag[1] == 0 && tag[2] == 0 && tag[3] == 0 {
            (StatusCode::OK, br#"{"status":"ignored","reason":"zero"}"#)
        } else {
            (StatusCode::OK, br#"{"status":"ignored","reason":"branch"}"#)
        }
    } else {
        (StatusCode::UNAUTHORIZED, br#"{"error":"X-Hub-Signature-256 does not match"}"#)
    };
    let mut res = Response::new(Full::new(Bytes::from_static(text)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(res)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, addr) = match args.as_slice() {
        [_, mode, addr] if mode == "reject" || mode == "ignore" => (mode.clone(), addr.clone()),
        _ => {
            eprintln!("usage: limit reject|ignore ADDR");
            std::process::exit(2);
        }
    };
    let hash = mode == "ignore";
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, hash));
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
