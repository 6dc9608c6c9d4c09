//! The built-in testbed end to end: build, forward, impair, report, remove. Needs root; every
//! test uses its own testbed name (`tb-<pid>-<tag>`) and removes it even when it fails.
use std::{
    net::UdpSocket,
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use common::{cli::etran, netns::set_int_opt};
use etran::{
    netlink::Netlink,
    netns::NetNs,
    testbed::{self, Spec, Testbed},
};

/// Removes the testbed on drop, panics included.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = testbed::down(&self.0);
    }
}

/// Deletes a namespace made by hand on drop.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.0);
    }
}

fn name(tag: &str) -> String {
    format!("tb-{}-{tag}", std::process::id())
}

/// Held by the tests that build private testbeds: building one reaps the private testbeds of
/// dead processes, which would pull the stale one `private_testbeds_of_dead_processes_are_reaped`
/// builds out from under it.
static PRIVATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn private_lock() -> std::sync::MutexGuard<'static, ()> {
    PRIVATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn up(spec: &Spec) -> (Testbed, Guard) {
    let guard = Guard(spec.name.clone());
    let tb = Testbed::up(spec).unwrap_or_else(|e| panic!("testbed up {}: {e:#}", spec.name));
    (tb, guard)
}

fn ours(prefix: &str) -> Vec<String> {
    NetNs::list().unwrap().into_iter().filter(|n| n.starts_with(&format!("{prefix}-"))).collect()
}

fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", dst])
        .output()
        .expect("run ping")
        .status
        .success()
}

