//! What a user sees: `curl` (unmodified Linux TCP, a new connection per request) fetching from a
//! tiny HTTP/1.0 server written with the app library. curl sends its request right behind the
//! handshake's final ACK, so every request exercises the segments the daemon must replay: none
//! may wait for Linux's retransmission timeout (≈ 200 ms). 100 sequential requests, each under
//! 20 ms, the body byte-exact. Needs root and curl.
use std::{
    io::ErrorKind,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    daemon::{register, DaemonPair},
    tcp::pattern,
};
use etran::app::{ready, App, ConnId, Listener};

const PORT: u16 = 8080;
const REQUESTS: usize = 100;
const SLOWEST: Duration = Duration::from_millis(20);

/// One client connection of the server.
struct Client {
    id: ConnId,
    request: Vec<u8>,
    /// Response bytes not yet taken by the send buffer (None before the request ended).
    pending: Option<Vec<u8>>,
}

/// Serves `response` to every request until `done`; returns the connections served. Like a
/// real server it sleeps until its port is readable (a busy-polling one would take a whole
/// CPU of two from curl and the daemon); a connection's data comes after the daemon accepted it.
fn serve(app: &mut App, l: &Listener, response: &[u8], done: &dyn Fn() -> bool) -> usize {
    let mut clients: Vec<Client> = Vec::new();
    let mut served = 0;
    let mut buf = [0u8; 4096];
    let mut poll = mio::Poll::new().unwrap();
    poll.registry().register(app, mio::Token(0), mio::Interest::READABLE).unwrap();
    let mut events = mio::Events::with_capacity(4);
    while !done() {
        // Edge-triggered: the timeout covers frames a pass left in the ring.
        poll.poll(&mut events, Some(Duration::from_millis(1))).unwrap();
        app.poll().unwrap();
        while let Some(id) = ready(app.accept(l)).unwrap() {
            clients.push(Client { id, request: Vec::new(), pending: None });
        }
        for c in &mut clients {
            while c.pending.is_none() {
                match app.recv(c.id, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => c.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv: {e}"),
                }
                if c.request.windows(4).any(|w| w == b"\r\n\r\n") {
                    assert!(c.request.starts_with(b"GET / HTTP/1.0\r\n"), "{:?}", c.request);
                    c.pending = Some(response.to_vec());
                }
            }
            if let Some(rest) = c.pending.as_mut().filter(|r| !r.is_empty()) {
                match app.send(c.id, rest) {
                    Ok(n) => drop(rest.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
                if rest.is_empty() {
                    app.close(c.id).unwrap();
                }
            }
        }
        clients.retain(|c| {
            let closed = app.is_closed(c.id);
            if closed {
                assert_eq!(app.stream(c.id).and_then(|s| s.error()), None, "closed cleanly");
                app.remove_connection(c.id);
                served += 1;
            }
            !closed
        });
    }
    served
}

#[test]
fn sequential_curl_requests_are_all_fast_and_exact() {
    let Some(_root) = common::root::alone() else { return };
    let DaemonPair { net, daemon } = DaemonPair::new("etran-curl");
    let mut app = register(&daemon.sock);
    let listener = app.listen(PORT).unwrap();

    let body = pattern(5, 20_000);
    let mut response =
        format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .into_bytes();
    response.extend_from_slice(&body);

    let b = net.b.clone();
    let url = format!("http://10.77.0.1:{PORT}/");
    let times = std::thread::scope(|s| {
        let client = s.spawn(|| {
            (0..REQUESTS)
                .map(|i| {
                    let out = Command::new("ip")
                        .args(["netns", "exec", &b, "curl", "--http1.0", "-sS", "--max-time", "5"])
                        .args(["-w", "#T#%{time_total}", &url])
                        .output()
                        .expect("run curl");
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    assert!(out.status.success(), "request {i}: curl failed: {stderr}");
                    let at = out.stdout.windows(3).rposition(|w| w == b"#T#").expect("timing");
                    assert!(out.stdout[..at] == body[..], "request {i}: body not byte-exact");
                    let secs: f64 = String::from_utf8_lossy(&out.stdout[at + 3..]).parse().unwrap();
                    Duration::from_secs_f64(secs)
                })
                .collect::<Vec<_>>()
        });
        let served = serve(&mut app, &listener, &response, &|| client.is_finished());
        let times = client.join().expect("every request answered");
        // The last connection may still be closing.
        assert!(served >= REQUESTS - 1, "served {served}: {}", daemon.log());
        times
    });
    let mut sorted = times.clone();
    sorted.sort();
    eprintln!(
        "{REQUESTS} curl requests: p50 {:?}, p99 {:?}, max {:?}",
        sorted[REQUESTS / 2],
        sorted[REQUESTS * 99 / 100],
        sorted[REQUESTS - 1]
    );
    let slow: Vec<(usize, Duration)> =
        times.iter().copied().enumerate().filter(|(_, t)| *t > SLOWEST).collect();
    assert!(slow.is_empty(), "requests slower than {SLOWEST:?}: {slow:?}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        app.poll().unwrap();
    }
}
