//! Loss and timeouts: one RPC's timer, driven by ticks, as homa_timer.c runs it. Homa's
//! receiver drives recovery: a side that expects data and hears nothing for `resend_ticks`
//! asks for it (RESEND), again every `resend_interval` ticks, and gives the RPC up after
//! `timeout_ticks` (the app gets ETIMEDOUT). A server whose response is all sent asks the
//! client for an ACK (NEED_ACK) so that it can forget the RPC.
//!
//! The answers to those requests live elsewhere: a RESEND is answered by the sender
//! ([`super::msgout::Sender::on_resend`]: the bytes again, or BUSY when it chose not to send
//! them yet), by BUSY from the server's ingress when its app still holds the request (so a
//! server app that is not scheduled still answers), by RPC_UNKNOWN when the RPC is unknown; a NEED_ACK by an ACK once the client holds the whole response
//! ([`super::acks`]). DATA, GRANT and BUSY reset the silence ([`RpcTimer::heard`]).
//!
//! Where we part from HomaModule: a server waiting for an ACK asks again every
//! `resend_interval` ticks rather than every tick, and forgets the RPC after `timeout_ticks`
//! without one (HomaModule keeps it until its socket closes), so a client that died cannot pin
//! a server's state.
use super::{msgin::MessageIn, wire::ResendLength, MAX_PAYLOAD};

/// The timer's parameters; [`LossConfig::default`] is HomaModule's (homa_utils.c), with its
/// 1 ms tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossConfig {
    /// Silent ticks before the first RESEND (5).
    pub resend_ticks: u32,
    /// Ticks between RESENDs (5).
    pub resend_interval: u32,
    /// Silent ticks before the RPC is given up (100).
    pub timeout_ticks: u32,
    /// Ticks after the one that found a server's response all sent before it asks for the
    /// ACK (2).
    pub request_ack_ticks: u32,
}

impl Default for LossConfig {
    fn default() -> LossConfig {
        LossConfig { resend_ticks: 5, resend_interval: 5, timeout_ticks: 100, request_ack_ticks: 2 }
    }
}

/// Where an RPC stands, on one side, as a tick sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Receiving a message (a server its request, a client its response): `received` bytes
    /// of it so far, `granted` the most its sender may have sent.
    Receiving { received: u32, granted: u32 },
    /// Receiving a message whose granted bytes all arrived: it waits for the receiver's own
    /// grant scheduler, so nothing is missing and no RESEND asks for it (HomaModule). Silent
    /// that long, it probes the scheduler (our kernel's gen sends a GRANT DATA has not
    /// answered again: it may have been lost). The wait is ours, not the peer's silence
    /// (HomaModule's timer lets such an RPC be: "we've received everything that we've
    /// granted, so we shouldn't expect to hear anything until we grant more"): it is given up
    /// only when nothing at all came from its peer (any packet, about any RPC) for the
    /// timeout, `peer_silent` ticks: a peer gone while we waited (the app learns its grants
    /// from DATA, so one that moved towards a dead peer would not tell it).
    AwaitingGrant { peer_silent: u32 },
    /// A client sending its request (and waiting for the response once all is sent): `sent`
    /// bytes so far, `granted` the most it may send.
    ClientSending { sent: u32, granted: u32 },
    /// A server's app holds the request.
    InService,
    /// A server sending its response: `sent` of `length` bytes.
    ServerSending { sent: u32, length: u32 },
}

/// Silent ticks after which a message waiting for its grant may probe (the caller sends one
/// per peer per resend interval): its turn may have come without a word to it (the kernel
/// wakes it only where a ranking sees it), or its GRANT was lost. Sooner than a RESEND: with
/// 5, short messages waiting behind each other on one peer lost their turns to a long one.
pub const GRANT_PROBE_TICKS: u32 = 2;

/// What a tick asks of the RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Send RESENDs for what is missing ([`resend_requests`]).
    Resend,
    /// Probe our own grant scheduler for a message waiting for its grant (due at every tick
    /// once silent long enough: the caller limits them).
    Probe,
    /// Ask the client for an ACK.
    NeedAck,
    /// Give up: the peer is gone. A client's app gets ETIMEDOUT; a server forgets the RPC.
    Abort,
}

/// One RPC's timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RpcTimer {
    /// Ticks the RPC waited on its peer without hearing from it.
    silent: u32,
    /// Ticks a server waited for the ACK of its response.
    unacked: u32,
    /// The last tick found the message waiting for our own grant ([`Phase::AwaitingGrant`]).
    awaiting_grant: bool,
}

