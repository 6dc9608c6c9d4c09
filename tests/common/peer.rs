//! Interop peers: unmodified Linux programs (a python3 socket script) on one side, an eTran app on
//! the other, moving a deterministic byte stream that the receiving side checks byte for byte
//! without keeping it ([`Pattern`]: the stream repeats with a prime period, so a misplaced
//! segment shows).
use std::{
    io::{BufRead, BufReader, ErrorKind},
    net::SocketAddrV4,
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use etran::app::{ready, App, ConnId, Listener};

pub use etran::pattern::{Pattern, PERIOD};

/// The python3 side: `send` or `recv` `bytes` of pattern `seed`, as the `listen`ing or
/// `connect`ing end. The sender shuts its side down after the last byte and waits for the
/// receiver's close; the receiver reads to EOF, checks every byte, then closes. Prints
/// `listening` when a listener is ready, then `ok <bytes> <seconds>` (from the connection's
/// start to the end of the stream) or `bad <offset>` / `short <bytes>`.
const PY_PEER: &str = r#"
import socket, sys, time
mode, role, host, port, n, sh = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
exec(sys.argv[7])
if role == "listen":
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(8)
    print("listening", flush=True)
    s, _ = ls.accept()
else:
    s = socket.create_connection((host, port), timeout=30)
s.settimeout(120)
t0 = time.monotonic()
off = 0
if mode == "send":
    while off < n:
        k = min(n - off, P)
        a = (off + sh) % P
        s.sendall(two[a:a + k])
        off += k
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
else:
    mv = None
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        i = 0
        while i < len(b):
            k = min(len(b) - i, P)
            a = (off + i + sh) % P
            if b[i:i + k] != two[a:a + k]:
                for j in range(k):
                    if b[i + j] != two[(a + j) % P]:
                        print("bad", off + i + j, flush=True)
                        sys.exit(1)
            i += k
        off += len(b)
    if off != n:
        print("short", off, flush=True)
        sys.exit(1)
print("ok", off, "%.4f" % (time.monotonic() - t0), flush=True)
s.close()
"#;

/// A running python3 peer.
pub struct PyPeer {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl PyPeer {
    /// Starts the peer in namespace `ns`; a listener is ready when this returns.
    pub fn start(
        ns: &str,
        mode: &str,
        role: &str,
        addr: SocketAddrV4,
        bytes: u64,
        seed: u32,
    ) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", PY_PEER, mode, role])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(bytes.to_string())
            .arg(Pattern::new(seed).python_shift().to_string())
            .arg(Pattern::PYTHON)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        // Built before the wait: a failed start drops (kills) it.
        let mut peer = PyPeer { child, out };
        if role == "listen" {
            let mut line = String::new();
            peer.out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "listening", "python3 peer did not start");
        }
        peer
    }

    /// Waits for the peer's verdict: the seconds it reports on success; panics otherwise.
    pub fn finish(mut self, what: &str) -> f64 {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let st = self.child.wait().unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(st.success() && f.first() == Some(&"ok"), "{what}: python3 peer said {line:?}");
        f[2].parse().unwrap()
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `bytes` of pattern `seed` on `id`, closes, and waits until the connection is over
/// (the peer closed and acknowledged our FIN). Returns the time it took.
pub fn etran_send(app: &mut App, id: ConnId, bytes: u64, seed: u32, limit: Duration) -> Duration {
    let pattern = Pattern::new(seed);
    let start = Instant::now();
    let (mut sent, mut closed, mut buf) = (0u64, false, [0u8; 4096]);
    while !app.is_closed(id) {
        assert!(start.elapsed() < limit, "sending stalled at {sent} of {bytes} bytes");
        app.poll().unwrap();
        while sent < bytes {
            let n = (bytes - sent).min(PERIOD as u64) as usize;
            match app.send(id, pattern.at(sent, n)) {
                Ok(k) => sent += k as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("send at {sent}: {e}"),
            }
        }
        if sent == bytes && !closed {
            app.close(id).unwrap();
            closed = true;
        }
        // The peer sends nothing but its FIN: drain to see it.
        match app.recv(id, &mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("the receiving peer sent {n} bytes"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv after {sent} bytes sent: {e}"),
        }
    }
    start.elapsed()
}

/// Receives to the end of the stream on `id`, checking every byte against pattern `seed`;
/// asserts `bytes` arrived, closes and waits for the end. Returns the time until the peer's FIN.
pub fn etran_recv(app: &mut App, id: ConnId, bytes: u64, seed: u32, limit: Duration) -> Duration {
    let pattern = Pattern::new(seed);
    let start = Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let took = loop {
        assert!(start.elapsed() < limit, "receiving stalled at {got} of {bytes} bytes");
        app.poll().unwrap();
        match app.recv(id, &mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => {
                if let Some(at) = pattern.mismatch(got, &buf[..n]) {
                    panic!("wrong byte at offset {at} of {bytes}");
                }
                got += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv at {got}: {e}"),
        }
    };
    assert_eq!(got, bytes, "stream ended early");
    app.close(id).unwrap();
    while !app.is_closed(id) {
        assert!(start.elapsed() < limit, "closing stalled");
        app.poll().unwrap();
    }
    took
}

/// Waits for the next connection on `listener`.
pub fn etran_accept(app: &mut App, listener: &Listener, limit: Duration) -> ConnId {
    let start = Instant::now();
    loop {
        app.poll().unwrap();
        if let Some(id) = ready(app.accept(listener)).unwrap() {
            return id;
        }
        assert!(start.elapsed() < limit, "no connection accepted");
        std::thread::sleep(Duration::from_micros(200));
    }
}
