//! The close half of the TCP state machine (RFC 9293 3.3.2, from ESTABLISHED on), as the app
//! library sees it: pure, events in, state out. The kernel's fast path sends and acknowledges
//! the FINs; the library feeds this machine with what it asked for ([`Event::Close`]) and what
//! RX metadata reported ([`Event::PeerFin`], [`Event::FinAcked`]), and releases the connection
//! to the daemon once it [`State::is_closed`].
//!
//! TIME_WAIT here means "we closed first and it is over for the app": the daemon holds the
//! 4-tuple for the TIME_WAIT period ([`State::time_wait`] tells it to), not the app. What the
//! daemon does with segments then ([`time_wait_segment`]), and with a RST on an established
//! connection ([`check_rst`]), is decided here too.

use super::segment::{ACK, FIN, RST, SYN};

/// A connection's close state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    Established,
    /// We closed; our FIN is queued or sent, not acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; the peer may still send.
    FinWait2,
    /// Both closed at once: our FIN is not acknowledged yet, the peer's arrived.
    Closing,
    /// We closed first, both FINs exchanged and ours acknowledged.
    TimeWait,
    /// The peer closed; we may still send.
    CloseWait,
    /// The peer closed first, then we did; our FIN is not acknowledged yet.
    LastAck,
    /// Over: the peer closed first and acknowledged our FIN, or the connection was reset,
    /// aborted or timed out.
    Closed,
}

/// What moves the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The app closed its sending side.
    Close,
    /// The peer's FIN arrived (in order, after all its data).
    PeerFin,
    /// The peer acknowledged our FIN.
    FinAcked,
    /// Reset, abort or timeout: nothing more is exchanged.
    Abort,
}

impl State {
    /// The state after `ev`. Events that mean nothing in a state (a repeated close, a FIN
    /// acknowledgement with no FIN sent) leave it unchanged.
    pub fn on(self, ev: Event) -> State {
        use State::*;
        match (self, ev) {
            (_, Event::Abort) => Closed,
            (Established, Event::Close) => FinWait1,
            (Established, Event::PeerFin) => CloseWait,
            (FinWait1, Event::FinAcked) => FinWait2,
            (FinWait1, Event::PeerFin) => Closing,
            (FinWait2, Event::PeerFin) | (Closing, Event::FinAcked) => TimeWait,
            (CloseWait, Event::Close) => LastAck,
            (LastAck, Event::FinAcked) => Closed,
            (s, _) => s,
        }
    }

    /// The app may still queue data.
    pub fn can_send(self) -> bool {
        matches!(self, State::Established | State::CloseWait)
    }

    /// The app closed its sending side (a FIN is due or out).
    pub fn fin_queued(self) -> bool {
        matches!(self, State::FinWait1 | State::Closing | State::LastAck)
    }

    /// Nothing more will be exchanged: the connection can be released.
    pub fn is_closed(self) -> bool {
        matches!(self, State::TimeWait | State::Closed)
    }

    /// Whether the 4-tuple must be held in TIME_WAIT once released (we closed first).
    pub fn time_wait(self) -> bool {
        self == State::TimeWait
    }
}

/// What a RST on an established connection does (RFC 5961 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstCheck {
    /// Exactly at `rcv_nxt`: the connection is reset.
    Reset,
    /// Elsewhere in the receive window: answer with a challenge ACK (a genuine peer then sends
    /// a RST at the right sequence number; a blind attacker cannot).
    ChallengeAck,
    /// Outside the window: ignored.
    Ignore,
}

pub fn check_rst(seq: u32, rcv_nxt: u32, rcv_wnd: u32) -> RstCheck {
    match seq.wrapping_sub(rcv_nxt) {
        0 => RstCheck::Reset,
        off if off < rcv_wnd.max(1) => RstCheck::ChallengeAck,
        _ => RstCheck::Ignore,
    }
}

/// What a segment for a 4-tuple in TIME_WAIT gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWaitAction {
    Ignore,
    /// Our last ACK again (an old SYN, a stray segment).
    Ack,
    /// The peer's FIN again (our ACK was lost): ACK it and restart the period.
    AckAndRestart,
    /// A SYN beyond the old stream to a port still listening: TIME_WAIT ends and the SYN opens
    /// a new connection (RFC 1122 4.2.2.13, as Linux does).
    Reopen,
}

/// `flags` and `seq` of the segment, `rcv_nxt` where the old stream ended (past the peer's
/// FIN), `listening`: the local port still accepts connections.
pub fn time_wait_segment(flags: u8, seq: u32, rcv_nxt: u32, listening: bool) -> TimeWaitAction {
    if flags & RST != 0 {
        return TimeWaitAction::Ignore; // RFC 1337: a RST must not cut TIME_WAIT short
    }
    if flags & (SYN | ACK) == SYN {
        let newer = super::seq::after(seq, rcv_nxt);
        return if newer && listening { TimeWaitAction::Reopen } else { TimeWaitAction::Ack };
    }
    if flags & FIN != 0 {
        return TimeWaitAction::AckAndRestart;
    }
    TimeWaitAction::Ignore
}

