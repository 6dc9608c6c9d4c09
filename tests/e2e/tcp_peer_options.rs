//! eTran TCP against Linux peers that turn TCP options off, through an impaired switch (0.1 %
//! corruption, 1 % loss, 1 % duplication): a peer without SACK (eTran's sender falls back to
//! NewReno; its receiver owes one duplicate ACK per out-of-order segment, which the peer counts),
//! without timestamps (RTT from samples, 12 more bytes of payload per segment), without window
//! scaling (64 KiB windows), and with all three off. Each moves data both ways (python3 on the
//! Linux host), every byte checked by the receiver, within a time limit that a collapse of
//! recovery would exceed; Linux to Linux runs beside each for comparison, and the Linux senders'
//! recoveries are printed (run with --nocapture). Needs root and python3.
use std::{net::SocketAddrV4, time::Duration};

use common::{
    daemon::{register, EtranHosts},
    netns::{in_netns, net_stat, sh},
    peer::{etran_accept, etran_recv, etran_send, PyPeer},
};
use etran::testbed::Spec;

const BYTES: u64 = 4 << 20;
const LIMIT: Duration = Duration::from_secs(60);

/// The Linux peers' settings: a name and the sysctls (net.ipv4.*, per namespace) turned off.
const PEERS: &[(&str, &[&str])] = &[
    ("no SACK", &["tcp_sack"]),
    ("no timestamps", &["tcp_timestamps"]),
    ("no window scaling", &["tcp_window_scaling"]),
    (
        "no SACK, timestamps or window scaling",
        &["tcp_sack", "tcp_timestamps", "tcp_window_scaling"],
    ),
];

/// Sets the sysctls in namespace `ns`.
fn set(ns: &str, sysctls: &[&str], value: u8) {
    for key in sysctls {
        sh(&format!("ip netns exec {ns} sysctl -qw net.ipv4.{key}={value}"));
    }
}

/// What a Linux sender (the calling thread's namespace) did to recover so far: NewReno fast
/// recoveries, SACK recoveries, retransmission timeouts.
fn recoveries() -> [u64; 3] {
    ["TcpExt:TCPRenoRecovery", "TcpExt:TCPSackRecovery", "TcpExt:TCPTimeouts"].map(net_stat)
}

/// Runs `f` and returns with its result what the Linux senders of namespace `ns` did meanwhile.
fn recovering<T>(ns: &str, f: impl FnOnce() -> T) -> (T, String) {
    let before = in_netns(ns, recoveries);
    let out = f();
    let after = in_netns(ns, recoveries);
    let [reno, sack, rto] = [0, 1, 2].map(|i| after[i] - before[i]);
    (out, format!("{reno} NewReno and {sack} SACK recoveries, {rto} timeouts"))
}

#[test]
fn linux_peers_without_sack_timestamps_or_window_scaling_get_every_byte_both_ways() {
    let Some(_root) = common::root::alone() else { return };
    let mut spec = Spec::new("", 2);
    spec.corrupt = 0.001;
    spec.loss = 0.01;
    spec.duplicate = 0.01;
    let hosts = EtranHosts::first_only("peeropts", spec);
    let (ns1, ns2) = (hosts.ns(1), hosts.ns(2));
    let (h1, h2) = (hosts.tb.host(1).ip, hosts.tb.host(2).ip);
    let mut app = register(&hosts.daemons[0].sock);
    for (i, (name, sysctls)) in PEERS.iter().enumerate() {
        set(&ns2, sysctls, 0);
        let (seed, port) = (10 + 3 * i as u32, 7600 + 3 * i as u16);

        let addr = SocketAddrV4::new(h2, port);
        let peer = PyPeer::start(&ns2, "recv", "listen", addr, BYTES, seed);
        let id = app.connect_blocking(addr).expect("connect to python3");
        let sent = etran_send(&mut app, id, BYTES, seed, LIMIT);
        peer.finish(&format!("eTran → Linux ({name})"));

        let listener = app.listen(port + 1).unwrap();
        let addr = SocketAddrV4::new(h1, port + 1);
        let (got, to_etran) = recovering(&ns2, || {
            let peer = PyPeer::start(&ns2, "send", "connect", addr, BYTES, seed + 1);
            let id = etran_accept(&mut app, &listener, LIMIT);
            let got = etran_recv(&mut app, id, BYTES, seed + 1, LIMIT);
            peer.finish(&format!("Linux → eTran ({name})"));
            got
        });
        app.close_listener(listener).unwrap();

        // Linux to Linux, both ends without the options.
        set(&ns1, sysctls, 0);
        let addr = SocketAddrV4::new(h1, port + 2);
        let sink = PyPeer::start(&ns1, "recv", "listen", addr, BYTES, seed + 2);
        let (linux, to_linux) = recovering(&ns2, || {
            PyPeer::start(&ns2, "send", "connect", addr, BYTES, seed + 2).finish("Linux sender");
            sink.finish(&format!("Linux → Linux ({name})"))
        });
        set(&ns1, sysctls, 1);
        set(&ns2, sysctls, 1);
        println!(
            "{name}: eTran → Linux {sent:.2?}; Linux → eTran {got:.2?} ({to_etran}); Linux → \
             Linux {linux:.3} s ({to_linux})"
        );
    }
    let sw = hosts.tb.counters().unwrap();
    println!("switch: {} lost, {} corrupted, {} duplicated", sw.lost, sw.corrupted, sw.duplicated);
    assert!(sw.lost > 0 && sw.corrupted > 0 && sw.duplicated > 0, "the switch impaired nothing");
}
