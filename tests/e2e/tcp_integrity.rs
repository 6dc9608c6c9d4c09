//! Data integrity end to end through a switch that corrupts frames (`etran testbed`
//! `--corrupt`: one byte of the Ethernet payload flipped): a Linux sender (std `TcpStream` on
//! h1) streams 20 MiB to an eTran app (h2) while the app streams 20 MiB to a Linux receiver
//! (h1), and an eTran app on h1 streams to the app on h2. Every byte is checked on arrival, and every corrupted
//! frame is accounted for: dropped by etran's ingress (counted by reason in `etran stats`) or,
//! for frames etran leaves to the kernel, by the kernel's own checks. Needs root.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{
    daemon::{register, EtranHosts},
    netns::in_netns,
};
use etran::{
    app::{ready, App, ConnId},
    testbed::{Spec, HOST_NIC},
};

/// Bytes each stream to or from Linux carries.
const STREAM: u64 = 20 << 20;
/// Bytes the eTran → eTran stream carries (both ends' checks are etran's: fewer suffice).
const E2E_STREAM: u64 = 4 << 20;
/// Fraction of frames the switch corrupts.
const CORRUPT: f64 = 0.002;
const LINUX_TO_ETRAN: u16 = 7601;
const ETRAN_TO_LINUX: u16 = 7602;
const ETRAN_TO_ETRAN: u16 = 7603;

/// The 8 bytes at `8 * word` of stream `seed`: a 64-bit mix of the word's index, so a segment
/// delivered at any wrong position shows.
fn stream_word(seed: u64, word: u64) -> [u8; 8] {
    let mut z = word.wrapping_add(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Writes the bytes of stream `seed` from `offset` on into `buf`.
fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut at = 0;
    while at < buf.len() {
        let pos = offset + at as u64;
        let word = stream_word(seed, pos / 8);
        let from = (pos % 8) as usize;
        let n = (8 - from).min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&word[from..from + n]);
        at += n;
    }
}

/// Checks received bytes against stream `seed` at `offset`.
fn check(what: &str, seed: u64, offset: u64, got: &[u8]) {
    let mut want = vec![0u8; got.len()];
    fill(seed, offset, &mut want);
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}: wrong byte at offset {}", offset + i as u64);
    }
}

/// One direction of a connection, as an app sees it.
#[derive(Default)]
struct Progress {
    sent: u64,
    got: u64,
}

/// Sends the bytes of stream `seed` from `p.sent` on, up to `total`.
fn pump_send(app: &mut App, id: ConnId, seed: u64, total: u64, p: &mut Progress, buf: &mut [u8]) {
    if p.sent >= total {
        return;
    }
    let n = ((total - p.sent) as usize).min(buf.len());
    fill(seed, p.sent, &mut buf[..n]);
    match app.send(id, &buf[..n]) {
        Ok(k) => p.sent += k as u64,
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("stream {seed}: send: {e}"),
    }
}

