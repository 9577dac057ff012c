//! A static-file HTTP/1.1 server on loopback (hyper) for the remote-shard tests, with `Range`
//! and `If-Match` support and faults on demand: cut the next N response bodies after K bytes
//! (the connection is dropped mid-shard), stop (listener closed, open connections killed: new
//! connections are refused) and come back, serve slowly (per-response byte rate and a latency
//! before the headers). Started and stopped by the tests themselves; binds 127.0.0.1 only.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Default)]
struct Ctl {
    files: Mutex<HashMap<String, Bytes>>,
    up: AtomicBool,
    listening: AtomicBool,
    cuts_left: AtomicU64,
    cut_after: AtomicU64,
    rate: AtomicU64,
    latency_ms: AtomicU64,
    conns: Mutex<Vec<tokio::task::AbortHandle>>,
    requests: AtomicU64,
    gets: AtomicU64,
    range_gets: AtomicU64,
    cuts: AtomicU64,
    bytes_sent: AtomicU64,
}

/// The server; dropped = stopped.
pub struct Httpd {
    addr: SocketAddr,
    ctl: Arc<Ctl>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Httpd {
    /// Start on 127.0.0.1 with a free port.
    pub fn start() -> Httpd {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("test-httpd")
            .build()
            .unwrap();
        let ctl = Arc::new(Ctl::default());
        ctl.up.store(true, Ordering::SeqCst);
        let c = ctl.clone();
        rt.spawn(async move { serve(addr, Some(std_listener), c).await });
        let s = Httpd { addr, ctl, rt: Some(rt) };
        s.wait_listening(true);
        s
    }

    /// `http://127.0.0.1:PORT/` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Serve `bytes` at `/path`.
    pub fn put(&self, path: &str, bytes: Vec<u8>) {
        self.ctl.files.lock().unwrap().insert(path.trim_start_matches('/').to_string(), Bytes::from(bytes));
    }

    /// The next `n` response bodies stop after `after` bytes and the connection is dropped.
    pub fn cut_next(&self, n: u64, after: u64) {
        self.ctl.cut_after.store(after, Ordering::SeqCst);
        self.ctl.cuts_left.store(n, Ordering::SeqCst);
    }

    /// Serve every body at `bytes_per_sec` (0 = full speed) after `latency` before the headers.
    pub fn throttle(&self, bytes_per_sec: u64, latency: Duration) {
        self.ctl.rate.store(bytes_per_sec, Ordering::SeqCst);
        self.ctl.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Close the listener (new connections are refused) and kill every open connection.
    pub fn stop(&self) {
        self.ctl.up.store(false, Ordering::SeqCst);
        self.wait_listening(false);
    }

    /// Listen again on the same port.
    pub fn resume(&self) {
        self.ctl.up.store(true, Ordering::SeqCst);
        self.wait_listening(true);
    }

    /// Stop now and come back after `d` (in the background).
    pub fn down_for(&self, d: Duration) -> std::thread::JoinHandle<()> {
        self.stop();
        let ctl = self.ctl.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            ctl.up.store(true, Ordering::SeqCst);
        })
    }

