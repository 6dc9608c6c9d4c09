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
//! Only where the daemon says the datapath paces Homa (`Registered::paced`): elsewhere a frame
//! completes as soon as the kernel sent it, and nothing holds DATA back.
use std::time::Duration;

/// Frames a paced app keeps written and not completed: a short message waits behind at most
/// this many of a long one's packets (16 full packets: 19 µs at 10 Gbit/s), and the app must
/// come back within their time on the link to keep it busy ([`RECHECK`]).
pub const BACKLOG: u32 = 16;

/// How soon a sender holding DATA back looks for completions again (the completion ring wakes
/// nobody): 16 full packets take 19 µs at 10 Gbit/s.
pub const RECHECK: Duration = Duration::from_micros(10);

/// Whether an app's sender may hand the kernel more DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// The most frames written and not completed before DATA waits; `None`: no bound.
    limit: Option<u32>,
}

impl Backlog {
    /// The bound of an app whose datapath paces Homa when `paced` ([`BACKLOG`]), else none.
    pub fn new(paced: bool) -> Backlog {
        Backlog { limit: paced.then_some(BACKLOG) }
    }

    /// Whether DATA may go with `unfinished` frames written and not completed.
    pub fn data_may_go(&self, unfinished: u32) -> bool {
        self.limit.is_none_or(|limit| unfinished < limit)
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
        let (paced, free) = (Backlog::new(true), Backlog::new(false));
        assert!(paced.data_may_go(0) && paced.data_may_go(BACKLOG - 1));
        assert!(!paced.data_may_go(BACKLOG) && !paced.data_may_go(BACKLOG + 100));
        assert!(free.data_may_go(0) && free.data_may_go(u32::MAX));
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
            let b = Backlog::new(paced);
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