/// Receives and checks what arrived of stream `seed` (`total` bytes long).
fn pump_recv(app: &mut App, id: ConnId, seed: u64, total: u64, p: &mut Progress, buf: &mut [u8]) {
    match app.recv(id, buf) {
        Ok(0) => assert_eq!(p.got, total, "stream {seed} ended early"),
        Ok(n) => {
            check(&format!("stream {seed} (eTran receiving)"), seed, p.got, &buf[..n]);
            p.got += n as u64;
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => panic!("stream {seed}: recv: {e}"),
    }
}

/// Counters of the kernel's own input checks in the calling thread's namespace: IPv4 header
/// errors (checksum, version, length) and TCP checksum errors.
fn kernel_input_errors() -> u64 {
    common::netns::net_stat("Ip:InHdrErrors") + common::netns::net_stat("Tcp:InCsumErrors")
}

/// etran's drops of host `ns` for a reason in `reasons`.
fn etran_drops(ns: &str, reasons: &[&str]) -> u64 {
    in_netns(ns, || {
        let dp = etran::loader::find(HOST_NIC).unwrap().expect("etran is up");
        let c = dp.counters().unwrap();
        c.drops
            .iter()
            .filter(|d| reasons.contains(&d.reason.as_str()))
            .map(|d| d.count.packets)
            .sum()
    })
}

#[test]
fn every_byte_arrives_intact_through_a_corrupting_switch() {
    let Some(_root) = common::root::alone() else { return };
    let spec = Spec { corrupt: CORRUPT, ..Spec::new("", 2) };
    let hosts = EtranHosts::with("integrity", spec);
    let (h1, h2) = (hosts.ns(1), hosts.ns(2));
    let (ip1, ip2) = (hosts.tb.host(1).ip, hosts.tb.host(2).ip);
    let before: Vec<u64> = [&h1, &h2].iter().map(|ns| in_netns(ns, kernel_input_errors)).collect();

    let mut app2 = register(&hosts.daemons[1].sock);
    let linux_to_etran = app2.listen(LINUX_TO_ETRAN).unwrap();
    let etran_to_etran = app2.listen(ETRAN_TO_ETRAN).unwrap();
    let mut app1 = register(&hosts.daemons[0].sock);
    let listener = in_netns(&h1, || {
        TcpListener::bind(SocketAddrV4::new(ip1, ETRAN_TO_LINUX)).expect("Linux listens")
    });
    let client = in_netns(&h1, || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(ip2, LINUX_TO_ETRAN).into(),
            Duration::from_secs(5),
        )
        .expect("the eTran listener accepts")
    });
    let to_linux = app2.connect_blocking(SocketAddrV4::new(ip1, ETRAN_TO_LINUX)).unwrap();
    let (server, _) = listener.accept().unwrap();
    let e2e_out = app1.connect_blocking(SocketAddrV4::new(ip2, ETRAN_TO_ETRAN)).unwrap();

    let started = Instant::now();
    std::thread::scope(|s| {
        // Linux → eTran: written, then the write side shut (the app sees the FIN).
        let mut writer = client;
        s.spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0;
            while sent < STREAM {
                let n = ((STREAM - sent) as usize).min(buf.len());
                fill(1, sent, &mut buf[..n]);
                writer.write_all(&buf[..n]).expect("Linux sends");
                sent += n as u64;
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        // eTran → Linux: read and checked.
        let mut reader = server;
        let linux_reader = s.spawn(move || {
            reader.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let (mut got, mut buf) = (0u64, vec![0u8; 1 << 16]);
            while got < STREAM {
                let n = reader.read(&mut buf).expect("Linux receives");
                assert!(n > 0, "the eTran stream ended after {got} bytes");
                check("stream 2 (Linux receiving)", 2, got, &buf[..n]);
                got += n as u64;
            }
            got
        });
        // eTran → eTran: app1 sends from its own thread.
        let e2e_sender = s.spawn(move || {
            let (mut p, mut buf) = (Progress::default(), vec![0u8; 1 << 16]);
            let deadline = Instant::now() + Duration::from_secs(20);
            let busy = |app: &App| {
                app.stream(e2e_out).is_some_and(|st| st.unsent() > 0 || st.in_flight() > 0)
            };
            while p.sent < E2E_STREAM || busy(&app1) {
                assert!(Instant::now() < deadline, "eTran → eTran stalled at {}", p.sent);
                app1.poll().unwrap();
                pump_send(&mut app1, e2e_out, 3, E2E_STREAM, &mut p, &mut buf);
            }
            app1
        });

        let mut from_linux: Option<(ConnId, Progress)> = None;
        let mut from_etran: Option<(ConnId, Progress)> = None;
        let mut out = Progress::default();
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(20);
        let done =
            |c: &Option<(ConnId, Progress)>, total| c.as_ref().is_some_and(|c| c.1.got == total);
        while !done(&from_linux, STREAM) || !done(&from_etran, E2E_STREAM) || out.sent < STREAM {
            assert!(
                Instant::now() < deadline,
                "stalled: Linux → eTran {:?}, eTran → eTran {:?}, eTran → Linux sent {}",
                from_linux.as_ref().map(|c| c.1.got),
                from_etran.as_ref().map(|c| c.1.got),
                out.sent
            );
            app2.poll().unwrap();
            for (l, slot) in
                [(&linux_to_etran, &mut from_linux), (&etran_to_etran, &mut from_etran)]
            {
                if let Some(id) = ready(app2.accept(l)).unwrap() {
                    *slot = Some((id, Progress::default()));
                }
            }
            if let Some((id, p)) = &mut from_linux {
                pump_recv(&mut app2, *id, 1, STREAM, p, &mut buf);
            }
            if let Some((id, p)) = &mut from_etran {
                pump_recv(&mut app2, *id, 3, E2E_STREAM, p, &mut buf);
            }
            pump_send(&mut app2, to_linux, 2, STREAM, &mut out, &mut buf);
        }
        // Keep serving until Linux has all of it (retransmissions come from this loop).
        while !linux_reader.is_finished() {
            assert!(Instant::now() < deadline, "Linux is still missing bytes");
            app2.poll().unwrap();
        }
        assert_eq!(linux_reader.join().unwrap(), STREAM);
        e2e_sender.join().unwrap();
    });
    let elapsed = started.elapsed();

    // Every corrupted frame was dropped by someone, and counted.
    let corrupted = hosts.tb.counters().unwrap().corrupted;
    let reasons = ["bad_ip_csum", "tcp_bad_csum", "tcp_oversize", "bad_ipv4", "short_l4"];
    let (etran1, etran2) = (etran_drops(&h1, &reasons), etran_drops(&h2, &reasons));
    let kernel: u64 =
        [&h1, &h2].iter().zip(&before).map(|(ns, b)| in_netns(ns, kernel_input_errors) - b).sum();
    let checksum_drops = etran_drops(&h2, &["bad_ip_csum", "tcp_bad_csum"]);
    eprintln!(
        "2 × {} MiB with Linux, {} MiB eTran to eTran, in {elapsed:?}: {corrupted} frames \
         corrupted; dropped by etran on h1 {etran1}, on h2 {etran2} ({checksum_drops} bad \
         checksums), by the kernels {kernel}",
        STREAM >> 20,
        E2E_STREAM >> 20
    );
    assert!(corrupted > 0, "the switch corrupted nothing");
    assert!(checksum_drops > 0, "no bad checksum counted on the eTran receiver");
    assert_eq!(etran1 + etran2 + kernel, corrupted, "every corrupted frame is accounted for");
}
