//! `etran daemon` end to end: the real binary in a private namespace (`ip netns exec`), apps
//! registering through the library client, ports and `app_ports` slots checked from inside the
//! namespace, teardown on app exit and on SIGTERM. Needs root.
use std::{
    fs,
    io::{Read, Write},
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use common::{
    cli::etran_in as etran,
    daemon::{etran_up_pair, port_links, Daemon},
    netns::{in_netns, sh, VethPair},
    tcp::wait_for,
};
use etran::{
    app::{link::Registration, DaemonLink},
    proto::{self, Reply, Request, Transport},
};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

/// The daemon's own veth pairs, each with its peer `…p`: the gen pumps' gen ports (TCP's
/// `etgen<ifindex>`, Homa's `etgen<ifindex>h`) and, compat, the slow path's replay port
/// (`etrep<ifindex>`).
fn daemon_links(ns: &str) -> Vec<String> {
    let out = sh(&format!("ip -n {ns} -o link show"));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("etgen") || n.starts_with("etrep"))
        .collect();
    names.sort();
    names
}

/// Every occupied slot of the datapath on `va` → where its app's port is, read from inside the
/// namespace: compat's `app_ports` (the ifindex of the port's kernel side), native's
/// `port_queue` (the NIC queue its socket is bound to, stored + 1: 0 is a free slot).
fn app_ports(ns: &str) -> Vec<(u32, u32)> {
    let native = common::on_native();
    in_netns(ns, move || {
        let dir = etran::loader::pins::iface_dir("va").unwrap();
        let pin = if native { "port_queue" } else { "app_ports" };
        let map = MapHandle::from_pinned_path(dir.join(pin)).unwrap();
        (0..map.max_entries())
            .filter_map(|s| {
                let v = map.lookup(&s.to_ne_bytes(), MapFlags::ANY).ok().flatten()?;
                let v = u32::from_ne_bytes(v[..4].try_into().unwrap());
                match native {
                    true if v == 0 => None,
                    true => Some((s, v - 1)),
                    false => Some((s, v)),
                }
            })
            .collect()
    })
}

/// Where `r`'s port is, as [`app_ports`] says it: compat: its kernel side's ifindex; native:
/// its socket's NIC queue.
fn place(r: &Registration) -> u32 {
    if common::on_native() {
        r.xsks[0].0.queue()
    } else {
        r.kernel_ifindex
    }
}

/// Whether `r`'s port is still there: compat: its veth pair; native: its slot's queue.
fn has_port(ns: &str, r: &Registration) -> bool {
    if common::on_native() {
        app_ports(ns).contains(&(r.slot, place(r)))
    } else {
        port_links(ns).contains(&r.port)
    }
}

fn ifindex_in(ns: &str, name: &str) -> u32 {
    let name = name.to_string();
    in_netns(ns, move || etran::sys::ifindex(&name).unwrap())
}

fn sockopt_int(fd: &OwnedFd, opt: libc::c_int) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v
}

/// A second bind of a bound AF_XDP socket fails with EBUSY (an unbound one would try to bind).
/// Whether an AF_XDP socket is bound: a TX kick of an unbound one fails with ENXIO.
fn is_bound_xsk(fd: &OwnedFd) -> bool {
    // SAFETY: a zero-length send on a descriptor we own.
    let r = unsafe {
        libc::sendto(fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
    };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO))
}

