//! The RPCs of `etran bench rpc`, whatever carries them: every request starts with a 16-byte
//! header (as `cp_node`'s messages carry theirs within their length), its body and the
//! response are runs of one [`Pattern`] stream, so the server checks each request and the
//! client each response with a `memcmp`. A request and its response are checked byte for byte.
use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use super::{
    linux_echo::ClientResult,
    workload::{Rng, Workload, SIZE_LIMIT},
};
use crate::pattern::{Pattern, PERIOD};

/// Bytes of the header at the start of every request: its length (the header included), the
/// pattern stream, the stream offset of the body and the length of the response, each u32
/// little-endian.
pub const HEADER: usize = 16;

/// How long the response to a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseSize {
    /// As long as the request: an echo.
    Echo,
    /// This many bytes (`--response-size`).
    Fixed(u32),
    /// cp_node's `--one-way`: 100 bytes, or the request's length if it is shorter.
    OneWay,
}

/// The response bytes of a `--one-way` RPC whose request is longer.
pub const ONE_WAY_BYTES: u32 = 100;

impl ResponseSize {
    /// The response's length for a `request`-byte request.
    pub fn of(self, request: u32) -> u32 {
        match self {
            ResponseSize::Echo => request,
            ResponseSize::Fixed(n) => n,
            ResponseSize::OneWay => request.min(ONE_WAY_BYTES),
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub stream: u32,
    pub offset: u32,
    pub response: u32,
}

impl Header {
    fn write(&self, out: &mut Vec<u8>) {
        for v in [self.len, self.stream, self.offset, self.response] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// The header at the start of `bytes`, if it holds one.
    pub fn read(bytes: &[u8]) -> Option<Header> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(4 * i..4 * i + 4)?.try_into().ok()?))
        };
        Some(Header { len: word(0)?, stream: word(1)?, offset: word(2)?, response: word(3)? })
    }

    fn pattern(&self) -> Pattern {
        Pattern::new(self.stream)
    }
}

/// Appends request `h` (header and body) to `out`.
fn write_request(h: &Header, out: &mut Vec<u8>) {
    h.write(out);
    h.pattern().extend(out, u64::from(h.offset), u64::from(h.len) - HEADER as u64);
}

/// The server's side: checks a whole request and appends its response to `out`.
pub fn answer(request: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    let h = Header::read(request).context("a request shorter than the RPC header")?;
    if h.len as usize != request.len() || h.response > SIZE_LIMIT {
        bail!("a request of {} bytes whose header says {h:?}", request.len());
    }
    if let Some(at) = h.pattern().mismatch(u64::from(h.offset), &request[HEADER..]) {
        bail!("request of stream {} differs at body byte {}", h.stream, at - u64::from(h.offset));
    }
    h.pattern().extend(out, u64::from(h.offset), u64::from(h.response));
    Ok(())
}

/// One RPC in flight.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub header: Header,
    pub sent: Instant,
    /// The server port it went to.
    pub port: u16,
}

impl Call {
    /// Checks `response` byte for byte.
    pub fn check(&self, response: &[u8]) -> anyhow::Result<()> {
        let h = &self.header;
        if response.len() != h.response as usize {
            bail!(
                "a {}-byte response to a request for {} bytes (stream {})",
                response.len(),
                h.response,
                h.stream
            );
        }
        if let Some(at) = h.pattern().mismatch(u64::from(h.offset), response) {
            bail!("response of stream {} differs at byte {}", h.stream, at - u64::from(h.offset));
        }
        Ok(())
    }

    /// An error when this RPC has waited longer than `timeout` at `now`.
    pub fn stalled(&self, now: Instant, timeout: Duration) -> anyhow::Result<()> {
        if now.duration_since(self.sent) > timeout {
            bail!(
                "an RPC ({} B request, {} B response, port {}) got no response within {timeout:?}",
                self.header.len,
                self.header.response,
                self.port
            );
        }
        Ok(())
    }
}

