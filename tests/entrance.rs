//! Table-driven BPF_PROG_TEST_RUN fixtures for the entrance program: packet in → verdict, packet
//! out, counters. Plus a mutation fuzzer: no input may make it do anything but pass or drop, and
//! every frame is counted exactly once. Needs root (CAP_BPF).
mod common;

use std::mem::MaybeUninit;

use common::{
    fixture::{class, drop_total, Rng},
    packet::*,
};
use etran::{
    bpf::entrance::{EntranceSkel, EntranceSkelBuilder},
    loader::counters::{self, Counters},
};
use libbpf_rs::{
    skel::{OpenSkel, SkelBuilder},
    Btf, MapHandle, ProgramInput,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Pass,
    Drop(&'static str),
}

struct Fixture {
    name: &'static str,
    frame: Vec<u8>,
    class: &'static str,
    outcome: Outcome,
}

fn fixtures() -> Vec<Fixture> {
    let tcp_syn = eth(ETH_P_IP, &ipv4(IPPROTO_TCP, &tcp(40000, 80, 0x02, &[])));
    let mut bad_ihl = tcp_syn.clone();
    bad_ihl[14] = 0x44;
    let mut bad_version = tcp_syn.clone();
    bad_version[14] = 0x65;
    let mut long_tot_len = tcp_syn.clone();
    long_tot_len[16..18].copy_from_slice(&1500u16.to_be_bytes());
    let mut tot_below_header = tcp_syn.clone();
    tot_below_header[16..18].copy_from_slice(&10u16.to_be_bytes());
    let mut tcp_doff_small = tcp_syn.clone();
    tcp_doff_small[14 + 20 + 12] = 4 << 4;
    let mut tcp_doff_past_end = tcp_syn.clone();
    tcp_doff_past_end[14 + 20 + 12] = 15 << 4;
    let tcp_cut = eth(ETH_P_IP, &ipv4(IPPROTO_TCP, &tcp(1, 2, 0x10, &[])[..12]));
    let homa_cut = eth(ETH_P_IP, &ipv4(IPPROTO_HOMA, &homa(1, 2, 0x10, &[])[..20]));
    let mut later_fragment = eth(ETH_P_IP, &ipv4(IPPROTO_TCP, &[0xab; 40]));
    later_fragment[20..22].copy_from_slice(&0x00b9u16.to_be_bytes());
    let mut ip_options = eth(ETH_P_IP, &ipv4(IPPROTO_UDP, &[1, 1, 1, 0]));
    ip_options[14] = 0x46; // ihl 6: one word of options (NOPs and EOL)
    let f = |name, frame, class, outcome| Fixture { name, frame, class, outcome };
    vec![
        f("tcp syn", tcp_syn, "tcp", Outcome::Pass),
        f(
            "tcp data",
            eth(ETH_P_IP, &ipv4(IPPROTO_TCP, &tcp(9, 7, 0x18, b"hello"))),
            "tcp",
            Outcome::Pass,
        ),
        f(
            "homa data",
            eth(ETH_P_IP, &ipv4(IPPROTO_HOMA, &homa(1, 2, 0x10, b"x"))),
            "homa",
            Outcome::Pass,
        ),
        f(
            "udp",
            eth(ETH_P_IP, &ipv4(IPPROTO_UDP, &udp(53, 53, b"q"))),
            "ipv4_other",
            Outcome::Pass,
        ),
        f(
            "icmp echo",
            eth(ETH_P_IP, &ipv4(IPPROTO_ICMP, &icmp_echo())),
            "ipv4_other",
            Outcome::Pass,
        ),
        f("ipv4 options", ip_options, "ipv4_other", Outcome::Pass),
        f("arp request", eth(ETH_P_ARP, &arp_request()), "arp", Outcome::Pass),
        f("ipv6", eth(ETH_P_IPV6, &ipv6()), "ipv6", Outcome::Pass),
        f("unknown ethertype", eth(0x88b5, &[0; 46]), "other", Outcome::Pass),
        f("tcp later fragment", later_fragment, "tcp", Outcome::Pass),
        f("ethernet only", eth(ETH_P_IP, &[]), "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("ipv4 cut short", eth(ETH_P_IP, &[0x45; 10]), "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("ipv4 ihl 4", bad_ihl, "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("ipv4 version 6", bad_version, "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("ipv4 tot_len past frame", long_tot_len, "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("ipv4 tot_len below header", tot_below_header, "ipv4_other", Outcome::Drop("bad_ipv4")),
        f("tcp header cut", tcp_cut, "tcp", Outcome::Drop("short_l4")),
        f("tcp doff 4", tcp_doff_small, "tcp", Outcome::Drop("short_l4")),
        f("tcp doff past end", tcp_doff_past_end, "tcp", Outcome::Drop("short_l4")),
        f("homa header cut", homa_cut, "homa", Outcome::Drop("short_l4")),
    ]
}

struct Harness<'a> {
    skel: EntranceSkel<'a>,
    btf: Btf<'static>,
    traffic: MapHandle,
    drops: MapHandle,
}

impl Harness<'_> {
    fn new(storage: &mut MaybeUninit<libbpf_rs::OpenObject>) -> Harness<'_> {
        let open = EntranceSkelBuilder::default().open(storage).expect("open entrance");
        let skel = open.load().expect("the verifier accepts the entrance program");
        let id =
            libbpf_rs::Program::id_from_fd(std::os::fd::AsFd::as_fd(&skel.progs.etran_entrance))
                .unwrap();
        let btf = Btf::from_prog_id(id).unwrap();
        let traffic = MapHandle::try_from(&skel.maps.etran_traffic).unwrap();
        let drops = MapHandle::try_from(&skel.maps.etran_drops).unwrap();
        Harness { skel, btf, traffic, drops }
    }

    fn counters(&self) -> Counters {
        counters::read(&self.btf, &self.traffic, &self.drops).unwrap()
    }

    /// Runs one frame; returns the verdict and the frame as the program left it.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let input =
            ProgramInput { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let output = self.skel.progs.etran_entrance.test_run(input).expect("test run");
        let len = output.data.as_ref().map_or(0, |d| d.len());
        let verdict = output.return_value;
        out.truncate(len);
        (verdict, out)
    }
}

fn class_total(c: &Counters, name: &str) -> (u64, u64) {
    let row = class(c, name);
    (row.pass.packets, row.drop.packets)
}

#[test]
fn entrance_fixtures() {
    let mut storage = MaybeUninit::uninit();
    let h = Harness::new(&mut storage);
    for fx in fixtures() {
        let before = h.counters();
        let (verdict, out) = h.run(&fx.frame);
        let after = h.counters();
        let (pass0, drop0) = class_total(&before, fx.class);
        let (pass1, drop1) = class_total(&after, fx.class);
        match fx.outcome {
            Outcome::Pass => {
                assert_eq!(verdict, XDP_PASS, "{}: verdict", fx.name);
                assert_eq!(out, fx.frame, "{}: a passed frame is untouched", fx.name);
                assert_eq!((pass1 - pass0, drop1 - drop0), (1, 0), "{}: counted as pass", fx.name);
            }
            Outcome::Drop(reason) => {
                assert_eq!(verdict, XDP_DROP, "{}: verdict", fx.name);
                assert_eq!((pass1 - pass0, drop1 - drop0), (0, 1), "{}: counted as drop", fx.name);
                assert_eq!(
                    drop_total(&after, reason) - drop_total(&before, reason),
                    1,
                    "{}: reason {reason}",
                    fx.name
                );
            }
        }
        let bytes =
            |c: &Counters| c.traffic.iter().map(|r| r.pass.bytes + r.drop.bytes).sum::<u64>();
        assert_eq!(bytes(&after) - bytes(&before), fx.frame.len() as u64, "{}: bytes", fx.name);
    }
}

#[test]
fn entrance_survives_mutated_frames() {
    let mut storage = MaybeUninit::uninit();
    let h = Harness::new(&mut storage);
    let seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.frame).collect();
    let mut rng = Rng(0x5eed_e7a0);
    let before = h.counters();
    let runs = 3000;
    for i in 0..runs {
        let mut frame = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(3) {
                0 => {
                    let at = rng.below(frame.len());
                    frame[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(frame.len());
                    frame[at] = rng.next() as u8;
                }
                _ => frame.truncate(14.max(rng.below(frame.len() + 1))),
            }
        }
        let (verdict, _) = h.run(&frame);
        assert!(
            verdict == XDP_PASS || verdict == XDP_DROP,
            "run {i}: verdict {verdict} for {frame:02x?}"
        );
    }
    let after = h.counters();
    let total =
        |c: &Counters| c.traffic.iter().map(|r| r.pass.packets + r.drop.packets).sum::<u64>();
    assert_eq!(total(&after) - total(&before), runs, "every frame is counted exactly once");
    let drops = |c: &Counters| c.drops.iter().map(|d| d.count.packets).sum::<u64>();
    let class_drops = |c: &Counters| c.traffic.iter().map(|r| r.drop.packets).sum::<u64>();
    assert_eq!(
        drops(&after) - drops(&before),
        class_drops(&after) - class_drops(&before),
        "every drop has a reason"
    );
}