    fn wait_listening(&self, want: bool) {
        let t = Instant::now();
        while self.ctl.listening.load(Ordering::SeqCst) != want {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "test server did not {}",
                if want { "start" } else { "stop" }
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Requests received, whatever the answer (404s included).
    pub fn requests(&self) -> u64 {
        self.ctl.requests.load(Ordering::SeqCst)
    }
    /// GET requests answered with a body (200 or 206).
    pub fn gets(&self) -> u64 {
        self.ctl.gets.load(Ordering::SeqCst)
    }
    /// GET requests with a `Range` header answered with 206.
    pub fn range_gets(&self) -> u64 {
        self.ctl.range_gets.load(Ordering::SeqCst)
    }
    /// Bodies cut on purpose.
    pub fn cuts(&self) -> u64 {
        self.ctl.cuts.load(Ordering::SeqCst)
    }
    /// Body bytes written.
    pub fn bytes_sent(&self) -> u64 {
        self.ctl.bytes_sent.load(Ordering::SeqCst)
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        self.ctl.up.store(false, Ordering::SeqCst);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(addr: SocketAddr, mut first: Option<std::net::TcpListener>, ctl: Arc<Ctl>) {
    loop {
        if !ctl.up.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let listener = match first.take() {
            Some(l) => tokio::net::TcpListener::from_std(l).unwrap(),
            None => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        ctl.listening.store(true, Ordering::SeqCst);
        while ctl.up.load(Ordering::SeqCst) {
            tokio::select! {
                r = listener.accept() => {
                    if let Ok((sock, _)) = r {
                        let c = ctl.clone();
                        let h = tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| handle(req, c.clone()));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                                .await;
                        });
                        let mut conns = ctl.conns.lock().unwrap();
                        conns.retain(|h| !h.is_finished());
                        conns.push(h.abort_handle());
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
        drop(listener);
        for h in ctl.conns.lock().unwrap().drain(..) {
            h.abort();
        }
        ctl.listening.store(false, Ordering::SeqCst);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(text.to_string())).map_err(|never| match never {}).boxed_unsync();
    Response::builder().status(status).body(body).unwrap()
}

/// ETag of `data`: FNV-1a of the bytes and the length.
fn etag(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", data.len())
}

/// `bytes=S-` or `bytes=S-E` → (S, E exclusive) within `len`.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let (s, e) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = s.parse().ok()?;
    let end = if e.is_empty() { len } else { (e.parse::<u64>().ok()? + 1).min(len) };
    (start < end).then_some((start, end))
}

async fn handle(req: Request<Incoming>, ctl: Arc<Ctl>) -> Result<Response<Body>, Infallible> {
    ctl.requests.fetch_add(1, Ordering::SeqCst);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET only"));
    }
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some(data) = ctl.files.lock().unwrap().get(&path).cloned() else {
        return Ok(plain(StatusCode::NOT_FOUND, "no such file"));
    };
    let tag = etag(&data);
    if let Some(m) = req.headers().get(hyper::header::IF_MATCH) {
        if m.to_str().ok() != Some(tag.as_str()) && m.to_str().ok() != Some("*") {
            return Ok(plain(StatusCode::PRECONDITION_FAILED, "etag changed"));
        }
    }
    let len = data.len() as u64;
    let range = match req.headers().get(hyper::header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => match parse_range(v, len) {
            Some(r) => Some(r),
            None => {
                let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE, "bad range");
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, format!("bytes */{len}").parse().unwrap());
                return Ok(r);
            }
        },
        None => None,
    };
    let latency = ctl.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let (start, end) = range.unwrap_or((0, len));
    let mut resp = Response::builder()
        .header(hyper::header::CONTENT_LENGTH, end - start)
        .header(hyper::header::ETAG, tag)
        .header(hyper::header::ACCEPT_RANGES, "bytes")
        .header(hyper::header::LAST_MODIFIED, "Tue, 01 Sep 2026 00:00:00 GMT");
    if range.is_some() {
        resp = resp
            .status(StatusCode::PARTIAL_CONTENT)
            .header(hyper::header::CONTENT_RANGE, format!("bytes {start}-{}/{len}", end - 1));
        ctl.range_gets.fetch_add(1, Ordering::SeqCst);
    } else {
        resp = resp.status(StatusCode::OK);
    }
    ctl.gets.fetch_add(1, Ordering::SeqCst);
    if req.method() == Method::HEAD {
        return Ok(resp.body(Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()).unwrap());
    }
    let cut = ctl
        .cuts_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
        .then(|| ctl.cut_after.load(Ordering::SeqCst));
    let body = data.slice(start as usize..end as usize);
    struct St {
        body: Bytes,
        pos: usize,
        cut: Option<u64>,
        done: bool,
        ctl: Arc<Ctl>,
    }
    const CHUNK: usize = 4096;
    let st = St { body, pos: 0, cut, done: false, ctl: ctl.clone() };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done || st.pos >= st.body.len() {
            return None;
        }
        let mut n = CHUNK.min(st.body.len() - st.pos);
        if let Some(c) = st.cut {
            if st.pos as u64 >= c {
                // let hyper flush what was sent (it writes when the body is pending), then drop
                tokio::time::sleep(Duration::from_millis(30)).await;
                st.done = true;
                st.ctl.cuts.fetch_add(1, Ordering::SeqCst);
                return Some((Err(std::io::Error::other("test server: connection cut")), st));
            }
            n = n.min((c - st.pos as u64) as usize);
        }
        let rate = st.ctl.rate.load(Ordering::SeqCst);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        let chunk = st.body.slice(st.pos..st.pos + n);
        st.pos += n;
        st.ctl.bytes_sent.fetch_add(n as u64, Ordering::SeqCst);
        Some((Ok(chunk), st))
    });
    let body = StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync();
    Ok(resp.body(body).unwrap())
}
