//! The app's half of Homa's pacer. The kernel's half (`src/bpf/homa/homa_pace.h`, native with
//! the packet queue) keeps the NIC's queue short: a DATA packet the link clock puts too far
//! ahead waits in the app socket's packet queue until the link is nearly free. That alone would
//! only move the backlog from the NIC into the packet queue, in the order the app sent it: a
//! short message the app picks after a long one's hundred packets would still wait behind
//! them. So the app hands the kernel little at a time: a queued frame completes only when it
//! leaves, and while [`BACKLOG`] frames are written and not completed its sender holds DATA
//! back (control frames still go), so its SRPT pick ([`super::msgout`]) is made when the link
//! is nearly free, as HomaModule's pacer picks from its throttled RPCs.
//!
//! Only where the daemon says the datapath paces Homa (`Registered::homa_link_mbps`):
//! elsewhere a frame completes as soon as the kernel sent it, and nothing holds DATA back.
use std::time::Duration;

use super::MAX_PAYLOAD;

/// Frames a paced app keeps written and not completed: a short message waits behind at most
/// this many of a long one's packets (16 full packets: 20 µs at 10 Gbit/s), and the app must
/// come back before the link drained them ([`Backlog::recheck`]) to keep it busy.
pub const BACKLOG: u32 = 16;

/// Whether an app's sender may hand the kernel more DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The link rate the datapath paces at, Mbit/s; 0: it does not (no bound).
    link_mbps: u32,
}

impl Backlog {
    /// The bound of an app whose datapath paces Homa at `link_mbps` ([`BACKLOG`] frames), or
    /// of one whose datapath does not (0: none).
    pub fn new(link_mbps: u32) -> Backlog {
        Backlog { link_mbps }
    }

    /// Whether DATA may go with `unfinished` frames written and not completed.
    pub fn data_may_go(&self, unfinished: u32) -> bool {
        self.link_mbps == 0 || unfinished < BACKLOG
    }

    /// How soon a sender holding DATA back looks for completions again (the completion ring
    /// wakes nobody): when the link has sent half the backlog (full 1500-byte IPv4 packets:
    /// 9.6 µs at 10 Gbit/s, 0.96 ms at 100 Mbit/s), so it sleeps while the other half keeps
    /// the link busy. At least 1 µs.
    pub fn recheck(&self) -> Duration {
        let bits = u64::from(BACKLOG / 2) * u64::from(MAX_PAYLOAD + 76) * 8;
        let ns = bits * 1000 / u64::from(self.link_mbps.max(1));
        Duration::from_nanos(ns.max(1000))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::{
        bpf::homa::types::etran_homa_tx_hdr,
        transport::homa::{
            id::IdBlock,
            msgout,
            rpc::{Endpoint, TX_HDR_LEN},
            MAX_PAYLOAD,
        },
    };

    #[test]
    fn only_a_paced_app_holds_data_back() {
        let (paced, free) = (Backlog::new(10_000), Backlog::new(0));
        assert!(paced.data_may_go(0) && paced.data_may_go(BACKLOG - 1));
        assert!(!paced.data_may_go(BACKLOG) && !paced.data_may_go(BACKLOG + 100));
        assert!(free.data_may_go(0) && free.data_may_go(u32::MAX));
        // Half the backlog: 8 full IPv4 packets of 1500 bytes, 96,000 bits.
        assert_eq!(paced.recheck(), Duration::from_nanos(9600));
        assert_eq!(Backlog::new(100).recheck(), Duration::from_micros(960));
        assert_eq!(Backlog::new(1_000_000).recheck(), Duration::from_micros(1), "at least");
    }

    /// The DATA offsets an endpoint writes while its backlog lets it, frames completing only
    /// when the test says (`unfinished` is what is written and not completed).
    fn send(e: &mut Endpoint, b: Backlog, unfinished: &mut u32) -> Vec<(u64, u32)> {
        let mut frame = vec![0u8; TX_HDR_LEN + MAX_PAYLOAD as usize];
        let mut sent = Vec::new();
        while let Some(len) = e.next_frame_as(&mut frame, b.data_may_go(*unfinished)) {
            *unfinished += 1;
            assert!(len >= TX_HDR_LEN);
            // SAFETY: plain data read from at least its size.
            let h: etran_homa_tx_hdr = unsafe { std::ptr::read_unaligned(frame.as_ptr().cast()) };
            if h.len > 0 {
                sent.push((h.key.id, h.offset));
            }
        }
        sent
    }

    /// A long request queued first, then a short one: unpaced, the app hands the kernel the
    /// long one's unscheduled bytes at once and the short one after them; paced, it hands over
    /// BACKLOG frames, and the short one's packets go first once frames complete (its SRPT
    /// pick made late), while the long one waits.
    #[test]
    fn a_paced_sender_picks_the_short_message_when_the_link_frees() {
        let server = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), 7000);
        for paced in [false, true] {
            let mut e = Endpoint::new(5000, IdBlock::of(100, 1000));
            let b = Backlog::new(if paced { 10_000 } else { 0 });
            let long = e.start_request(server, vec![1; 60_000]).unwrap();
            let mut unfinished = 0;
            let first = send(&mut e, b, &mut unfinished);
            let short = e.start_request(server, vec![2; 2 * MAX_PAYLOAD as usize]).unwrap();
            let unsched = msgout::unscheduled(60_000, msgout::UNSCHED_BYTES);
            let long_packets = unsched.div_ceil(MAX_PAYLOAD) as usize;
            if !paced {
                assert_eq!(first.len(), long_packets, "every unscheduled packet at once");
                let then = send(&mut e, b, &mut unfinished);
                assert_eq!(then.len(), 2);
                assert!(then.iter().all(|&(id, _)| id == short.id.wire()));
                continue;
            }
            assert_eq!(first.len(), BACKLOG as usize, "the backlog's worth");
            assert!(first.iter().all(|&(id, _)| id == long.id.wire()));
            assert!(send(&mut e, b, &mut unfinished).is_empty(), "nothing completed: held");
            // Two frames complete: the short message goes, then the long one goes on.
            unfinished -= 2;
            let then = send(&mut e, b, &mut unfinished);
            let offsets: Vec<_> =
                then.iter().map(|&(id, off)| (id == short.id.wire(), off)).collect();
            assert_eq!(offsets, [(true, 0), (true, MAX_PAYLOAD)], "the short one first");
            unfinished = 0;
            let rest = send(&mut e, b, &mut unfinished);
            assert_eq!(rest.first(), Some(&(long.id.wire(), BACKLOG * MAX_PAYLOAD)));
        }
    }
}