/// One RPC slot's stream of requests to one server port: sizes drawn from the workload,
/// bodies from its pattern stream.
#[derive(Debug, Clone)]
pub struct Caller {
    stream: u32,
    offset: u32,
    rng: Rng,
    workload: Workload,
    response: ResponseSize,
    port: u16,
}

impl Caller {
    /// Slot `stream` (its pattern stream and its random sizes' seed), sending to `port`.
    pub fn new(stream: u32, workload: Workload, response: ResponseSize, port: u16) -> Caller {
        let rng = Rng::new(u64::from(stream) + 1);
        Caller { stream, offset: 0, rng, workload, response, port }
    }

    /// Appends the next request to `out`, sent now.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Call {
        let len = self.workload.size_at(self.rng.unit()).max(HEADER as u32);
        let header = Header {
            len,
            stream: self.stream,
            offset: self.offset,
            response: self.response.of(len),
        };
        self.offset = ((u64::from(self.offset) + u64::from(len)) % PERIOD as u64) as u32;
        write_request(&header, out);
        Call { header, sent: Instant::now(), port: self.port }
    }

    /// The next request as its own buffer.
    pub fn next(&mut self) -> (Call, Vec<u8>) {
        let mut buf = Vec::new();
        let call = self.next_into(&mut buf);
        (call, buf)
    }
}

/// One connection's RPC exchange on a byte stream (TCP: Linux's or eTran's): its one RPC in
/// flight, the request bytes still to send, the response bytes so far.
pub struct Exchange {
    caller: Caller,
    call: Option<Call>,
    out: Vec<u8>,
    written: usize,
    response: Vec<u8>,
}

impl Exchange {
    pub fn new(caller: Caller) -> Exchange {
        Exchange { caller, call: None, out: Vec::new(), written: 0, response: Vec::new() }
    }

    /// Starts the next RPC: its request waits in [`Exchange::unsent`].
    pub fn start(&mut self) {
        self.out.clear();
        self.written = 0;
        self.call = Some(self.caller.next_into(&mut self.out));
    }

    pub fn in_flight(&self) -> Option<&Call> {
        self.call.as_ref()
    }

    /// The request bytes not sent yet.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.written..]
    }

    pub fn sent(&mut self, n: usize) {
        self.written += n;
    }

    /// How far the RPC in flight got, for an error about it.
    pub fn progress(&self) -> String {
        let want = self.call.map_or(0, |c| c.header.response);
        format!(
            "request {} of {} bytes written, response {} of {want} bytes read",
            self.written,
            self.out.len(),
            self.response.len()
        )
    }

    /// Takes response bytes read at `now`. When they complete the response, checks it, counts
    /// it in `result` if `now` is before `deadline` (after it the RPCs in flight drain
    /// uncounted) and returns true: the exchange is then idle.
    pub fn on_response(
        &mut self,
        data: &[u8],
        now: Instant,
        deadline: Instant,
        result: &mut RpcResult,
    ) -> anyhow::Result<bool> {
        let Some(call) = self.call else { bail!("a response to no request") };
        self.response.extend_from_slice(data);
        let want = call.header.response as usize;
        if self.response.len() < want {
            return Ok(false);
        }
        if self.response.len() > want {
            bail!("{} bytes more than the response", self.response.len() - want);
        }
        if now < deadline {
            result.complete(&call, &self.response, now)?;
        } else {
            call.check(&self.response)?;
        }
        self.response.clear();
        self.call = None;
        Ok(true)
    }
}

/// The RPCs completed over an interval (a second of cp_node's per-second lines): their RTTs,
/// request and response bytes.
pub struct Interval {
    rtt_ns: Histogram<u64>,
    rpcs: u64,
    request_bytes: u64,
    response_bytes: u64,
}