/// Sends `n` UDP datagrams of `size` bytes (IP TOS `tos`) from host `from` to host `to`, paced
/// so that no socket or ring overflows, and counts what arrives.
fn udp_blast(tb: &Testbed, from: u8, to: u8, n: usize, size: usize, tos: i32, pace: bool) -> usize {
    let dst = tb.host(to).ip;
    let src = tb.host(from).ip;
    let rx = tb.netns(to).unwrap().run(|| UdpSocket::bind((dst, 0))).unwrap().unwrap();
    let tx = tb.netns(from).unwrap().run(|| UdpSocket::bind((src, 0))).unwrap().unwrap();
    let big: libc::c_int = 64 << 20;
    set_int_opt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, big);
    set_int_opt(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TOS, tos);
    let to_addr = rx.local_addr().unwrap();
    let payload = vec![0x5au8; size];
    let mut received = 0;
    let mut buf = [0u8; 2048];
    rx.set_nonblocking(true).unwrap();
    for i in 0..n {
        tx.send_to(&payload, to_addr).unwrap();
        if pace && i % 32 == 31 {
            std::thread::sleep(Duration::from_micros(200));
        }
        while rx.recv(&mut buf).is_ok() {
            received += 1;
        }
    }
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_millis(300) {
        match rx.recv(&mut buf) {
            Ok(_) => {
                received += 1;
                last = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    received
}

/// A counter from /proc/net/netstat or /proc/net/snmp of host `index`'s namespace.
fn net_stat(tb: &Testbed, index: u8, key: &str) -> u64 {
    tb.netns(index).unwrap().run(|| common::netns::net_stat(key)).unwrap()
}

#[test]
fn xdp_switch_forwards_and_testbed_comes_down() {
    let Some(_root) = common::root::shared() else { return };
    let n = name("xdp");
    let (tb, _guard) = up(&Spec::new(&n, 3));
    assert_eq!(ours(&n).len(), 4, "{:?}", ours(&n));
    assert_eq!(tb.host(3).ip.to_string(), "10.99.0.3");
    assert!(ping(&format!("{n}-h1"), "10.99.0.3"), "h1 -> h3");
    assert!(ping(&format!("{n}-h2"), "10.99.0.1"), "h2 -> h1");
    // Unimpaired, paced UDP all arrives (kernel checksums are checked on the way in).
    assert_eq!(udp_blast(&tb, 1, 2, 2000, 1000, 0, true), 2000);
    let c = tb.counters().unwrap();
    assert!(c.redirected >= 2000, "{c:?}");

    let st = testbed::status(&n).unwrap().expect("status of a live testbed");
    assert_eq!(st.mode, "xdp");
    assert!(st.complete);
    assert_eq!(st.hosts.len(), 3);
    assert_eq!(st.hosts[1].host.netns, format!("{n}-h2"));
    assert_eq!(format!("{:?}", st.hosts[1].host.mac), "[2, 153, 0, 0, 0, 2]");

    let out = etran(&["testbed", "status", "--name", &n, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "xdp");
    assert_eq!(v["hosts"][2]["ip"], "10.99.0.3");
    assert_eq!(v["hosts"][0]["mac"], "02:99:00:00:00:01");

    // The host NICs carry no XDP program (users attach etran there); the switch ports do.
    let h1 = tb.netns(1).unwrap();
    let nic = Netlink::open_in(&h1).unwrap().link("eth0").unwrap().unwrap();
    assert_eq!(nic.xdp_prog_id, None);
    // There, `etran up eth0` has nothing to warn of: the switch ports send with offload off.
    let up = Command::new("ip")
        .args(["netns", "exec", &format!("{n}-h1"), env!("CARGO_BIN_EXE_etran"), "up", "eth0"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert_eq!(String::from_utf8_lossy(&up.stderr), "", "no warning on a testbed host");
    let down = Command::new("ip")
        .args(["netns", "exec", &format!("{n}-h1"), env!("CARGO_BIN_EXE_etran"), "down", "eth0"])
        .status()
        .unwrap();
    assert!(down.success());

    drop(h1);
    assert!(testbed::down(&n).unwrap());
    assert!(ours(&n).is_empty(), "{:?}", ours(&n));
    assert!(!testbed::down(&n).unwrap());
    assert!(testbed::status(&n).unwrap().is_none());
    let out = etran(&["testbed", "down", "--name", &n]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no testbed"));
}

#[test]
fn direct_topology_is_one_veth_pair_and_comes_down() {
    let Some(_root) = common::root::shared() else { return };
    let n = name("direct");
    let (tb, _guard) = up(&Spec { direct: true, ..Spec::new(&n, 2) });
    // Two hosts, no switch namespace.
    let mut have = ours(&n);
    have.sort();
    assert_eq!(have, vec![format!("{n}-h1"), format!("{n}-h2")]);
    assert!(ping(&format!("{n}-h1"), "10.99.0.2"), "h1 -> h2");
    assert!(ping(&format!("{n}-h2"), "10.99.0.1"), "h2 -> h1");
    assert_eq!(udp_blast(&tb, 1, 2, 2000, 1000, 0, true), 2000);
    assert!(tb.switch_netns().is_err());
    assert_eq!(tb.counters().unwrap(), testbed::Counters::default());

    // Each eth0 is the other's peer: same addresses and MACs as with a switch.
    for (i, peer) in [(1u8, 2u8), (2, 1)] {
        let ns = tb.netns(i).unwrap();
        let nic = Netlink::open_in(&ns).unwrap().link("eth0").unwrap().unwrap();
        assert_eq!(nic.xdp_prog_id, None);
        let (ns, dst) = (format!("{n}-h{i}"), format!("10.99.0.{peer}"));
        let out = Command::new("ip").args(["-n", &ns, "neigh", "show", &dst]).output().unwrap();
        let neigh = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(neigh.contains(&format!("02:99:00:00:00:0{peer}")), "{neigh}");
    }

    let out = etran(&["testbed", "status", "--name", &n, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "direct", "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert!(v["switch_netns"].is_null(), "{v}");
    let out = etran(&["testbed", "status", "--name", &n]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("direct veth pair"));

    // Rebuilt as switched under the same name: the direct one goes first.
    drop(tb);
    let out = etran(&["testbed", "up", "--name", &n]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ours(&n).len(), 3);
    let out = etran(&["testbed", "up", "--name", &n, "--direct"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ours(&n).len(), 2, "{:?}", ours(&n));

    // Down removes both ends.
    assert!(testbed::down(&n).unwrap());
    assert!(ours(&n).is_empty(), "{:?}", ours(&n));
    assert!(testbed::status(&n).unwrap().is_none());
}

#[test]
fn direct_refuses_what_needs_a_switch() {
    let Some(_root) = common::root::shared() else { return };
    let n = name("direct-no");
    let _guard = Guard(n.clone());
    for extra in [
        &["--loss", "0.1"][..],
        &["--duplicate", "0.1"],
        &["--corrupt", "0.1"],
        &["--rate", "1gbit"],
        &["--rate", "1gbit", "--ecn-threshold", "30000"],
        &["--hosts", "3"],
    ] {
        let mut args = vec!["testbed", "up", "--name", &n, "--direct"];
        args.extend_from_slice(extra);
        let out = etran(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{extra:?}");
        assert!(err.starts_with("etran: error:") && err.contains("--direct"), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert!(ours(&n).is_empty(), "{extra:?}: {:?}", ours(&n));
    }
}

/// (rx, tx) queue counts of `nic` in namespace `ns`, from both `ip -d link` and sysfs.
fn queues(ns: &str, nic: &str) -> (usize, usize) {
    let out = Command::new("ip").args(["-n", ns, "-d", "link", "show", nic]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| -> usize {
        let mut words = text.split_whitespace();
        words.find(|w| *w == k).and_then(|_| words.next()).unwrap().parse().unwrap()
    };
    let (ip_rx, ip_tx) = (field("numrxqueues"), field("numtxqueues"));
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ls", &format!("/sys/class/net/{nic}/queues")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let count = |p: &str| -> usize {
        let mut n: Vec<usize> =
            list.split_whitespace().filter_map(|q| q.strip_prefix(p)?.parse().ok()).collect();
        n.sort();
        assert_eq!(n, (0..n.len()).collect::<Vec<_>>(), "{ns} {nic}: {list}");
        n.len()
    };
    let (rx, tx) = (count("rx-"), count("tx-"));
    assert_eq!((ip_rx, ip_tx), (rx, tx), "{ns} {nic}: {text} / {list}");
    (rx, tx)
}

#[test]
fn queues_reach_every_veth_and_status() {
    let Some(_root) = common::root::shared() else { return };
    // Direct: both ends of the one pair.
    let n = name("q-direct");
    let (tb, guard) = up(&Spec { direct: true, queues: 2, ..Spec::new(&n, 2) });
    for i in 1..=2 {
        assert_eq!(queues(&format!("{n}-h{i}"), "eth0"), (2, 2), "h{i}");
    }
    assert!(ping(&format!("{n}-h1"), "10.99.0.2"), "h1 -> h2");
    assert!(ping(&format!("{n}-h2"), "10.99.0.1"), "h2 -> h1");
    assert_eq!(testbed::status(&n).unwrap().unwrap().queues, 2);
    let out = etran(&["testbed", "status", "--name", &n, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["queues"].as_u64(), v["mode"].as_str()), (Some(2), Some("direct")), "{v}");
    let out = etran(&["testbed", "status", "--name", &n]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("2 queues per interface"), "{text}");
    drop(tb);
    drop(guard);

    // Switched, through the CLI: host NICs and switch ports. A host NIC has a TX queue per app
    // the native backend may bind: 8 by default on etran's kernel, 1 on a stock one.
    let app = if common::on_native() { etran::testbed::NATIVE_APP_QUEUES as usize } else { 1 };
    let n = name("q-sw");
    let _guard = Guard(n.clone());
    let out = etran(&["testbed", "up", "--name", &n, "--hosts", "2", "--queues", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["queues"].as_u64(), v["mode"].as_str()), (Some(2), Some("xdp")), "{v}");
    for i in 1..=2 {
        assert_eq!(queues(&format!("{n}-h{i}"), "eth0"), (2, app.max(2)), "h{i}");
        // A switch port takes at least one RX queue per CPU (and one per app queue).
        let port_rx = etran::sys::online_cpus().max(2).max(app);
        assert_eq!(queues(&format!("{n}-sw"), &format!("p{i}")), (port_rx, 2), "p{i}");
    }
    assert!(ping(&format!("{n}-h1"), "10.99.0.2"), "h1 -> h2");
    assert!(ping(&format!("{n}-h2"), "10.99.0.1"), "h2 -> h1");
    let out = etran(&["testbed", "status", "--name", &n, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queues"].as_u64(), Some(2), "{v}");
    assert!(testbed::down(&n).unwrap());

    // The default stays one queue, and says so; a switch port has an RX queue per CPU still.
    let n = name("q-one");
    let (_tb, _guard) = up(&Spec::new(&n, 2));
    assert_eq!(queues(&format!("{n}-h1"), "eth0"), (1, app));
    assert_eq!(queues(&format!("{n}-sw"), "p2"), (etran::sys::online_cpus().max(app), 1));
    let st = testbed::status(&n).unwrap().unwrap();
    assert_eq!((st.queues, st.app_queues), (1, app as u32));
}

#[test]
fn queues_out_of_range_are_refused() {
    let Some(_root) = common::root::shared() else { return };
    let n = name("q-bad");
    let _guard = Guard(n.clone());
    for q in ["0", "65", "x"] {
        for direct in [false, true] {
            let mut args = vec!["testbed", "up", "--name", &n, "--queues", q];
            if direct {
                args.push("--direct");
            }
            let out = etran(&args);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!out.status.success(), "{args:?}");
            assert!(err.contains("--queues"), "{args:?}: {err}");
            assert!(ours(&n).is_empty(), "{args:?}: {:?}", ours(&n));
        }
    }
    let e = Testbed::up(&Spec { queues: 0, ..Spec::new(&n, 2) }).unwrap_err();
    assert!(format!("{e:#}").contains("--queues"), "{e:#}");
    assert!(ours(&n).is_empty(), "{:?}", ours(&n));
}

#[test]
fn cli_up_replaces_a_stale_testbed_and_refuses_foreign_namespaces() {
    let Some(_root) = common::root::shared() else { return };
    let n = name("cli");
    let _guard = Guard(n.clone());
    for _ in 0..2 {
        let out = etran(&["testbed", "up", "--name", &n, "--hosts", "2"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(ours(&n).len(), 3);
    }
    assert!(ping(&format!("{n}-h1"), "10.99.0.2"));
    let out = etran(&["testbed", "down", "--name", &n]);
    assert!(out.status.success());
    assert!(ours(&n).is_empty());

    // A namespace that merely has one of the names is not ours: refuse, touch nothing.
    let foreign = format!("{n}-h2");
    let _foreign_guard = NsGuard(foreign.clone());
    NetNs::add(&foreign).unwrap();
    let again = NetNs::add(&foreign).unwrap_err().to_string();
    assert!(again.contains("already exists"), "{again}");
    let out = etran(&["testbed", "up", "--name", &n]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.starts_with("etran: error:") && err.contains("refusing"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(ours(&n), vec![foreign.clone()]);
    assert!(!testbed::down(&n).unwrap(), "down must not remove a foreign namespace");
    NetNs::delete(&foreign).unwrap();
}

#[test]
fn loss_drops_about_a_fifth() {
    let Some(_root) = common::root::shared() else { return };
    let mut spec = Spec::new(&name("loss"), 2);
    spec.loss = 0.2;
    let (tb, _guard) = up(&spec);
    let sent = 10_000;
    let got = udp_blast(&tb, 1, 2, sent, 64, 0, true);
    let lost = sent - got;
    // Binomial sd is 40 frames; allow far more.
    assert!((1700..=2300).contains(&lost), "lost {lost} of {sent}");
    // Everything missing was dropped by the switch's loss (a few may overflow a ring on a
    // busy machine).
    let c = tb.counters().unwrap();
    assert!(lost.abs_diff(c.lost as usize) <= 50, "lost {lost}, {c:?}");
}

#[test]
fn duplicate_and_corrupt_are_visible() {
    let Some(_root) = common::root::shared() else { return };
    let mut spec = Spec::new(&name("dup"), 2);
    spec.duplicate = 0.5;
    let (tb, _guard) = up(&spec);
    let sent = 2000;
    let got = udp_blast(&tb, 1, 2, sent, 200, 0, true);
    // About 1000 duplicates (σ ≈ 22); a loaded machine may also lose a few percent in veth
    // queues, so the bounds allow for that but never for more than was sent and duplicated.
    assert!((2700..=3200).contains(&got), "received {got} of {sent} with 50% duplication");
    let dup = tb.counters().unwrap().duplicated as usize;
    assert!(
        got <= sent + dup && got * 100 >= (sent + dup) * 95,
        "received {got}, duplicated {dup}"
    );
    drop(tb);

    let mut spec = Spec::new(&name("bad"), 2);
    spec.corrupt = 0.5;
    let (tb, _guard) = up(&spec);
    let got = udp_blast(&tb, 1, 2, sent, 200, 0, true);
    assert!((800..=1200).contains(&got), "received {got} of {sent} with 50% corruption");
    let corrupted = tb.counters().unwrap().corrupted as usize;
    assert!((800..=1200).contains(&corrupted), "{corrupted}");
    // Every corrupted datagram failed a checksum (UDP or IP header) or a header check.
    let csum = net_stat(&tb, 2, "Udp:InCsumErrors") + net_stat(&tb, 2, "IpExt:InCsumErrors");
    assert!(csum > 0, "no checksum errors seen");
    assert!(got + corrupted >= sent - 5, "{got} + {corrupted}");
}

#[test]
fn rate_limit_uses_htb_and_ecn_marks_above_threshold() {
    let Some(_root) = common::root::shared() else { return };
    let mut spec = Spec::new(&name("rate"), 2);
    spec.rate_bps = Some(20_000_000);
    spec.ecn_threshold = Some(15_000);
    let (tb, _guard) = up(&spec);
    assert!(ping(&format!("{}-h1", spec.name), "10.99.0.2"));
    let sw = tb.switch_netns().unwrap();
    let mut nl = Netlink::open_in(&sw).unwrap();
    for p in ["p1", "p2"] {
        let idx = nl.index(p).unwrap();
        let q = nl.qdiscs(idx).unwrap();
        assert!(q.iter().any(|k| k == "htb"), "{p}: {q:?}");
        assert!(nl.link(p).unwrap().unwrap().xdp_prog_id.is_none());
    }
    let st = testbed::status(&spec.name).unwrap().unwrap();
    assert_eq!((st.mode.as_str(), st.rate_bps), ("kernel", Some(20_000_000)));

    // 2 MB of ECT(0) datagrams in a burst: 0.8 s at 20 Mbit/s, so a queue forms and CE appears;
    // the first frames (queue still short) arrive unmarked.
    let before = net_stat(&tb, 2, "IpExt:InCEPkts");
    let got = udp_blast(&tb, 1, 2, 500, 1000, 0x02, true);
    let ce = net_stat(&tb, 2, "IpExt:InCEPkts") - before;
    let ect0 = net_stat(&tb, 2, "IpExt:InECT0Pkts");
    assert!(got > 0);
    assert!(ce > 0 && ect0 > 0, "CE {ce}, ECT0 {ect0}, received {got}");
    assert_eq!(tb.counters().unwrap().ce_marked, ce);
}

/// Where datagrams sent at TOS 0xe0 (Homa's priority 7) behind a backlog of TOS-0 ones arrive,
/// among everything received from host 1 to host 2 (indexes from 0).
fn high_priority_places(tb: &Testbed, backlog: usize) -> Vec<usize> {
    let (src, dst) = (tb.host(1).ip, tb.host(2).ip);
    let rx = tb.netns(2).unwrap().run(|| UdpSocket::bind((dst, 0))).unwrap().unwrap();
    set_int_opt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
    let socket = |tos| {
        let s = tb.netns(1).unwrap().run(|| UdpSocket::bind((src, 0))).unwrap().unwrap();
        set_int_opt(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TOS, tos);
        // Room for the whole backlog: a veth keeps a frame charged to its sender's socket
        // across namespaces, so without br_netfilter (which releases bridged frames) the
        // frames queued at the switch fill the default buffer after about 50 and the sender
        // waits for the bottleneck before it sends the high-priority ones.
        set_int_opt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 64 << 20);
        s
    };
    let (low, high) = (socket(0), socket(0xe0));
    let to = rx.local_addr().unwrap();
    for _ in 0..backlog {
        low.send_to(&[0u8; 1000], to).unwrap();
    }
    for _ in 0..5 {
        high.send_to(&[7u8; 1000], to).unwrap();
    }
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    (0..backlog + 5).filter(|_| rx.recv(&mut buf).unwrap() > 0 && buf[0] == 7).collect()
}

/// `--prio`: 8 strict priority classes below HTB's, picked by the TOS's top 3 bits.
/// Datagrams at TOS 0xe0 sent behind 100 TOS-0 ones at 10 Mbit/s (80 ms of backlog) overtake
/// the backlog; with one FIFO (no `--prio`) they come last.
#[test]
fn prio_queues_let_the_high_priority_overtake() {
    let Some(_root) = common::root::shared() else { return };
    for prio in [false, true] {
        let mut spec = Spec::new(&name(if prio { "prio" } else { "fifo" }), 2);
        spec.rate_bps = Some(10_000_000);
        spec.prio = prio;
        let (tb, _guard) = up(&spec);
        let sw = tb.switch_netns().unwrap();
        let mut nl = Netlink::open_in(&sw).unwrap();
        let p2 = nl.index("p2").unwrap();
        assert!(nl.qdiscs(p2).unwrap().iter().any(|k| k == "htb"));
        assert_eq!(testbed::status(&spec.name).unwrap().unwrap().prio, prio);
        let places = high_priority_places(&tb, 100);
        println!("prio {prio}: the high-priority datagrams arrived {places:?}");
        if prio {
            assert!(places.iter().all(|&i| i < 20), "{places:?}");
        } else {
            assert_eq!(places, [100, 101, 102, 103, 104]);
        }
    }
}

/// HTB passes a burst of its bucket's size (1 ms at the rate, plus a frame) without queueing:
/// the marker's virtual queue holds it, but only what lies beyond it is a queue to mark for. At
/// 20 Mbit/s the bucket is 4100 bytes: three back-to-back datagrams of 1042 bytes on the wire
/// pass unmarked under a 1500-byte threshold (the second and third once drew marks); a long
/// burst is marked.
#[test]
fn ecn_marks_only_what_htb_queues_beyond_its_burst() {
    let Some(_root) = common::root::shared() else { return };
    let mut spec = Spec::new(&name("burst"), 2);
    spec.rate_bps = Some(20_000_000);
    spec.ecn_threshold = Some(1500);
    let (tb, _guard) = up(&spec);
    std::thread::sleep(Duration::from_millis(50)); // the bucket fills after the ping
    assert_eq!(udp_blast(&tb, 1, 2, 3, 1000, 0x02, false), 3);
    assert_eq!(tb.counters().unwrap().ce_marked, 0, "within HTB's burst: no queue");
    assert_eq!(udp_blast(&tb, 1, 2, 40, 1000, 0x02, false), 40);
    assert!(tb.counters().unwrap().ce_marked > 0, "a queue beyond the burst is marked");
}

#[test]
fn private_testbed_goes_away_on_drop() {
    let Some(_root) = common::root::shared() else { return };
    let _private = private_lock();
    let tb = Testbed::private(2).unwrap();
    let name = tb.name().to_string();
    assert!(name.starts_with("etb"));
    assert_eq!(ours(&name).len(), 3);
    assert!(ping(&tb.host(2).netns, "10.99.0.1"));
    drop(tb);
    assert!(ours(&name).is_empty(), "{:?}", ours(&name));
}

/// Run as a child process by `private_testbed_goes_away_on_sigterm`; does nothing otherwise.
#[test]
fn sigterm_child() {
    if std::env::var_os("ETRAN_TESTBED_SIGTERM_CHILD").is_none() {
        return;
    }
    let tb = Testbed::private(2).unwrap();
    println!("TESTBED {}", tb.name());
    std::thread::sleep(Duration::from_secs(30));
    unreachable!("the parent kills this process");
}

#[test]
fn private_testbed_goes_away_on_sigterm() {
    let Some(_root) = common::root::shared() else { return };
    let _private = private_lock();
    use std::io::{BufRead, BufReader};
    let mut child = common::KillOnDrop::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "testbed::sigterm_child", "--nocapture", "--test-threads=1"])
            .env("ETRAN_TESTBED_SIGTERM_CHILD", "1")
            .stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let name = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| Some(l.split_once("TESTBED ")?.1.trim().to_string()));
    let Some(name) = name else {
        let _ = child.kill();
        panic!("child built no testbed: {:?}", child.wait());
    };
    let _guard = Guard(name.clone());
    assert_eq!(ours(&name).len(), 3);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(ours(&name).is_empty(), "{:?}", ours(&name));
}

#[test]
fn private_testbeds_of_dead_processes_are_reaped() {
    let Some(_root) = common::root::shared() else { return };
    let _private = private_lock();
    // A pid above the kernel's maximum (4194304) belongs to no process.
    let stale = format!("etb4999999_{}", std::process::id());
    let _guard = Guard(stale.clone());
    let tb = Testbed::up(&Spec::new(&stale, 2)).unwrap();
    drop(tb); // persistent: still there
    assert_eq!(ours(&stale).len(), 3);
    let private = Testbed::private(2).unwrap();
    assert!(ours(&stale).is_empty(), "{:?}", ours(&stale));
    drop(private);
}
