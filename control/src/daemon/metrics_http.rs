//! `/metrics` over HTTP (`[metrics] listen`), for Prometheus.
//!
//! A thread of its own does the socket work (accept, read the request, write the page), so a
//! slow or hostile client costs that thread alone, never the control loop's VRRP timers and
//! never a worker. The page itself is rendered by the control thread, which owns the state:
//! the server asks over a channel and waits at most [`RENDER_TIMEOUT`]. One connection at a
//! time, one request per connection (`Connection: close`): Prometheus scrapes every few
//! seconds, nobody else needs more.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, info, warn};

use crate::exposition::CONTENT_TYPE;

/// How long a client has to send its request, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server waits for the control thread's page.
const RENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read (request line and headers).
const MAX_HEAD: usize = 8192;
/// How often the idle server looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// The server's question to the control thread: the page, please, on this channel.
pub type PageRequest = Sender<String>;

/// Why the metrics listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("metrics.namespace: network namespace `{netns}`: {source}")]
    Netns { netns: String, source: io::Error },
    #[error("metrics server thread: {0}")]
    Thread(io::Error),
}

/// The server's answers so far, by what they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounts {
    /// 200: the page (or the index).
    pub ok: u64,
    /// 400, 404, 405.
    pub client_errors: u64,
    /// 503: the control thread did not render in time.
    pub unavailable: u64,
    /// Clients dropped unanswered: too slow, too long a request, gone before it ended.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    client_errors: AtomicU64,
    unavailable: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn count(&self, status: &str) {
        let c = match status.as_bytes().first() {
            Some(b'2') => &self.ok,
            Some(b'4') => &self.client_errors,
            _ => &self.unavailable,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running server; dropping it stops the thread.
pub struct MetricsServer {
    counters: Arc<Counters>,
    pages: Receiver<PageRequest>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (in `netns` when given) and starts serving.
    pub fn start(addr: SocketAddr, netns: Option<&str>) -> Result<MetricsServer, MetricsError> {
        let listener = {
            let _netns = netns
                .map(netdev::netns::enter)
                .transpose()
                .map_err(|source| MetricsError::Netns {
                    netns: netns.unwrap_or_default().to_string(),
                    source,
                })?;
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?
        };
        let addr = listener.local_addr().unwrap_or(addr);
        listener
            .set_nonblocking(true)
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let (ask, pages) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let thread = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            std::thread::Builder::new()
                .name("vpnlb-metrics".into())
                .spawn(move || serve(&listener, &ask, &stop, &counters))
                .map_err(MetricsError::Thread)?
        };
        info!(%addr, netns = netns.unwrap_or("(own)"), "serving /metrics");
        Ok(MetricsServer {
            counters,
            pages,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// Its answers so far.
    pub fn counts(&self) -> HttpCounts {
        let c = &self.counters;
        HttpCounts {
            ok: c.ok.load(Ordering::Relaxed),
            client_errors: c.client_errors.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// Where it listens (the bound port when `listen` gave port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page asked for, if the server waits for one: the control thread calls this every
    /// round with its renderer.
    pub fn answer(&self, render: impl FnOnce() -> String) {
        let waiting: Vec<PageRequest> = self.pages.try_iter().collect();
        if waiting.is_empty() {
            return;
        }
        let page = render();
        for reply in waiting {
            // The server may have given up waiting on one; then its page is dropped.
            let _ = reply.send(page.clone());
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: &TcpListener,
    ask: &Sender<PageRequest>,
    stop: &AtomicBool,
    counters: &Counters,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => match handle(stream, ask) {
                Ok(status) => counters.count(status),
                Err(e) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, error = %e, "metrics client dropped");
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                warn!(error = %e, "metrics listener: accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head`: HEAD, headers only).
    Metrics {
        head: bool,
    },
    /// `GET /`: a pointer to `/metrics`.
    Index {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads the request line: the method and the path (a query string is ignored).
fn route(head: &[u8]) -> Route {
    let Some(line) = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    match target.split('?').next().unwrap_or(target) {
        "/metrics" => Route::Metrics { head },
        "/" => Route::Index { head },
        _ => Route::NotFound,
    }
}

const INDEX: &str = "vpnlbd: Prometheus metrics are at /metrics\n";

/// Answers one client; the status line's code and text.
fn handle(mut stream: TcpStream, ask: &Sender<PageRequest>) -> io::Result<&'static str> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, content_type, body, head_only) = match route(&head) {
        Route::Metrics { head } => match page(ask) {
            Some(page) => ("200 OK", CONTENT_TYPE, page, head),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "the control thread did not render the page in time\n".into(),
                false,
            ),
        },
        Route::Index { head } => ("200 OK", "text/plain", INDEX.into(), head),
        Route::NotFound => ("404 Not Found", "text/plain", "not found\n".into(), false),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD\n".into(),
            false,
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            false,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    Ok(status)
}

/// The request head, up to its blank line; a request that is too long or too slow is an
/// error (the connection is dropped unanswered).
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request ended",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// Asks the control thread for the page.
fn page(ask: &Sender<PageRequest>) -> Option<String> {
    let (reply, page) = crossbeam_channel::bounded(1);
    ask.send_timeout(reply, RENDER_TIMEOUT).ok()?;
    page.recv_timeout(RENDER_TIMEOUT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            r("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::Index { head: false });
        assert_eq!(r("GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics SPDY/3\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\n\r\n",
        ] {
            assert_eq!(r(bad), Route::BadRequest, "{bad:?}");
        }
        assert_eq!(route(&[0xff, 0xfe, b'\n']), Route::BadRequest);
    }

    /// The whole exchange over loopback: the page with its content type, 404, 405, a client
    /// that never finishes its request, and a control thread that does not answer.
    #[test]
    fn serves_the_page_the_control_thread_renders() {
        // A network of its own: 198.18.0.1 on its loopback, gone with the test.
        let _netns = netdev::netns::enter_new().unwrap();
        netdev::ifconfig::set_up("lo").unwrap();
        netdev::ifconfig::add_address("lo", "198.18.0.1".parse().unwrap(), 32).unwrap();
        let server = MetricsServer::start("198.18.0.1:0".parse().unwrap(), None).unwrap();
        let addr = server.local_addr();
        let exchange = |request: &'static [u8]| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(request).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
        };
        let client = exchange(b"GET /metrics HTTP/1.1\r\nHost: vpnlb\r\n\r\n");
        // The control loop's part: rounds until the question comes.
        let t0 = Instant::now();
        while !client.is_finished() && t0.elapsed() < Duration::from_secs(5) {
            server.answer(|| "vpnlb_up 1\n".to_string());
            std::thread::sleep(Duration::from_millis(5));
        }
        let reply = client.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(reply.contains("Content-Length: 11\r\n"));
        assert!(reply.ends_with("\r\n\r\nvpnlb_up 1\n"));
        let reply = exchange(b"GET /nothing HTTP/1.1\r\n\r\n").join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 404 Not Found\r\n"), "{reply}");
        let reply = exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n")
            .join()
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
        assert!(reply.contains("Allow: GET, HEAD\r\n"));
        // A slow client is dropped after its timeout; the next one is served.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metr").unwrap();
        // Nobody renders: 503 after the render timeout.
        let t0 = Instant::now();
        let reply = exchange(b"GET /metrics HTTP/1.1\r\n\r\n").join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
        assert!(t0.elapsed() >= RENDER_TIMEOUT);
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the slow client got an answer");
        let counted = server.counts();
        assert_eq!(
            (counted.ok, counted.client_errors, counted.unavailable),
            (1, 2, 1),
            "{counted:?}"
        );
        // The slow client's drop is counted once its timeout is over (it is, by now).
        let t0 = Instant::now();
        while server.counts().dropped == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(server.counts().dropped, 1);
    }
}