/// Binds the app's AF_XDP socket to queue 0 of its port, as the app library does.
fn bind_xsk(fd: &OwnedFd, ifindex: u32) -> std::io::Result<()> {
    // SAFETY: sockaddr_xdp is plain data.
    let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
    sa.sxdp_family = libc::AF_XDP as u16;
    sa.sxdp_ifindex = ifindex;
    sa.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
    // SAFETY: valid sockaddr of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_xdp).cast(),
            std::mem::size_of::<libc::sockaddr_xdp>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Maps the app's rings and UMEM from the descriptors alone and binds the socket (as an app
/// would), lends it [`LENT`] frames, sends [`SENT`] frames into the kernel side of its port from
/// inside `ns` (the socket drops those it has no frame for), and waits for one on the RX ring.
const LENT: u32 = 64;
const SENT: u32 = LENT + 8;

fn frame_reaches_app(ns: &str, reg: &Registration) -> bool {
    use std::sync::atomic::{AtomicU32, Ordering};
    let xsk = reg.xsks[0].1.as_raw_fd();
    let g = reg.geometry;
    // SAFETY: plain data filled by the kernel.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            xsk,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            (&mut off as *mut libc::xdp_mmap_offsets).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "XDP_MMAP_OFFSETS");
    let map = |fd: i32, len: usize, pgoff: i64| -> *mut u8 {
        // SAFETY: mapping a ring or the UMEM of a descriptor we own; never unmapped (test).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        p.cast()
    };
    let fill = map(xsk, off.fr.desc as usize + g.fill_size as usize * 8, 0x1_0000_0000);
    let rx = map(xsk, off.rx.desc as usize + g.rx_size as usize * 16, 0);
    let umem = map(reg.umem.as_raw_fd(), g.umem_len as usize, 0);
    bind_xsk(&reg.xsks[0].1, reg.port_ifindex).expect("binding the mapped socket");
    assert!(is_bound_xsk(&reg.xsks[0].1));
    const FRAMES: u32 = LENT;
    // SAFETY: offsets come from the kernel; the rings are mapped above.
    unsafe {
        let descs = fill.add(off.fr.desc as usize).cast::<u64>();
        for i in 0..FRAMES {
            *descs.add(i as usize) = i as u64 * g.frame_size as u64;
        }
        (*fill.add(off.fr.producer as usize).cast::<AtomicU32>()).store(FRAMES, Ordering::Release);
    }
    let payload = b"etran daemon port test frame";
    let (kidx, midx) = (reg.kernel_ifindex, reg.port_ifindex);
    in_netns(ns, move || {
        // SAFETY: plain socket calls on a descriptor we close below.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut frame = vec![0xffu8; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, midx as u8]);
            frame.extend_from_slice(&[0x88, 0xb5]);
            frame.extend_from_slice(payload);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = kidx as i32;
            sll.sll_halen = 6;
            for _ in 0..SENT {
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n as usize, frame.len(), "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = 0u32;
    while Instant::now() < deadline {
        // SAFETY: reading the RX ring the kernel produces into.
        unsafe {
            let prod =
                (*rx.add(off.rx.producer as usize).cast::<AtomicU32>()).load(Ordering::Acquire);
            while seen != prod {
                let d = *rx
                    .add(off.rx.desc as usize)
                    .cast::<libc::xdp_desc>()
                    .add((seen % g.rx_size) as usize);
                let data = std::slice::from_raw_parts(umem.add(d.addr as usize), d.len as usize);
                if data.ends_with(payload) {
                    return true;
                }
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn apps_register_get_ports_and_leave_nothing_behind() {
    let Some(_root) = common::root::shared() else { return };
    let net = etran_up_pair("dmn-reg");
    let mut daemon = Daemon::start(&net.a, "dmn-reg");
    let meta = fs::metadata(&daemon.sock).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o660);
    let va = ifindex_in(&net.a, "va");
    // TCP's gen port and Homa's (`…h`), and compat's replay port, each a pair.
    let mut pairs = vec![format!("etgen{va}"), format!("etgen{va}h")];
    if !common::on_native() {
        pairs.push(format!("etrep{va}"));
    }
    let mut links: Vec<String> = pairs.iter().flat_map(|p| [p.clone(), format!("{p}p")]).collect();
    links.sort();
    assert_eq!(daemon_links(&net.a), links, "the daemon's own veth pairs");

    // First app.
    let mut one = DaemonLink::connect(&daemon.sock).unwrap();
    let r1 = one.register(Transport::Tcp, 1).unwrap();
    assert_ne!(r1.slot, 0);
    assert_eq!(r1.xsks.len(), 1);
    assert_eq!(sockopt_int(&r1.xsks[0].1, libc::SO_DOMAIN), libc::AF_XDP);
    // Compat: the app binds the socket, after mapping its rings; native: the daemon bound it
    // (to a queue of the NIC) before linking egress to it.
    assert_eq!(is_bound_xsk(&r1.xsks[0].1), common::on_native());
    // SAFETY: fstat on a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(r1.umem.as_raw_fd(), &mut st) }, 0);
    assert_eq!(st.st_size as u64, r1.geometry.umem_len);
    assert_eq!(ifindex_in(&net.a, &r1.kernel_port), r1.kernel_ifindex);
    assert_eq!(ifindex_in(&net.a, &r1.port), r1.port_ifindex);
    assert_eq!(app_ports(&net.a), vec![(r1.slot, place(&r1))]);
    // (Native: the socket is on the NIC, whose traffic the TCP and Homa tests carry.)
    let native = common::on_native();
    assert!(native || frame_reaches_app(&net.a, &r1), "a frame into the kernel side reaches it");
    // A second registration on the same session is refused and ends it.
    let mut twice = DaemonLink::connect(&daemon.sock).unwrap();
    let rt = twice.register(Transport::Tcp, 1).unwrap();
    let again = Request::Register {
        version: proto::PROTOCOL_VERSION,
        transport: Transport::Tcp,
        queues: 1,
    };
    twice.send(&again).unwrap();
    match twice.recv().unwrap().0 {
        Reply::Error { refusal } => assert_eq!(refusal.errno, libc::EISCONN, "{refusal}"),
        r => panic!("unexpected {r:?}"),
    }
    wait_for("the twice-registered port to go", 5, || !has_port(&net.a, &rt));

    // Second app: another slot, another port.
    let mut two = DaemonLink::connect(&daemon.sock).unwrap();
    let r2 = two.register(Transport::Tcp, 1).unwrap();
    assert_ne!(r1.slot, r2.slot);
    assert!(native || r1.port != r2.port, "{} {}", r1.port, r2.port);
    assert_ne!(place(&r1), place(&r2));
    let mut ports = app_ports(&net.a);
    ports.sort();
    let mut want = vec![(r1.slot, place(&r1)), (r2.slot, place(&r2))];
    want.sort();
    assert_eq!(ports, want);

    // An app that goes away (socket closed, as on exit or crash) loses its port and slot.
    drop(one);
    wait_for("app one's port to go", 5, || !has_port(&net.a, &r1));
    // The daemon says what the port's socket dropped: at least the frames beyond those lent
    // (the kernel side of the port may have sent its own, IPv6 neighbour discovery and such).
    let log = daemon.log();
    let said = format!("app port {}: its AF_XDP socket dropped ", r1.port);
    let dropped: Option<u32> = log
        .split(&said)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    assert!(native || dropped.is_some_and(|d| d >= SENT - LENT), "{log}");
    assert_eq!(app_ports(&net.a), vec![(r2.slot, place(&r2))]);
    // `Close` does the same.
    two.close().unwrap();
    wait_for("app two's port to go", 5, || {
        port_links(&net.a).is_empty() && app_ports(&net.a).is_empty()
    });
    assert!(app_ports(&net.a).is_empty());

    // A freed slot is given out again.
    let mut three = DaemonLink::connect(&daemon.sock).unwrap();
    let r3 = three.register(Transport::Tcp, 1).unwrap();
    assert_eq!(r3.slot, r1.slot.min(r2.slot));

    // SIGTERM with an app still registered: clean exit, nothing left.
    assert!(daemon.alive());
    let st = daemon.terminate();
    assert!(st.success(), "exit status {st}: {}", daemon.log());
    assert!(!daemon.sock.exists(), "socket file removed");
    assert!(port_links(&net.a).is_empty(), "no etp* links: {:?}", port_links(&net.a));
    assert!(daemon_links(&net.a).is_empty(), "no pair of its own: {:?}", daemon_links(&net.a));
    assert!(app_ports(&net.a).is_empty(), "no devmap entries");
    let mut buf = [0u8; 1];
    three.stream().set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(three.stream().read(&mut buf).unwrap_or(0), 0, "the app sees EOF");
}

/// `etran -j stats va`'s daemon and app ports.
fn served(ns: &str) -> serde_json::Value {
    common::daemon::served(ns, "va")
}

#[test]
fn stats_names_each_app_ports_mode_while_it_lives() {
    let Some(_root) = common::root::shared() else { return };
    let net = etran_up_pair("dmn-stats");
    assert!(served(&net.a).is_null(), "no daemon yet");
    let mut daemon = Daemon::start(&net.a, "dmn-stats");
    let pid = daemon.child.as_ref().unwrap().id();
    assert_eq!(served(&net.a), serde_json::json!({ "pid": pid, "ports": [] }));

    // Two apps: each port by slot, its app's pid, its transport and its mode (compat: a veth
    // port, copy mode; native: a socket on a queue of va, copy mode: veth has no zero copy).
    let mut tcp = DaemonLink::connect(&daemon.sock).unwrap();
    let rt = tcp.register(Transport::Tcp, 1).unwrap();
    let mut homa = DaemonLink::connect(&daemon.sock).unwrap();
    let rh = homa.register(Transport::Homa, 1).unwrap();
    let ports = served(&net.a)["ports"].clone();
    let native = common::on_native();
    let (mode, words) =
        if native { ("copy", "copy mode") } else { ("veth_port", "veth port (copy mode)") };
    let name = |r: &Registration| {
        let q = r.xsks[0].0.queue();
        if native {
            format!("va queue {q}")
        } else {
            r.port.clone()
        }
    };
    let row = |r: &Registration, transport: &str| {
        serde_json::json!({ "slot": r.slot, "pid": std::process::id(), "transport": transport,
                            "port": name(r), "queue": r.xsks[0].0.queue(), "mode": mode,
                            "batching": false })
    };
    assert_eq!(ports, serde_json::json!([row(&rt, "tcp"), row(&rh, "homa")]));
    let table = String::from_utf8(etran(&net.a, &["stats", "va"]).stdout).unwrap();
    assert!(table.contains(&format!("daemon (pid {pid}): 2 app port(s)")), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&name(&rt)) && l.ends_with(words)), "{table}");

    // An app that exits takes its row along; the other stays.
    drop(tcp);
    wait_for("the TCP app's row to go", 5, || {
        served(&net.a)["ports"].as_array().unwrap().len() == 1
    });
    assert_eq!(served(&net.a)["ports"], serde_json::json!([row(&rh, "homa")]));

    // A daemon killed outright leaves no row behind: the table died with it.
    daemon.child.as_mut().unwrap().kill().unwrap();
    daemon.child.as_mut().unwrap().wait().unwrap();
    assert!(served(&net.a).is_null(), "a dead daemon's ports are not shown");
    let table = String::from_utf8(etran(&net.a, &["stats", "va"]).stdout).unwrap();
    assert!(table.contains("no daemon serves va"), "{table}");
}

#[test]
fn bad_input_is_refused_without_harm() {
    let Some(_root) = common::root::shared() else { return };
    let net = etran_up_pair("dmn-bad");
    let mut daemon = Daemon::start(&net.a, "dmn-bad");

    // Garbage: an error reply, then EOF.
    let mut s = DaemonLink::connect(&daemon.sock).unwrap();
    s.stream().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    match s.recv().unwrap().0 {
        Reply::Error { refusal } => {
            assert_eq!(refusal.errno, libc::EPROTO, "{refusal}");
            assert!(refusal.to_string().contains("message length"), "{refusal}")
        }
        r => panic!("unexpected {r:?}"),
    }
    assert!(s.recv().is_err(), "the session is closed");

    // Well-framed nonsense, an unknown version, an unsupported queue count.
    let mut bad_json = (4u32).to_le_bytes().to_vec();
    bad_json.extend_from_slice(b"{{{{");
    let unknown_version =
        proto::encode(&Request::Register { version: 99, transport: Transport::Tcp, queues: 1 });
    let queues = proto::encode(&Request::Register {
        version: proto::PROTOCOL_VERSION,
        transport: Transport::Tcp,
        queues: 4,
    });
    for (bytes, want, errno) in [
        (bad_json, "malformed", libc::EPROTO),
        (unknown_version, "unsupported protocol version", libc::EPROTONOSUPPORT),
        (queues, "queue", libc::EINVAL),
    ] {
        let mut s = DaemonLink::connect(&daemon.sock).unwrap();
        s.stream().write_all(&bytes).unwrap();
        match s.recv().unwrap().0 {
            Reply::Error { refusal } => {
                assert_eq!(refusal.errno, errno, "{refusal}");
                assert!(refusal.to_string().contains(want), "{refusal}")
            }
            r => panic!("unexpected {r:?}"),
        }
    }
    // A client that vanishes mid-message.
    {
        let s = DaemonLink::connect(&daemon.sock).unwrap();
        s.stream().write_all(&[200, 0]).unwrap();
    }

    // The daemon still serves.
    assert!(daemon.alive());
    let mut ok = DaemonLink::connect(&daemon.sock).unwrap();
    let r = ok.register(Transport::Tcp, 1).unwrap();
    assert!(has_port(&net.a, &r));
    drop(ok);
    wait_for("the port to go", 5, || !has_port(&net.a, &r) && port_links(&net.a).is_empty());
    assert!(daemon.terminate().success());
    assert!(!daemon.sock.exists());
}

#[test]
fn daemon_needs_etran_up_and_refuses_a_live_socket() {
    let Some(_root) = common::root::shared() else { return };
    let net = VethPair::new("dmn-noup");
    let out = etran(&net.a, &["daemon", "--iface", "va", "--socket", "/tmp/etran-test-noup.sock"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line error, got {err:?}");
    assert!(err.contains("etran up va"), "{err}");
    assert!(!Path::new("/tmp/etran-test-noup.sock").exists());

    // A second daemon on a live socket is refused; a stale socket file is replaced.
    let out = etran(&net.a, &["up", "va"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let daemon = Daemon::start(&net.a, "dmn-noup");
    let sock = daemon.sock.to_str().unwrap().to_string();
    let out = etran(&net.a, &["daemon", "--iface", "va", "--socket", &sock]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another"), "{err}");
    assert!(daemon.sock.exists(), "the live daemon's socket is untouched");
    let out = etran(&net.a, &["daemon", "--iface", "va", "--socket", "/tmp/etran-test-noup.sock"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already serves va"), "{err}");
    assert!(!Path::new("/tmp/etran-test-noup.sock").exists());

    // A daemon that dies hard leaves its socket file and its apps' ports; the next one
    // replaces the stale file and removes the stale ports.
    let mut app = DaemonLink::connect(&daemon.sock).unwrap();
    let r = app.register(Transport::Tcp, 1).unwrap();
    let mut daemon = daemon;
    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(daemon.sock.exists() && has_port(&net.a, &r));
    drop(app);
    let mut again = Daemon::start_in(&net.a, daemon.dir.clone());
    assert!(port_links(&net.a).is_empty(), "stale ports removed: {:?}", port_links(&net.a));
    assert!(app_ports(&net.a).is_empty(), "stale slots cleared");
    assert!(again.log().contains("stale"), "{}", again.log());
    let pairs = if common::on_native() { 2 } else { 3 };
    assert_eq!(
        daemon_links(&net.a).len(),
        2 * pairs,
        "the dead daemon's pairs replaced, not added"
    );
    let st = again.terminate();
    assert!(st.success(), "{st}: {}", again.log());
    assert!(!daemon.sock.exists());
}
