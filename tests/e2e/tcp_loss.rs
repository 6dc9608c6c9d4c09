//! Loss recovery against Linux TCP: 10 MB through a switch that loses 1 % of frames (both
//! directions, ACKs included), eTran receiving from a Linux sender and a Linux receiver getting
//! it from eTran, every byte checked, each timed against Linux to Linux on the same switch in
//! the same run. Also checks that eTran resent nothing the network had not lost: the Linux
//! receiver reports every duplicate it gets with a D-SACK (counted in its netstat), and eTran's
//! resent segments stay within the switch's drops; and that eTran's receiver kept what arrived
//! out of order, so the Linux sender resent no more than the switch lost. Needs root.
//!
//! Two switches: one without a rate limit, where the hosts' CPUs set the pace (eTran's sending
//! app streams, so its compat port batches its frames: `app::bursts`), and one with a 1 Gbit/s
//! bottleneck, where the link sets the pace and ACKs return while the sender goes on, as on a
//! real network.
//!
//! The times are printed (run with --nocapture). Random loss makes them noisy, so each transfer
//! runs `ROUNDS` times (`ETRAN_TEST_ROUNDS` overrides it) and the medians are compared against
//! the 2x target (see `MAX_RATIO`).
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{
    daemon::EtranHosts,
    netns::{in_netns, net_stat},
    peer::etran_accept,
    tcp::pattern,
};
use etran::{app::App, testbed::Spec};

const SIZE: usize = 10 << 20;
/// The switch's loss rate; ETRAN_TEST_LOSS overrides it (0 gives the loss-free baseline).
const LOSS: f64 = 0.01;
/// Five, so that one round with a retransmission timeout (about 1 in 16 of eTran's sending
/// rounds, and Linux's senders have them too) does not move a median.
const ROUNDS: usize = 5;
/// The target, asserted on the medians in release builds: eTran takes at most 2x
/// Linux's time both ways (measured without a rate limit: 1.3-1.7x receiving, 1.65-1.8x
/// sending; behind the bottleneck 1.0-1.1x). Debug builds (the suite's) are slower and their
/// times are only printed: there the test checks the bytes, that eTran's sender needed no more
/// retransmission timeouts than Linux's senders (Linux to Linux, both ways, same rounds) plus
/// one, and that nothing was resent needlessly.
const MAX_RATIO: f64 = 2.0;
const BOTTLENECK_BPS: u64 = 1_000_000_000;
const DEADLINE: Duration = Duration::from_secs(60);
/// The app sleeps when it has nothing to do (as the bench and real apps do), at most this long
/// between checks of the Linux side: an app spinning on one of this machine's two CPUs would
/// take the Linux peer's (its reader got the CPU only at the scheduler's tick, every 4 ms,
/// and its window closed meanwhile).
const POLL: Duration = Duration::from_millis(1);

/// Duplicates a Linux host received (it D-SACKs each: RFC 2883).
fn duplicates_received() -> u64 {
    net_stat("TcpExt:TCPDSACKOldSent") + net_stat("TcpExt:TCPDSACKOfoSent")
}