impl RpcTimer {
    /// DATA, GRANT or BUSY arrived for the RPC: the peer is alive.
    pub fn heard(&mut self) {
        self.silent = 0;
    }

    /// One tick. The RPC counts silence only while it waits on its peer: receiving with
    /// granted bytes missing, or a client whose request is out as far as it may go. While it
    /// has bytes it may send, or its app holds the request, the next move is its own.
    pub fn tick(&mut self, phase: Phase, cfg: &LossConfig) -> Action {
        let awaiting = matches!(phase, Phase::AwaitingGrant { .. });
        if self.awaiting_grant && !awaiting {
            // Our grant moved: the peer's silence counts from now, not from our own wait.
            self.silent = 0;
        }
        self.awaiting_grant = awaiting;
        let waiting = match phase {
            Phase::Receiving { received, granted } => received < granted,
            Phase::AwaitingGrant { peer_silent } => {
                // A probe may go at every tick once silent long enough: the caller sends one
                // per peer per resend interval, its waiting messages taking turns. Our own
                // scheduler may make a long message wait past the timeout (SRPT, one message
                // per peer, on a loaded host); giving it up then left the peer's side waiting
                // for ever (a server app that forgot a request answers its client's RESENDs
                // with nothing, and the client hears the server through its other RPCs).
                self.silent = self.silent.saturating_add(1);
                return if peer_silent >= cfg.timeout_ticks {
                    Action::Abort
                } else if self.silent >= GRANT_PROBE_TICKS {
                    Action::Probe
                } else {
                    Action::None
                };
            }
            Phase::ClientSending { sent, granted } => sent >= granted,
            Phase::InService => false,
            Phase::ServerSending { sent, length } => {
                self.silent = 0;
                if sent < length {
                    self.unacked = 0;
                    return Action::None;
                }
                // HomaModule's done_timer_ticks: the tick that first finds the response all
                // sent starts the count without counting itself (it may come right after the
                // last packet left), and the NEED_ACK goes `request_ack_ticks` ticks after it:
                // the client had at least that many whole ticks to send its next request,
                // which carries the ack.
                let since = self.unacked;
                self.unacked += 1;
                return Self::every(since, cfg.request_ack_ticks, cfg, Action::NeedAck);
            }
        };
        if !waiting {
            self.silent = 0;
            return Action::None;
        }
        self.silent += 1;
        Self::every(self.silent, cfg.resend_ticks, cfg, Action::Resend)
    }

    /// `action` at `first` ticks and every `resend_interval` after; abort at `timeout_ticks`.
    fn every(ticks: u32, first: u32, cfg: &LossConfig, action: Action) -> Action {
        if ticks >= cfg.timeout_ticks {
            Action::Abort
        } else if ticks >= first && (ticks - first) % cfg.resend_interval.max(1) == 0 {
            action
        } else {
            Action::None
        }
    }
}