impl Default for Interval {
    fn default() -> Interval {
        Interval {
            rtt_ns: super::support::latency_histogram(),
            rpcs: 0,
            request_bytes: 0,
            response_bytes: 0,
        }
    }
}

impl Interval {
    fn record(&mut self, ns: u64, request: u32, response: usize) {
        self.rtt_ns.saturating_record(ns);
        self.rpcs += 1;
        self.request_bytes += u64::from(request);
        self.response_bytes += response as u64;
    }

    fn add(&mut self, other: &Interval) {
        // Both histograms have the same bounds; a value past them was saturated already.
        let _ = self.rtt_ns.add(&other.rtt_ns);
        self.rpcs += other.rpcs;
        self.request_bytes += other.request_bytes;
        self.response_bytes += other.response_bytes;
    }

    /// cp_node's per-second line for the clients, over `secs` seconds.
    pub fn line(&self, secs: f64) -> String {
        let us = |q: f64| self.rtt_ns.value_at_quantile(q) as f64 / 1000.0;
        let per_req =
            if self.rpcs == 0 { 0.0 } else { self.request_bytes as f64 / self.rpcs as f64 };
        format!(
            "clients: {:.2} Kops/sec, {:.2} Gbps out, {:.2} Gbps in, RTT (us) P50 {:.2} P99 {:.2} \
             P99.9 {:.2}, avg. req. length {:.1} bytes",
            self.rpcs as f64 / 1000.0 / secs,
            8.0 * self.request_bytes as f64 / 1e9 / secs,
            8.0 * self.response_bytes as f64 / 1e9 / secs,
            us(0.5),
            us(0.99),
            us(0.999),
            per_req,
        )
    }
}

/// What every client thread completed since the last per-second line: each merges its own
/// [`Interval`] in now and then ([`RpcResult::publish`]), the line takes it all.
#[derive(Default)]
pub struct Seconds(Mutex<Interval>);

impl Seconds {
    /// Everything merged since the last call.
    pub fn take(&self) -> Interval {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

/// How often a client thread merges its RPCs into the shared [`Seconds`].
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// RPCs completed and their response bytes checked, of one client host or server port.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    pub rpcs: u64,
    pub verified_bytes: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.rpcs += o.rpcs;
        self.verified_bytes += o.verified_bytes;
    }
}

/// What a client thread measured: the totals (RPCs as messages, response bytes checked), the
/// request bytes, and the round-trip times by request size decile of the workload.
pub struct RpcResult {
    pub total: ClientResult,
    pub request_bytes: u64,
    /// Upper bounds of the size buckets.
    pub bounds: [u32; 10],
    pub by_size: Vec<Histogram<u64>>,
    /// Open loop: arrivals that found every RPC slot of their thread busy.
    pub late: u64,
    /// With `--dump-times`: every RPC counted, (request length, RTT in ns).
    pub times: Option<Vec<(u32, u64)>>,
    /// The RPCs counted by client host and by server port.
    pub by_host: BTreeMap<u8, Tally>,
    pub by_port: BTreeMap<u16, Tally>,
    /// The testbed host of the thread recording.
    host: u8,
    /// The RPCs not yet merged into the per-second lines, and when they last were.
    second: Interval,
    published: Option<Instant>,
}

impl RpcResult {
    pub fn new(workload: &Workload) -> RpcResult {
        RpcResult {
            total: ClientResult::new(),
            request_bytes: 0,
            bounds: workload.deciles(),
            by_size: (0..10).map(|_| super::support::latency_histogram()).collect(),
            late: 0,
            times: None,
            by_host: BTreeMap::new(),
            by_port: BTreeMap::new(),
            host: 1,
            second: Interval::default(),
            published: None,
        }
    }

    /// Also keeps every RPC's request length and RTT ([`RpcResult::times`]) when `on`.
    pub fn keeping_times(mut self, on: bool) -> RpcResult {
        self.times = on.then(Vec::new);
        self
    }