/// Reads exactly `n` bytes and checks them against `want`.
fn read_all(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("every byte");
    assert!(got == want, "Linux received wrong bytes");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What eTran's sender had to do again.
struct Sent {
    /// Segments resent.
    resent: u64,
    /// Retransmission timeouts.
    timeouts: u64,
    /// Of those, the ones the peer showed spurious (RFC 3708: it had the bytes they resent).
    spurious: u64,
    /// Tail-loss probes sent.
    probes: u64,
}

/// Retransmission timeouts of the calling thread's namespace's Linux TCP.
fn linux_timeouts() -> u64 {
    net_stat("TcpExt:TCPTimeouts")
}

/// Segments the calling thread's namespace's etran ingress dropped for `reason`.
fn etran_drops(reason: &str) -> u64 {
    let dp = etran::loader::find(etran::testbed::HOST_NIC).unwrap().expect("etran is up");
    let drops = dp.counters().unwrap().drops;
    drops.iter().filter(|d| d.reason == reason).map(|d| d.count.packets).sum()
}

/// Out-of-order segments etran's ingress left out (no interval free to hold them), and the
/// duplicates it dropped (bytes it held already), in the calling thread's namespace.
fn left_out_and_duplicates() -> (u64, u64) {
    (etran_drops("tcp_ooo_gap"), etran_drops("tcp_duplicate"))
}

/// Segments the calling thread's namespace's Linux TCP resent, and its tail-loss probes.
fn linux_resent() -> (u64, u64) {
    (net_stat("Tcp:RetransSegs"), net_stat("TcpExt:TCPLossProbes"))
}

struct Bed {
    hosts: EtranHosts,
    app: App,
    h1: String,
    h2: String,
    ip1: std::net::Ipv4Addr,
    ip2: std::net::Ipv4Addr,
}

impl Bed {
    fn new(rate_bps: Option<u64>) -> Bed {
        let mut spec = Spec::new("", 2);
        spec.loss = std::env::var("ETRAN_TEST_LOSS").map_or(LOSS, |v| v.parse().unwrap());
        spec.rate_bps = rate_bps;
        let hosts = EtranHosts::first_only("tcploss", spec);
        let app = App::open(&hosts.daemons[0].sock).unwrap();
        let (h1, h2) = (hosts.ns(1), hosts.ns(2));
        let (ip1, ip2) = (hosts.tb.host(1).ip, hosts.tb.host(2).ip);
        Bed { hosts, app, h1, h2, ip1, ip2 }
    }

    fn lost(&self) -> u64 {
        self.hosts.tb.counters().unwrap().lost
    }

    /// Linux to Linux, `from` host to `to` host: the time until the receiver has every byte.
    fn linux_to_linux(
        &self,
        from: &str,
        to: &str,
        to_ip: std::net::Ipv4Addr,
        port: u16,
    ) -> Duration {
        let data = pattern(3, SIZE);
        let listener = in_netns(to, || TcpListener::bind((to_ip, port)).unwrap());
        std::thread::scope(|s| {
            let data = &data;
            let rx = s.spawn(move || {
                let (mut c, _) = listener.accept().unwrap();
                c.set_read_timeout(Some(DEADLINE)).unwrap();
                read_all(&mut c, data);
                Instant::now()
            });
            let mut c = in_netns(from, || TcpStream::connect((to_ip, port)).unwrap());
            let t0 = Instant::now();
            c.write_all(data).unwrap();
            let end = rx.join().unwrap();
            end - t0
        })
    }

    /// Linux in host 2 sends to the app: the time until the app has every byte.
    fn linux_to_etran(&mut self, port: u16) -> Duration {
        let data = pattern(5, SIZE);
        let listener = self.app.listen(port).unwrap();
        let addr = SocketAddrV4::new(self.ip1, port);
        std::thread::scope(|s| {
            let data = &data;
            let h2 = self.h2.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let sender = s.spawn(move || {
                let mut c = in_netns(&h2, || TcpStream::connect(addr))
                    .unwrap_or_else(|e| panic!("Linux connecting to the app: {e}"));
                tx.send(Instant::now()).unwrap();
                c.write_all(data).unwrap();
                c // kept open until the app has everything
            });
            let id = etran_accept(&mut self.app, &listener, Duration::from_secs(5));
            let mut got = Vec::with_capacity(SIZE);
            let mut buf = vec![0u8; 64 << 10];
            let start = Instant::now();
            while got.len() < SIZE {
                self.app.wait(Some(POLL)).unwrap();
                match self.app.recv(id, &mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("recv: {e}"),
                }
                assert!(start.elapsed() < DEADLINE, "stalled at {} bytes", got.len());
            }
            let end = Instant::now();
            let t0 = rx.recv().unwrap();
            assert!(got == *data, "the app received wrong bytes");
            let st = self.app.stream(id).unwrap().stats();
            println!("  etran receiver: {:?}", st);
            drop(sender.join().unwrap());
            self.app.abort(id);
            self.app.close_listener(listener).unwrap();
            end - t0
        })
    }

    /// The app sends to Linux in host 2: the time until Linux has every byte; with what the app
    /// resent and the duplicates Linux received.
    fn etran_to_linux(&mut self, port: u16) -> (Duration, Sent, u64) {
        let data = pattern(9, SIZE);
        let listener = in_netns(&self.h2, || TcpListener::bind((self.ip2, port)).unwrap());
        let dups0 = in_netns(&self.h2, duplicates_received);
        let id = self.app.connect_blocking(SocketAddrV4::new(self.ip2, port)).unwrap();
        let (elapsed, resent) = std::thread::scope(|s| {
            let data = &data;
            let rx = s.spawn(move || {
                let (mut c, _) = listener.accept().unwrap();
                c.set_read_timeout(Some(DEADLINE)).unwrap();
                read_all(&mut c, data);
                (Instant::now(), c)
            });
            let t0 = Instant::now();
            let mut sent = 0;
            while !rx.is_finished() {
                self.app.wait(Some(POLL)).unwrap();
                if sent < SIZE {
                    match self.app.send(id, &data[sent..]) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("send: {e}"),
                    }
                }
                assert!(t0.elapsed() < DEADLINE, "stalled after sending {sent}");
            }
            let (end, c) = rx.join().unwrap();
            let st = self.app.stream(id).unwrap().stats();
            println!("  etran sender: {st:?}");
            drop(c);
            let mss = u64::from(self.app.stream(id).unwrap().mss());
            (
                end - t0,
                Sent {
                    resent: st.retransmitted.div_ceil(mss),
                    timeouts: st.timeouts,
                    spurious: st.spurious_timeouts,
                    probes: st.probes,
                },
            )
        });
        let dups = in_netns(&self.h2, duplicates_received) - dups0;
        self.app.abort(id);
        (elapsed, resent, dups)
    }
}