/// The RESENDs (offset, length) a receiver sends: one per range below `granted` not received,
/// or, when nothing of the message arrived (a client that never saw its response start), its
/// first packet only, as HomaModule asks: that packet names the message's length, and the gaps
/// are asked for from there, so that a server whose response is merely slow is not made to
/// send all it sent again.
pub fn resend_requests(msg: Option<&MessageIn>, granted: u32) -> Vec<(u32, ResendLength)> {
    match msg {
        Some(m) if m.received() > 0 => m
            .resend_ranges(granted)
            .into_iter()
            .map(|(offset, len)| (offset, ResendLength::Bytes(len)))
            .collect(),
        _ => vec![(0, ResendLength::Bytes(MAX_PAYLOAD))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(timer: &mut RpcTimer, phase: Phase, ticks: u32) -> Vec<(u32, Action)> {
        let cfg = LossConfig::default();
        (1..=ticks)
            .map(|t| (t, timer.tick(phase, &cfg)))
            .filter(|(_, a)| *a != Action::None)
            .collect()
    }

    /// The ticks at which `acts` holds `action`.
    fn when(acts: &[(u32, Action)], action: Action) -> Vec<u32> {
        acts.iter().filter(|(_, a)| *a == action).map(|&(t, _)| t).collect()
    }

    #[test]
    fn silence_brings_resends_then_an_abort() {
        let mut t = RpcTimer::default();
        let acts = run(&mut t, Phase::Receiving { received: 10, granted: 100 }, 100);
        assert_eq!(
            when(&acts, Action::Resend),
            (1..20).map(|k| 5 * k).collect::<Vec<_>>(),
            "ticks 5, 10, .. 95"
        );
        assert_eq!(acts.last(), Some(&(100, Action::Abort)));
    }

    #[test]
    fn hearing_from_the_peer_restarts_the_count() {
        let cfg = LossConfig::default();
        let phase = Phase::Receiving { received: 0, granted: 100 };
        let mut t = RpcTimer::default();
        for _ in 0..1000 {
            for _ in 0..4 {
                assert_eq!(t.tick(phase, &cfg), Action::None);
            }
            t.heard(); // a BUSY every 4 ticks keeps it alive without resends
        }
    }

    #[test]
    fn no_silence_while_the_move_is_ours() {
        let mut t = RpcTimer::default();
        assert_eq!(run(&mut t, Phase::Receiving { received: 100, granted: 100 }, 500), []);
        assert_eq!(run(&mut t, Phase::ClientSending { sent: 10, granted: 20 }, 500), []);
        assert_eq!(run(&mut t, Phase::InService, 500), []);
        assert_eq!(run(&mut t, Phase::ServerSending { sent: 10, length: 20 }, 500), []);
    }

    #[test]
    fn a_client_with_its_request_out_waits_for_the_response() {
        let mut t = RpcTimer::default();
        let acts = run(&mut t, Phase::ClientSending { sent: 20, granted: 20 }, 12);
        assert_eq!(acts, [(5, Action::Resend), (10, Action::Resend)]);
        // Nothing of the response arrived: ask for its first packet.
        assert_eq!(resend_requests(None, 0), [(0, ResendLength::Bytes(MAX_PAYLOAD))]);
    }

    /// A message whose granted bytes all arrived waits for our own scheduler: it probes, and is
    /// not given up while its peer is heard from, however long the wait (before, it was given
    /// up after the timeout of its own silence, and a server that gave up a request left its
    /// client waiting for ever). A peer silent for the timeout ends it. Once the grant moves,
    /// the peer's silence about it counts from then: RESENDs, and the timeout.
    #[test]
    fn waiting_for_our_own_grant_times_out_only_on_a_silent_peer() {
        let cfg = LossConfig::default();
        let mut t = RpcTimer::default();
        let alive = Phase::AwaitingGrant { peer_silent: 3 };
        let acts = run(&mut t, alive, 10 * cfg.timeout_ticks);
        assert!(acts.iter().all(|&(_, a)| a == Action::Probe), "only probes: {acts:?}");
        assert_eq!(acts.first(), Some(&(GRANT_PROBE_TICKS, Action::Probe)));
        let acts = run(&mut t, Phase::Receiving { received: 10, granted: 100 }, 100);
        assert_eq!(when(&acts, Action::Resend)[..2], [5, 10], "silence counted from the grant");
        assert_eq!(acts.last(), Some(&(100, Action::Abort)), "a peer gone is still found");
        let mut t = RpcTimer::default();
        let gone = Phase::AwaitingGrant { peer_silent: cfg.timeout_ticks };
        assert_eq!(t.tick(gone, &cfg), Action::Abort);
    }

    #[test]
    fn a_server_asks_for_its_ack_then_forgets() {
        let mut t = RpcTimer::default();
        let acts = run(&mut t, Phase::ServerSending { sent: 20, length: 20 }, 101);
        // The first tick only notes the response all sent (it may come a moment after the
        // last packet): the client has 2 whole ticks before it is asked (HomaModule's rule).
        assert_eq!(when(&acts, Action::NeedAck)[..3], [3, 8, 13]);
        assert_eq!(acts.last(), Some(&(101, Action::Abort)), "a client gone for good");
    }

    #[test]
    fn resend_requests_name_each_gap_below_the_grant() {
        let mut m = MessageIn::new(10_000).expect("small");
        m.add(1000, &[0; 1000]).expect("inside");
        m.add(5000, &[0; 1000]).expect("inside");
        assert_eq!(
            resend_requests(Some(&m), 8000),
            [
                (0, ResendLength::Bytes(1000)),
                (2000, ResendLength::Bytes(3000)),
                (6000, ResendLength::Bytes(2000))
            ]
        );
    }
}
