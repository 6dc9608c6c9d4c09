//! The testbed's MTU and eTran's MSS following it: at the largest MTU a veth carries to XDP,
//! Linux announces an MSS of the MTU less 40 and eTran of its app ports' MTU less 40 (the MTU
//! less the RX metadata a received frame carries through the port's veth), each fills every
//! full segment to its MTU, both ways, every byte right; the benches take `--mtu` and say so; the kernel refuses one byte
//! more than the figure etran computes; a bad `--mtu` is refused in one line. Needs root and
//! python3.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use common::{
    capture::{analyse, Capture, DirectionReport},
    cli::{etran, etran_in},
    daemon::{register, EtranHosts},
    netns::{in_netns, VethPair},
    peer::{etran_accept, etran_recv, etran_send, PyPeer},
};
use etran::{
    backend::socket::port_mtu,
    loader::kernel::veth_xdp_max_mtu,
    testbed::{Spec, HOST_NIC},
};

const BYTES: u64 = 4 << 20;
const LIMIT: Duration = Duration::from_secs(60);

/// One connection's two directions as the capture on the Linux host saw them: (eTran's, Linux's).
/// The SYNs announced `mss` (eTran's, Linux's); what eTran sent had valid checksums.
fn both_ways(
    frames: &[common::capture::Frame],
    etran_ip: Ipv4Addr,
    mss: (u16, u16),
    what: &str,
) -> (DirectionReport, DirectionReport) {
    let report = analyse(frames);
    assert_eq!(report.len(), 2, "{what}: one connection, two directions: {report:?}");
    let (mut etran, mut linux) = (None, None);
    for (d, r) in report {
        *(if *d.src.ip() == etran_ip { &mut etran } else { &mut linux }) = Some(r);
    }
    let (etran, linux) = (etran.unwrap(), linux.unwrap());
    println!("{what}: eTran {etran:?}, Linux {linux:?}");
    assert_eq!((etran.mss, linux.mss), (Some(mss.0), Some(mss.1)), "{what}: MSS options");
    assert_eq!(etran.bad_checksum, 0, "{what}");
    (etran, linux)
}

#[test]
fn largest_mtu_moves_bytes_both_ways_in_full_sized_segments() {
    let Some(_root) = common::root::alone() else { return };
    let mtu = veth_xdp_max_mtu().unwrap();
    assert!(mtu > 1500, "this kernel's veth carries only {mtu} bytes to XDP");
    let hosts = EtranHosts::with("mtu", Spec { mtu, ..Spec::new("", 2) });
    let (h1, h2) = (hosts.tb.host(1).ip, hosts.tb.host(2).ip);
    // The capture on h2 must see frames as they crossed the wire, not merged by GRO (h2's NIC
    // has NAPI without it: etran's entrance is on it).
    in_netns(&hosts.ns(2), || etran::ethtool::set_gro(HOST_NIC, false).unwrap());
    let mut app = register(&hosts.daemons[0].sock);
    let port_mtu = port_mtu(mtu).unwrap();
    assert!(port_mtu > 1500 && port_mtu < mtu, "app ports at {port_mtu} bytes");
    let mss = ((port_mtu - 40) as u16, (mtu - 40) as u16);

    // eTran (h1) → Linux (h2).
    let addr = SocketAddrV4::new(h2, 7601);
    let cap = Capture::start(&hosts.ns(2), HOST_NIC);
    let peer = PyPeer::start(&hosts.ns(2), "recv", "listen", addr, BYTES, 1);
    let id = app.connect_blocking(addr).expect("connect to python3");
    etran_send(&mut app, id, BYTES, 1, LIMIT);
    peer.finish("eTran → Linux");
    let (etran, _) = both_ways(&cap.stop(), h1, mss, "eTran → Linux");
    assert_eq!(etran.largest_packet, port_mtu, "eTran's full segments fill its ports' MTU");

    // Linux (h2) → eTran (h1).
    let listener = app.listen(7602).unwrap();
    let cap = Capture::start(&hosts.ns(2), HOST_NIC);
    let peer =
        PyPeer::start(&hosts.ns(2), "send", "connect", SocketAddrV4::new(h1, 7602), BYTES, 2);
    let id = etran_accept(&mut app, &listener, LIMIT);
    etran_recv(&mut app, id, BYTES, 2, LIMIT);
    peer.finish("Linux → eTran");
    let (_, linux) = both_ways(&cap.stop(), h1, mss, "Linux → eTran");
    assert_eq!(linux.largest_packet, port_mtu, "Linux's full segments fill eTran's MSS");
}