#[test]
fn ten_mb_at_one_percent_loss_against_linux_both_ways() {
    let Some(_root) = common::root::alone() else { return };
    both_ways(None);
}

#[test]
fn ten_mb_at_one_percent_loss_behind_a_gigabit_bottleneck() {
    let Some(_root) = common::root::alone() else { return };
    both_ways(Some(BOTTLENECK_BPS));
}

/// `ROUNDS` rounds of the four transfers on a lossy switch with bottleneck `rate_bps`; in
/// release builds eTran's medians may take [`MAX_RATIO`] times Linux's.
fn both_ways(rate_bps: Option<u64>) {
    let mut bed = Bed::new(rate_bps);
    let (h1, h2, ip1, ip2) = (bed.h1.clone(), bed.h2.clone(), bed.ip1, bed.ip2);
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut port = 7400;
    let (mut etran_rtos, mut etran_spurious, mut linux_rtos) = (0, 0, 0);
    let rounds = std::env::var("ETRAN_TEST_ROUNDS").map_or(ROUNDS, |v| v.parse().unwrap());
    for round in 0..rounds {
        port += 10;
        let rtos0 = in_netns(&h2, linux_timeouts);
        times[0].push(bed.linux_to_linux(&h2, &h1, ip1, port));
        linux_rtos += in_netns(&h2, linux_timeouts) - rtos0;
        let (lost0, (resent0, probes0)) = (bed.lost(), in_netns(&h2, linux_resent));
        let ((left_out0, dups0), rtos0) =
            (in_netns(&h1, left_out_and_duplicates), in_netns(&h2, linux_timeouts));
        times[1].push(bed.linux_to_etran(port + 1));
        let (resent1, probes1) = in_netns(&h2, linux_resent);
        let (left_out1, dups1) = in_netns(&h1, left_out_and_duplicates);
        let (lost, linux_resent, linux_probes, linux_timeouts_to_etran, left_out, dups) = (
            bed.lost() - lost0,
            resent1 - resent0,
            probes1 - probes0,
            in_netns(&h2, linux_timeouts) - rtos0,
            left_out1 - left_out0,
            dups1 - dups0,
        );
        let rtos0 = in_netns(&h1, linux_timeouts);
        times[2].push(bed.linux_to_linux(&h1, &h2, ip2, port + 2));
        linux_rtos += in_netns(&h1, linux_timeouts) - rtos0;
        println!(
            "  Linux→eTran: Linux resent {linux_resent} segments ({linux_probes} tail-loss \
             probes, {linux_timeouts_to_etran} timeouts), switch lost {lost} frames (data and \
             ACKs), eTran left out {left_out} out-of-order segments and dropped {dups} \
             duplicates"
        );
        // Out-of-order data eTran's ingress has no interval for is dropped, and Linux sends it
        // again: holding four intervals, ingress left out up to 1,038 segments per transfer
        // (34 and 167 in the two tests' second rounds, against 79 and 71 losses) and Linux
        // resent up to 10 times the losses. With 16 it left out none in every run measured; a
        // quarter of the losses is room for a rare long run of holes.
        assert!(left_out <= lost / 4, "eTran left out {left_out} segments, {lost} were lost");
        // What eTran held but never reported, Linux resends as well: the generator acknowledges
        // a burst once, and a burst that touched more intervals than its ACK's three SACK
        // blocks report leaves some unreported (0.1 to 0.4 times the losses measured alone, up
        // to 1.5 times with the suite's tests running beside it). Five times the losses is a
        // collapse.
        assert!(
            linux_resent <= lost * 5 + linux_probes,
            "Linux resent {linux_resent} segments to eTran, the switch lost {lost} frames"
        );
        let lost0 = bed.lost();
        let (t, Sent { resent, timeouts, spurious, probes }, dups) = bed.etran_to_linux(port + 3);
        etran_rtos += timeouts;
        etran_spurious += spurious;
        let lost = bed.lost() - lost0;
        times[3].push(t);
        println!(
            "round {round}: Linux→Linux {:?}, Linux→eTran {:?}, Linux→Linux {:?}, eTran→Linux {:?}",
            times[0][round], times[1][round], times[2][round], times[3][round]
        );
        println!(
            "  eTran→Linux: {resent} segments resent, switch lost {lost} frames (data and ACKs), \
             Linux received {dups} duplicates, {probes} tail-loss probes sent"
        );
        // A tail-loss probe may duplicate a segment that was not lost (RFC 8985 accepts one per
        // probe: when the switch drops the one ACK of a flight, the data got through), and so
        // may the first resend after a retransmission timeout whose ACK was
        // only late (RFC 6298 accepts that); nothing else may. (How many timers fire depends
        // on timing: more on a loaded machine, and in an emulated guest, where Linux's own
        // senders probed 15 times in one transfer.)
        assert!(
            resent <= lost + probes,
            "resent {resent} segments, the switch lost only {lost}, {probes} probes"
        );
        assert!(
            dups <= probes + timeouts,
            "Linux received {dups} duplicate segments, {probes} probes, {timeouts} timeouts"
        );
    }
    // SACK, lost-retransmission detection and tail-loss probes recover almost every loss without
    // a timeout; one now and then is fair when a probe or a resend is lost too (Linux's senders
    // have them as well). A collapse of recovery times out in every round. A spurious timeout
    // (the peer had every byte, its ACKs were lost: a batched flight draws one ACK, and a
    // second tail-loss probe makes the timeout rare, not impossible) is no failure of recovery:
    // printed here, not counted.
    println!(
        "retransmission timeouts: eTran sending {etran_rtos} ({etran_spurious} spurious), Linux \
         sending {linux_rtos}"
    );
    let genuine = etran_rtos - etran_spurious;
    assert!(
        genuine <= linux_rtos + 1,
        "eTran's sender timed out {genuine} times in {rounds} rounds (and {etran_spurious} \
         spuriously), Linux's {linux_rtos}"
    );
    let [ll_in, le, ll_out, el] = times.map(median);
    let switch = rate_bps.map_or("no rate limit".into(), |r| format!("{} Mbit/s", r / 1_000_000));
    println!("medians of {rounds} (h1 = eTran's host, h2 = Linux; 10 MB; {switch}):");
    println!("  receiving: Linux {ll_in:?}, eTran {le:?} ({:.2}x)", ratio(le, ll_in));
    println!("  sending:   Linux {ll_out:?}, eTran {el:?} ({:.2}x)", ratio(el, ll_out));
    if cfg!(debug_assertions) {
        return;
    }
    assert!(ratio(le, ll_in) <= MAX_RATIO, "eTran receiving: {le:?} vs Linux {ll_in:?}");
    assert!(ratio(el, ll_out) <= MAX_RATIO, "eTran sending: {el:?} vs Linux {ll_out:?}");
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
