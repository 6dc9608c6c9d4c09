//! A compat port batches the frames of an app that streams (`app::bursts`): its kernel side's
//! receive processing moves to a NAPI thread while one of the app's connections streams, and
//! back to softirq once none has for a while; small messages never move it (a thread's wakeup
//! would cost each its latency). `etran stats` says so. Against a Linux peer, every byte
//! checked.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddrV4, TcpListener},
    time::{Duration, Instant},
};

use common::{
    daemon::{port_links, served, EtranHosts},
    netns::{in_netns, sh},
    tcp::pattern,
};
use etran::{
    app::App,
    testbed::{Spec, HOST_NIC},
};

const MESSAGES: usize = 100;
const STREAM: usize = 8 << 20;

/// Whether the app's port in `ns` runs its kernel side's receive processing as a NAPI thread,
/// and whether `etran stats` says the port batches.
fn threaded(ns: &str) -> (bool, bool) {
    let k = port_links(ns).into_iter().find(|n| n.ends_with('k')).expect("the app's port");
    let out = sh(&format!("ip netns exec {ns} cat /sys/class/net/{k}/threaded"));
    let stats = served(ns, HOST_NIC)["ports"][0]["batching"].as_bool();
    (String::from_utf8_lossy(&out.stdout).trim() == "1", stats == Some(true))
}

#[test]
fn a_streaming_app_has_its_port_batched_and_a_chatty_one_not() {
    let Some(_root) = common::root::alone() else { return };
    let hosts = EtranHosts::first_only("batching", Spec::new("", 2));
    let (h1, h2, ip2) = (hosts.ns(1), hosts.ns(2), hosts.tb.host(2).ip);
    let mut app = App::open(&hosts.daemons[0].sock).unwrap();
    let listener = in_netns(&h2, || TcpListener::bind((ip2, 7500)).unwrap());
    let data = pattern(11, STREAM);
    std::thread::scope(|s| {
        let peer = s.spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut msg = [0u8; 64];
            for _ in 0..MESSAGES {
                c.read_exact(&mut msg).unwrap();
                c.write_all(&msg).unwrap();
            }
            let mut got = vec![0u8; STREAM];
            c.read_exact(&mut got).unwrap();
            got
        });
        let id = app.connect_blocking(SocketAddrV4::new(ip2, 7500)).unwrap();
        for i in 0..MESSAGES {
            let msg = [i as u8; 64];
            app.send_blocking(id, &msg).unwrap();
            let mut back = [0u8; 64];
            let mut n = 0;
            while n < back.len() {
                n += app.recv_blocking(id, &mut back[n..]).unwrap();
            }
            assert_eq!(back, msg);
        }
        assert_eq!(threaded(&h1), (false, false), "64-byte messages one at a time are not batched");

        let (mut sent, mut batched) = (0, None);
        while !peer.is_finished() {
            app.wait(Some(Duration::from_millis(1))).unwrap();
            if sent < STREAM {
                match app.send(id, &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
                // Once, halfway: the daemon had the time to switch.
                if sent >= STREAM / 2 && batched.is_none() {
                    batched = Some(threaded(&h1));
                }
            }
        }
        assert!(peer.join().unwrap() == data, "Linux received wrong bytes");
        assert_eq!(batched, Some((true, true)), "the port batched the stream's frames");

        // Quiet now: the app gives batching back (after `bursts::QUIET`), the daemon switches.
        let deadline = Instant::now() + Duration::from_secs(5);
        while threaded(&h1) != (false, false) {
            assert!(Instant::now() < deadline, "the port still batches 5 s after the stream");
            for _ in 0..20 {
                app.wait(Some(Duration::from_millis(5))).unwrap();
            }
        }
    });
}