    /// Counts the RPCs recorded from now on as client host `host`'s (host 1 by default).
    pub fn on_host(mut self, host: u8) -> RpcResult {
        self.host = host;
        self
    }

    /// Checks `response` to `call` and records its round trip, ended at `now`.
    pub fn complete(&mut self, call: &Call, response: &[u8], now: Instant) -> anyhow::Result<()> {
        call.check(response)?;
        let ns = now.duration_since(call.sent).as_nanos() as u64;
        self.total.rtt_ns.saturating_record(ns);
        self.total.messages += 1;
        self.total.verified_bytes += response.len() as u64;
        self.request_bytes += u64::from(call.header.len);
        let b = self.bounds.iter().position(|&u| call.header.len <= u).unwrap_or(9);
        self.by_size[b].saturating_record(ns);
        if let Some(t) = &mut self.times {
            t.push((call.header.len, ns));
        }
        let tally = Tally { rpcs: 1, verified_bytes: response.len() as u64 };
        *self.by_host.entry(self.host).or_default() += tally;
        *self.by_port.entry(call.port).or_default() += tally;
        self.second.record(ns, call.header.len, response.len());
        Ok(())
    }

    /// Merges the RPCs completed since the last merge into `seconds`, if a while passed (the
    /// threads share a lock, not a lock a pass).
    pub fn publish(&mut self, seconds: &Seconds, now: Instant) {
        if self.published.is_some_and(|t| now.duration_since(t) < PUBLISH_EVERY) {
            return;
        }
        self.published = Some(now);
        seconds.0.lock().expect("not poisoned").add(&std::mem::take(&mut self.second));
    }

    pub fn merge(&mut self, other: &RpcResult) -> anyhow::Result<()> {
        self.total.merge(&other.total)?;
        self.request_bytes += other.request_bytes;
        self.late += other.late;
        if let Some(t) = &other.times {
            self.times.get_or_insert_with(Vec::new).extend_from_slice(t);
        }
        for (&h, &t) in &other.by_host {
            *self.by_host.entry(h).or_default() += t;
        }
        for (&p, &t) in &other.by_port {
            *self.by_port.entry(p).or_default() += t;
        }
        for (a, b) in self.by_size.iter_mut().zip(&other.by_size) {
            a.add(b)?;
        }
        Ok(())
    }
}

/// A client thread's measured window, from the common start to its deadline (RPCs completed
/// after it are checked, not counted; the loop runs on while RPCs are in flight), and the check,
/// every `every`, that no RPC in flight has waited past the timeout. Every engine's client loop
/// runs one.
pub struct ClientWindow {
    deadline: Instant,
    measuring: bool,
    last_check: Instant,
    every: Duration,
    timeout: Duration,
}

impl ClientWindow {
    /// Opens `result`'s window, which ends at `deadline`; stalls (RPCs waiting longer than
    /// `timeout`) are looked for every `every`.
    pub fn open(
        result: &mut RpcResult,
        deadline: Instant,
        every: Duration,
        timeout: Duration,
    ) -> ClientWindow {
        result.total.window_starts();
        ClientWindow { deadline, measuring: true, last_check: Instant::now(), every, timeout }
    }

    /// Whether the window is still open.
    pub fn measuring(&self) -> bool {
        self.measuring
    }