#[test]
fn the_kernel_refuses_xdp_one_byte_above_the_computed_mtu() {
    let Some(_root) = common::root::shared() else { return };
    let max = veth_xdp_max_mtu().unwrap();
    let net = VethPair::new("mtu-limit");
    net.set_mtu(max + 1);
    let out = etran_in(&net.a, &["up", "va"]);
    assert!(!out.status.success(), "etran up at MTU {} took", max + 1);
    net.set_mtu(max);
    let out = etran_in(&net.a, &["up", "va"]);
    assert!(
        out.status.success(),
        "etran up at MTU {max}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(etran_in(&net.a, &["down", "va"]).status.success());
}

#[test]
fn bench_echo_runs_at_the_largest_mtu_and_says_so() {
    let Some(_root) = common::root::alone() else { return };
    let mtu = veth_xdp_max_mtu().unwrap().to_string();
    let report = common::cli::bench_echo_bulk(&["--mtu", &mtu]);
    assert_eq!(report["mtu"].to_string(), mtu, "{report}");
    assert!(report["testbed"].as_str().unwrap().contains(&format!("MTU {mtu}")), "{report}");
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{report}");
    for row in rows {
        assert!(row["messages"].as_u64().unwrap() > 0, "{row}");
        assert!(row["verified_bytes"].as_u64().unwrap() >= 20000, "{row}");
    }
}

#[test]
fn a_bad_mtu_is_refused_in_one_line() {
    let Some(_root) = common::root::shared() else { return };
    let max = veth_xdp_max_mtu().unwrap();
    let name = format!("tb-{}-mtu", std::process::id());
    let too_big = (max + 1).to_string();
    for args in [
        vec!["testbed", "up", "--name", &name, "--mtu", &too_big],
        vec!["testbed", "up", "--name", &name, "--direct", "--mtu", "1279"],
        vec!["bench", "echo", "--mtu", "9000", "--duration", "1s"],
        vec!["bench", "raw", "--mtu", "100", "--duration", "1s"],
        vec!["bench", "raw", "--size", "1515", "--duration", "1s"],
    ] {
        let out = etran(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--mtu"), "{args:?}: {err}");
    }
    assert!(etran::testbed::status(&name).unwrap().is_none(), "nothing was built");
}

/// Removes the testbed on drop, panics included.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = etran::testbed::down(&self.0);
    }
}

#[test]
fn testbed_status_shows_the_mtu() {
    let Some(_root) = common::root::shared() else { return };
    let name = format!("tb-{}-mtu-status", std::process::id());
    let _down = Down(name.clone());
    let out = etran(&["testbed", "up", "--name", &name, "--direct", "--mtu", "2000", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mtu"].as_u64(), Some(2000), "{v}");
    let text =
        String::from_utf8_lossy(&etran(&["testbed", "status", "--name", &name]).stdout).to_string();
    assert!(text.contains("MTU 2000"), "{text}");
    for i in 1..=2 {
        let ns = etran::netns::NetNs::open(&format!("{name}-h{i}")).unwrap();
        let link = ns.run(|| etran::netlink::Netlink::open().unwrap().link(HOST_NIC).unwrap());
        assert_eq!(link.unwrap().unwrap().mtu, 2000, "h{i}");
    }
}