#[cfg(test)]
mod tests {
    use super::{Event::*, State::*, *};

    fn run(events: &[Event]) -> Vec<State> {
        let mut s = Established;
        events
            .iter()
            .map(|&e| {
                s = s.on(e);
                s
            })
            .collect()
    }

    #[test]
    fn active_close() {
        assert_eq!(run(&[Close, FinAcked, PeerFin]), [FinWait1, FinWait2, TimeWait]);
        assert!(TimeWait.is_closed() && TimeWait.time_wait());
    }

    #[test]
    fn passive_close() {
        assert_eq!(run(&[PeerFin, Close, FinAcked]), [CloseWait, LastAck, Closed]);
        assert!(Closed.is_closed() && !Closed.time_wait());
    }

    #[test]
    fn simultaneous_close() {
        assert_eq!(run(&[Close, PeerFin, FinAcked]), [FinWait1, Closing, TimeWait]);
    }

    /// One segment may carry both the peer's FIN and the ACK of ours: the library applies the
    /// acknowledgement first (as ingress does), straight to TIME_WAIT.
    #[test]
    fn fin_and_ack_together() {
        assert_eq!(FinWait1.on(FinAcked).on(PeerFin), TimeWait);
    }

    #[test]
    fn send_side_follows_the_close() {
        let can: Vec<bool> = run(&[PeerFin, Close]).iter().map(|s| s.can_send()).collect();
        assert_eq!(can, [true, false]);
        assert!(Established.can_send());
        assert!(!FinWait2.can_send() && !TimeWait.can_send());
        assert!(FinWait1.fin_queued() && Closing.fin_queued() && LastAck.fin_queued());
        assert!(!FinWait2.fin_queued() && !CloseWait.fin_queued());
    }

    #[test]
    fn meaningless_events_change_nothing() {
        for s in [Established, FinWait1, FinWait2, Closing, TimeWait, CloseWait, LastAck, Closed] {
            if s != Established && s != CloseWait {
                assert_eq!(s.on(Close), s, "{s:?}: close again");
            }
            if s != FinWait2 && s != Established && s != FinWait1 {
                assert_eq!(s.on(PeerFin), s, "{s:?}: FIN again");
            }
        }
        assert_eq!(Established.on(FinAcked), Established);
        assert_eq!(CloseWait.on(FinAcked), CloseWait);
        assert_eq!(FinWait2.on(FinAcked), FinWait2);
    }

    #[test]
    fn abort_ends_every_state() {
        for s in [Established, FinWait1, FinWait2, Closing, TimeWait, CloseWait, LastAck] {
            assert_eq!(s.on(Abort), Closed);
        }
    }

    #[test]
    fn rst_is_checked_against_rcv_nxt_and_the_window() {
        let nxt = u32::MAX - 10; // across the wrap
        assert_eq!(check_rst(nxt, nxt, 1000), RstCheck::Reset);
        assert_eq!(check_rst(nxt.wrapping_add(1), nxt, 1000), RstCheck::ChallengeAck);
        assert_eq!(check_rst(nxt.wrapping_add(999), nxt, 1000), RstCheck::ChallengeAck);
        assert_eq!(check_rst(nxt.wrapping_add(1000), nxt, 1000), RstCheck::Ignore);
        assert_eq!(check_rst(nxt.wrapping_sub(1), nxt, 1000), RstCheck::Ignore);
        assert_eq!(check_rst(nxt.wrapping_add(1), nxt, 0), RstCheck::Ignore, "zero window");
    }

    #[test]
    fn time_wait_answers() {
        let nxt = 5000;
        let tw = |flags, seq, listening| time_wait_segment(flags, seq, nxt, listening);
        assert_eq!(tw(FIN | ACK, nxt - 1, true), TimeWaitAction::AckAndRestart);
        assert_eq!(tw(RST, nxt, true), TimeWaitAction::Ignore);
        assert_eq!(tw(RST | ACK, nxt, true), TimeWaitAction::Ignore);
        assert_eq!(tw(ACK, nxt, true), TimeWaitAction::Ignore);
        assert_eq!(tw(SYN, nxt + 1, true), TimeWaitAction::Reopen);
        assert_eq!(tw(SYN, nxt + 1, false), TimeWaitAction::Ack, "nobody listens any more");
        assert_eq!(tw(SYN, nxt, true), TimeWaitAction::Ack, "not beyond the old stream");
        assert_eq!(tw(SYN, nxt - 100, true), TimeWaitAction::Ack);
        assert_eq!(tw(SYN | ACK, nxt + 1, true), TimeWaitAction::Ignore);
    }
}