    /// At `now`: ends `result`'s window once the deadline passed, and, every `every`, fails if
    /// an RPC of `in_flight` stalled.
    pub fn tick<'c>(
        &mut self,
        now: Instant,
        result: &mut RpcResult,
        in_flight: impl IntoIterator<Item = &'c Call>,
    ) -> anyhow::Result<()> {
        if self.measuring && now >= self.deadline {
            result.total.window_ends();
            self.measuring = false;
        }
        if now.duration_since(self.last_check) >= self.every {
            self.last_check = now;
            for call in in_flight {
                call.stalled(now, self.timeout)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::workload::MAX_SIZE;

    #[test]
    fn requests_are_answered_and_responses_checked() {
        for (workload, response) in [
            (Workload::Fixed(16), ResponseSize::Echo),
            (Workload::Fixed(70_000), ResponseSize::Fixed(5)),
            (Workload::parse("w3", 1, MAX_SIZE).unwrap(), ResponseSize::Echo),
            (Workload::parse("w4", 1, MAX_SIZE).unwrap(), ResponseSize::OneWay),
        ] {
            let mut caller = Caller::new(3, workload, response, 7700);
            let mut result = RpcResult::new(&workload);
            for _ in 0..50 {
                let (call, req) = caller.next();
                assert_eq!(req.len(), call.header.len as usize);
                assert!(req.len() >= HEADER);
                let mut resp = Vec::new();
                answer(&req, &mut resp).unwrap();
                let want = match response {
                    ResponseSize::Echo => call.header.len,
                    ResponseSize::Fixed(n) => n,
                    ResponseSize::OneWay => call.header.len.min(100),
                };
                assert_eq!(resp.len() as u32, want);
                result.complete(&call, &resp, Instant::now()).unwrap();
                if !resp.is_empty() {
                    let mut bad = resp.clone();
                    bad[resp.len() / 2] ^= 0x40;
                    assert!(call.check(&bad).is_err());
                }
                assert!(call.check(&resp[1..]).is_err(), "a short response");
                let mut bad = req.clone();
                *bad.last_mut().unwrap() ^= 1;
                if bad.len() > HEADER {
                    let e = answer(&bad, &mut Vec::new()).unwrap_err().to_string();
                    assert!(e.contains("differs"), "{e}");
                }
                assert!(answer(&req[..req.len() - 1], &mut Vec::new()).is_err());
            }
            assert_eq!(result.total.messages, 50);
            assert!(result.request_bytes >= 50 * HEADER as u64);
            assert_eq!(result.by_size.iter().map(|h| h.len()).sum::<u64>(), 50);
        }
        assert!(answer(&[0; 8], &mut Vec::new()).is_err());
    }

    /// cp_node's per-second line, from what two threads merged: 1,000 RPCs of 1,000 B
    /// requests and 100 B responses in half a second, RTTs 1..=1000 us (the percentiles as the
    /// latency histogram resolves them).
    #[test]
    fn per_second_lines_speak_cp_node() {
        let seconds = Seconds::default();
        let w = Workload::Fixed(1000);
        let (mut a, mut b) = (RpcResult::new(&w), RpcResult::new(&w));
        let mut caller = Caller::new(1, w, ResponseSize::OneWay, 7700);
        let t0 = Instant::now();
        for i in 0..1000u64 {
            let (mut call, req) = caller.next();
            call.sent = t0;
            let mut resp = Vec::new();
            answer(&req, &mut resp).unwrap();
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            r.complete(&call, &resp, t0 + Duration::from_micros(i + 1)).unwrap();
        }
        a.publish(&seconds, t0);
        b.publish(&seconds, t0);
        assert_eq!(
            seconds.take().line(0.5),
            "clients: 2.00 Kops/sec, 0.02 Gbps out, 0.00 Gbps in, RTT (us) P50 500.22 P99 \
             990.21 P99.9 999.42, avg. req. length 1000.0 bytes"
        );
        assert!(seconds.take().line(1.0).contains("0.00 Kops/sec"), "taken");
        // A thread merges at most every 10 ms.
        let (call, req) = caller.next();
        let mut resp = Vec::new();
        answer(&req, &mut resp).unwrap();
        a.complete(&call, &resp, Instant::now()).unwrap();
        a.publish(&seconds, t0 + Duration::from_millis(5));
        assert_eq!(seconds.take().rpcs, 0);
        a.publish(&seconds, t0 + PUBLISH_EVERY);
        assert_eq!(seconds.take().rpcs, 1);
    }

    /// Each RPC is counted under its client's host and its server port, and merging adds them.
    #[test]
    fn rpcs_are_counted_by_host_and_port() {
        let w = Workload::Fixed(100);
        let mut total = RpcResult::new(&w);
        for (host, ports) in [(1, [7700, 7701, 7700]), (2, [7701, 7701, 7701])] {
            let mut r = RpcResult::new(&w).on_host(host);
            for port in ports {
                let (call, req) = Caller::new(5, w, ResponseSize::Fixed(10), port).next();
                let mut resp = Vec::new();
                answer(&req, &mut resp).unwrap();
                r.complete(&call, &resp, Instant::now()).unwrap();
            }
            total.merge(&r).unwrap();
        }
        let t = |rpcs| Tally { rpcs, verified_bytes: rpcs * 10 };
        assert_eq!(total.by_host.into_iter().collect::<Vec<_>>(), [(1, t(3)), (2, t(3))]);
        assert_eq!(total.by_port.into_iter().collect::<Vec<_>>(), [(7700, t(2)), (7701, t(4))]);
    }

    #[test]
    fn two_callers_send_different_bytes_and_a_stall_is_one_line() {
        let (mut a, mut b) = (
            Caller::new(1, Workload::Fixed(100), ResponseSize::Echo, 7700),
            Caller::new(2, Workload::Fixed(100), ResponseSize::Echo, 7701),
        );
        let ((ca, ra), (cb, rb)) = (a.next(), b.next());
        assert_ne!(ra[HEADER..], rb[HEADER..]);
        let mut resp = Vec::new();
        answer(&ra, &mut resp).unwrap();
        assert!(cb.check(&resp).is_err(), "another stream's response");
        let later = ca.sent + Duration::from_secs(6);
        assert!(ca.stalled(later - Duration::from_secs(2), Duration::from_secs(5)).is_ok());
        let e = ca.stalled(later, Duration::from_secs(5)).unwrap_err().to_string();
        assert!(e.contains("port 7700) got no response within 5s") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn an_exchange_tells_how_far_its_rpc_got() {
        let mut ex =
            Exchange::new(Caller::new(1, Workload::Fixed(100), ResponseSize::Fixed(10), 7700));
        ex.start();
        let len = ex.unsent().len();
        ex.sent(len - 4);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut result = RpcResult::new(&Workload::Fixed(100));
        assert!(!ex.on_response(&[0; 3], Instant::now(), deadline, &mut result).unwrap());
        assert_eq!(
            ex.progress(),
            format!("request {} of {len} bytes written, response 3 of 10 bytes read", len - 4)
        );
    }

    #[test]
    fn a_client_window_ends_at_its_deadline_and_looks_for_stalls_every_slice() {
        let mut result = RpcResult::new(&Workload::Fixed(100));
        let start = Instant::now();
        let (slice, timeout) = (Duration::from_millis(10), Duration::from_secs(5));
        let mut w = ClientWindow::open(&mut result, start + Duration::from_secs(1), slice, timeout);
        assert!(w.measuring() && result.total.cpu().is_some());
        let (call, _) = Caller::new(1, Workload::Fixed(100), ResponseSize::Echo, 7700).next();
        let stalled = call.sent + Duration::from_secs(6);
        // Not looked at within a slice of the last look (the window opened at `start`).
        w.tick(start, &mut result, [&call]).unwrap();
        assert!(w.measuring(), "before the deadline");
        w.tick(start + Duration::from_secs(1), &mut result, std::iter::empty()).unwrap();
        assert!(!w.measuring(), "at the deadline");
        w.tick(stalled, &mut result, std::iter::empty()).unwrap();
        assert!(w.tick(stalled, &mut result, [&call]).is_ok(), "the last look was at `stalled`");
        let e = w.tick(stalled + slice, &mut result, [&call]).unwrap_err().to_string();
        assert!(e.contains("got no response within 5s"), "{e}");
    }
}
