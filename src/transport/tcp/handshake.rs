//! The three-way handshake the daemon runs for etran connections (the slow path), as a pure
//! state machine: segments and timer expiries in, segments to send and an outcome out. The
//! daemon owns the sockets, the clock and the maps; this module decides.
//!
//! - Passive open: a SYN to a listening port → [`Handshake::passive`] answers SYN-ACK; the
//!   final ACK (or any acceptable ACK-bearing segment within the window we offered, e.g. a data
//!   segment when the ACK was lost) establishes. This machine takes no payload or FIN: `rcv_nxt`
//!   stays at IRS+1, and the daemon replays every segment that carried some (this one and any
//!   captured while the handshake ran) through the fast path once the connection is in it (see
//!   `daemon::slow`).
//! - Active open: [`Handshake::active`] sends SYN; an acceptable SYN-ACK establishes and is
//!   answered with an ACK. Simultaneous open is not supported (a bare SYN is ignored).
//! - Options: MSS, window scale, SACK-permitted (RFC 2018: offered in our SYN, answered in a
//!   SYN-ACK only to a SYN that offered it) and timestamps through [`negotiate`].
//!   Windows: what [`window::advertisable`] allows of the receive buffer; [`Established::conn`]
//!   starts the fast path's no-shrink bookkeeping at the edge the handshake advertised.
//! - ECN (RFC 3168) is negotiated by default ([`Config::ecn`]), for DCTCP (`tcp_cc.h`): the
//!   SYN carries ECE|CWR, the SYN-ACK ECE, recorded in [`Established::ecn`].
//! - SYN and SYN-ACK are retransmitted on [`Handshake::on_timeout`] with [`RtoEstimator`]
//!   backoff until it gives up.
//! - RST: an acceptable RST fails the handshake; an unacceptable ACK is answered with RST.
use std::{net::SocketAddrV4, time::Duration};

use crate::bpf::tcp::types::{
    etran_tcp_limit, tcp_cc_limit, tcp_conn, tcp_conn_flag, tcp_conn_key,
};

use super::{
    options::{negotiate, Negotiated, SynOptions},
    rto::{RtoConfig, RtoEstimator},
    segment::{Segment, ACK, CWR, ECE, FIN, RST, SYN},
    window,
};

/// IPv4 and TCP headers without options: what an MTU holds besides the MSS.
const MSS_OVERHEAD: u32 = 20 + 20;

/// The MSS we announce on an interface of MTU `mtu`: the MTU less IPv4 and TCP headers without
/// options (RFC 9293 3.7.1, as Linux announces it), at most what the fast path sends in one
/// frame. The peer's MSS caps what we send, and [`Established::segment_payload`] leaves room for
/// the options of every segment.
pub fn mss_for_mtu(mtu: u32) -> u16 {
    let max = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0;
    mtu.saturating_sub(MSS_OVERHEAD).min(max) as u16
}

/// What this host offers in its SYN or SYN-ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Our MSS ([`mss_for_mtu`] of the NIC's MTU).
    pub mss: u16,
    /// Offer SACK (RFC 2018): our ACKs then carry SACK blocks, and the app's sender uses the
    /// peer's.
    pub sack: bool,
    /// Window scale we announce (the shift of the windows we advertise).
    pub wscale: u8,
    pub timestamps: bool,
    /// Negotiate ECN (RFC 3168), for DCTCP's congestion control (`tcp_cc.h`); without it the
    /// same window logic reacts to losses only. On by default (`etran daemon --no-ecn`).
    pub ecn: bool,
    /// The app's receive buffer in bytes (the window advertised is [`window::advertisable`]
    /// of it).
    pub rcv_wnd: u32,
    pub rto: RtoConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mss: mss_for_mtu(1500),
            sack: true,
            wscale: 7,
            timestamps: true,
            ecn: true,
            rcv_wnd: 1 << 20,
            // SYNs at 0, 0.2, 0.6, 1.4 and 3 s, given up at 5 s: an app blocked in `connect`
            // hears `ConnectFailed` well before its session's reply timeout.
            rto: RtoConfig {
                initial: Duration::from_millis(200),
                max_retries: 4,
                ..RtoConfig::default()
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Active open: our SYN is out.
    SynSent,
    /// Passive open: our SYN-ACK is out.
    SynReceived,
    Established,
    Closed,
}

/// An established connection's parameters, what the daemon writes into `etran_tcp_conns` and
/// tells the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub local_mac: [u8; 6],
    pub remote_mac: [u8; 6],
    /// Our initial sequence number; `snd_una == snd_nxt == iss + 1`.
    pub iss: u32,
    /// The peer's initial sequence number; `rcv_nxt == irs + 1`.
    pub irs: u32,
    /// The peer's receive window in bytes (scaled).
    pub snd_wnd: u32,
    pub negotiated: Negotiated,
    pub ecn: bool,
    /// Latest TSval from the peer (echoed as TSecr) when timestamps are in use.
    pub ts_recent: u32,
    /// The window (bytes past `rcv_nxt`) our last handshake segment advertised.
    pub adv_wnd: u32,
}

impl Established {
    pub fn snd_nxt(&self) -> u32 {
        self.iss.wrapping_add(1)
    }

    pub fn rcv_nxt(&self) -> u32 {
        self.irs.wrapping_add(1)
    }

    /// The largest payload per segment: the smaller of the two MSS (the peer's and ours, see
    /// [`negotiate`]) less the timestamp option every segment carries when timestamps are in
    /// use (RFC 6691: the MSS excludes TCP options; Linux does the same).
    pub fn segment_payload(&self) -> u16 {
        let opts = if self.negotiated.timestamps { 12 } else { 0 };
        self.negotiated.send_mss.saturating_sub(opts)
    }

    /// The key of this connection in `etran_tcp_conns`.
    pub fn key(&self) -> tcp_conn_key {
        tcp_conn_key {
            local_ip: u32::from_ne_bytes(self.local.ip().octets()),
            remote_ip: u32::from_ne_bytes(self.remote.ip().octets()),
            local_port: self.local.port().to_be(),
            remote_port: self.remote.port().to_be(),
        }
    }

    /// The fast-path state the daemon inserts into `etran_tcp_conns`: stream positions start
    /// at 0 (the app's `StreamInit` uses the same), `rcv_wnd` is the app's receive buffer (its
    /// [`window::reserve`] never advertised), the highest edge advertised is the handshake's,
    /// the MSS is capped at what one TX frame carries; congestion control starts in slow start
    /// from the initial window, DCTCP's alpha at 1 (RFC 8257 3.3: cautious until it has
    /// measured).
    pub fn conn(&self, owner_port: u32, handle: u64, rcv_wnd: u32) -> tcp_conn {
        let mut flags = 0u8;
        if self.negotiated.timestamps {
            flags |= tcp_conn_flag::TCP_CONN_TIMESTAMPS.0 as u8;
        }
        if self.ecn {
            flags |= tcp_conn_flag::TCP_CONN_ECN.0 as u8;
        }
        if self.negotiated.sack {
            flags |= tcp_conn_flag::TCP_CONN_SACK.0 as u8;
        }
        let max = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;
        let mss = self.segment_payload().min(max);
        let cwnd = tcp_cc_limit::TCP_CC_INIT_SEGMENTS.0 * u32::from(mss);
        let snd_nxt = self.snd_nxt();
        tcp_conn {
            owner_port,
            handle,
            rcv_nxt: self.rcv_nxt(),
            rcv_wnd,
            rx_pos: 0,
            rcv_adv: self.rcv_nxt().wrapping_add(self.adv_wnd),
            rcv_reserve: window::reserve(rcv_wnd, self.negotiated.recv_wscale),
            snd_una: snd_nxt,
            snd_nxt,
            snd_wnd: self.snd_wnd,
            ts_recent: self.ts_recent,
            tx_pos: 0,
            app_una: snd_nxt,
            snd_wscale: self.negotiated.send_wscale,
            rcv_wscale: self.negotiated.recv_wscale,
            flags,
            mss,
            local_mac: self.local_mac,
            remote_mac: self.remote_mac,
            cwnd,
            ssthresh: u32::MAX,
            cwnd_edge: snd_nxt.wrapping_add(cwnd),
            cc_recover: snd_nxt,
            alpha: 1 << tcp_cc_limit::TCP_DCTCP_ALPHA_SHIFT.0,
            dctcp_end: snd_nxt,
            ..Default::default()
        }
    }

    /// The RST that aborts this connection (session closed, app gone): `seq = snd_nxt` is
    /// acceptable to the peer whatever it has acknowledged.
    pub fn abort(&self, snd_nxt: u32, rcv_nxt: u32) -> Segment {
        self.control(RST | ACK, snd_nxt, rcv_nxt, 0)
    }

    /// Our FIN at `snd_nxt` (a connection nobody holds any more, closed by the daemon).
    pub fn fin(&self, snd_nxt: u32, rcv_nxt: u32, window: u16) -> Segment {
        self.control(FIN | ACK, snd_nxt, rcv_nxt, window)
    }

    /// A bare ACK at the given positions announcing the `window` field (TIME_WAIT's answer to
    /// a FIN, a challenge ACK).
    pub fn ack(&self, snd_nxt: u32, rcv_nxt: u32, window: u16) -> Segment {
        self.control(ACK, snd_nxt, rcv_nxt, window)
    }

    fn control(&self, flags: u8, seq: u32, ack: u32, window: u16) -> Segment {
        Segment {
            src_mac: self.local_mac,
            dst_mac: self.remote_mac,
            src: self.local,
            dst: self.remote,
            seq,
            ack,
            flags,
            window,
            ..Segment::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer answered our SYN with RST: nobody listens.
    Refused,
    /// The peer reset the half-open connection.
    Reset,
    /// No answer after the retry limit.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still handshaking (or the segment was ignored).
    Pending,
    Established(Established),
    Failed(Failure),
}

/// The result of one input: at most one segment to send, and where the handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub send: Option<Segment>,
    pub outcome: Outcome,
}

impl Step {
    fn pending(send: Option<Segment>) -> Step {
        Step { send, outcome: Outcome::Pending }
    }
}

/// Why a SYN was not taken by [`Handshake::passive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotASyn {
    Flags(u8),
    Options,
}

#[derive(Debug, Clone)]
pub struct Handshake {
    config: Config,
    state: State,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    local_mac: [u8; 6],
    remote_mac: [u8; 6],
    iss: u32,
    irs: u32,
    ours: SynOptions,
    theirs: SynOptions,
    ecn: bool,
    rto: RtoEstimator,
}

impl Handshake {
    /// Active open: the handshake and the SYN to send. `ts_now` is our timestamp clock.
    #[allow(clippy::too_many_arguments)]
    pub fn active(
        config: Config,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        local_mac: [u8; 6],
        remote_mac: [u8; 6],
        iss: u32,
        ts_now: u32,
    ) -> (Handshake, Segment) {
        let ours = SynOptions {
            mss: Some(config.mss),
            wscale: Some(config.wscale),
            sack_permitted: config.sack,
            timestamps: config.timestamps.then_some((ts_now, 0)),
        };
        let h = Handshake {
            config,
            state: State::SynSent,
            local,
            remote,
            local_mac,
            remote_mac,
            iss,
            irs: 0,
            ours,
            theirs: SynOptions::default(),
            ecn: false,
            rto: RtoEstimator::new(config.rto),
        };
        let syn = h.syn(ts_now);
        (h, syn)
    }

    /// Passive open on a SYN to a listening port: the handshake and the SYN-ACK to send.
    pub fn passive(
        config: Config,
        syn: &Segment,
        iss: u32,
        ts_now: u32,
    ) -> Result<(Handshake, Segment), NotASyn> {
        if syn.flags & (SYN | ACK | RST | FIN) != SYN {
            return Err(NotASyn::Flags(syn.flags));
        }
        let theirs = SynOptions::parse(&syn.options).map_err(|_| NotASyn::Options)?;
        // RFC 7323: window scale and timestamps only when the SYN carried them.
        let ours = SynOptions {
            mss: Some(config.mss),
            wscale: theirs.wscale.map(|_| config.wscale),
            sack_permitted: config.sack && theirs.sack_permitted,
            timestamps: (config.timestamps && theirs.timestamps.is_some()).then_some((ts_now, 0)),
        };
        let h = Handshake {
            config,
            state: State::SynReceived,
            local: syn.dst,
            remote: syn.src,
            local_mac: syn.dst_mac,
            remote_mac: syn.src_mac,
            iss,
            irs: syn.seq,
            ours,
            theirs,
            // RFC 3168 6.1.1: an ECN-setup SYN has both ECE and CWR.
            ecn: config.ecn && syn.has(ECE | CWR),
            rto: RtoEstimator::new(config.rto),
        };
        let synack = h.syn(ts_now);
        Ok((h, synack))
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn remote(&self) -> SocketAddrV4 {
        self.remote
    }

    /// How long to wait before [`Handshake::on_timeout`].
    pub fn rto(&self) -> Duration {
        self.rto.rto()
    }

    fn base(&self) -> Segment {
        Segment {
            src_mac: self.local_mac,
            dst_mac: self.remote_mac,
            src: self.local,
            dst: self.remote,
            ..Segment::default()
        }
    }

    /// Our SYN (SynSent) or SYN-ACK (SynReceived), with options. Windows on SYNs are never
    /// scaled (RFC 7323 2.2).
    fn syn(&self, ts_now: u32) -> Segment {
        let mut opts = self.ours;
        let mut seg = Segment { seq: self.iss, window: self.syn_window(), ..self.base() };
        if self.state == State::SynReceived {
            seg.flags = SYN | ACK | if self.ecn { ECE } else { 0 };
            seg.ack = self.irs.wrapping_add(1);
            opts.timestamps = opts.timestamps.map(|_| (ts_now, self.ts_recent()));
        } else {
            seg.flags = SYN | if self.config.ecn { ECE | CWR } else { 0 };
            opts.timestamps = opts.timestamps.map(|_| (ts_now, 0));
        }
        seg.options = opts.encode();
        seg
    }

    /// The window field of our SYN or SYN-ACK (never scaled, RFC 7323 2.2), for the scale we
    /// announce in it.
    fn syn_window(&self) -> u16 {
        let shift = self.ours.wscale.unwrap_or(0);
        window::field(window::advertisable(self.config.rcv_wnd, shift), 0)
    }

    fn ts_recent(&self) -> u32 {
        self.theirs.timestamps.map_or(0, |(val, _)| val)
    }

    fn established(&mut self, snd_wnd: u32, ts_recent: u32, adv_wnd: u32) -> Established {
        self.state = State::Established;
        let negotiated = negotiate(&self.ours, &self.theirs);
        Established {
            local: self.local,
            remote: self.remote,
            local_mac: self.local_mac,
            remote_mac: self.remote_mac,
            iss: self.iss,
            irs: self.irs,
            snd_wnd,
            negotiated,
            ecn: self.ecn,
            ts_recent: if negotiated.timestamps { ts_recent } else { 0 },
            adv_wnd,
        }
    }

    fn fail(&mut self, why: Failure, send: Option<Segment>) -> Step {
        self.state = State::Closed;
        Step { send, outcome: Outcome::Failed(why) }
    }

    /// A segment of this connection arrived (the caller matched the 4-tuple).
    pub fn on_segment(&mut self, seg: &Segment, ts_now: u32) -> Step {
        match self.state {
            State::SynSent => self.on_segment_syn_sent(seg, ts_now),
            State::SynReceived => self.on_segment_syn_received(seg, ts_now),
            State::Established | State::Closed => Step::pending(None),
        }
    }

    fn on_segment_syn_sent(&mut self, seg: &Segment, ts_now: u32) -> Step {
        let ack_ok = seg.ack == self.iss.wrapping_add(1);
        if seg.flags & ACK != 0 && !ack_ok {
            // RFC 9293 3.10.7.3: an unacceptable ACK gets a RST (unless it is one).
            return Step::pending(Segment::reset_for(seg));
        }
        if seg.flags & RST != 0 {
            return if seg.flags & ACK != 0 {
                self.fail(Failure::Refused, None)
            } else {
                Step::pending(None)
            };
        }
        if !seg.has(SYN | ACK) {
            // A bare SYN (simultaneous open) or a stray segment: ignored.
            return Step::pending(None);
        }
        let Ok(theirs) = SynOptions::parse(&seg.options) else {
            return Step::pending(None);
        };
        self.theirs = theirs;
        if theirs.timestamps.is_none() {
            self.ours.timestamps = None;
        }
        if theirs.wscale.is_none() {
            self.ours.wscale = None;
        }
        self.irs = seg.seq;
        // RFC 3168 6.1.1: a SYN-ACK with ECE and without CWR accepts ECN.
        self.ecn = self.config.ecn && seg.flags & (ECE | CWR) == ECE;
        let shift = negotiate(&self.ours, &self.theirs).recv_wscale;
        let window = window::field(window::advertisable(self.config.rcv_wnd, shift), shift);
        let adv_wnd = u32::from(window) << shift;
        let est = self.established(u32::from(seg.window), self.ts_recent(), adv_wnd);
        let mut ack =
            Segment { seq: est.snd_nxt(), ack: est.rcv_nxt(), flags: ACK, window, ..self.base() };
        if est.negotiated.timestamps {
            ack.options = timestamp_option(ts_now, est.ts_recent);
        }
        Step { send: Some(ack), outcome: Outcome::Established(est) }
    }

    fn on_segment_syn_received(&mut self, seg: &Segment, ts_now: u32) -> Step {
        let irs1 = self.irs.wrapping_add(1);
        if seg.flags & RST != 0 {
            // Acceptable when in the window; the window is just IRS+1 here, so be exact.
            return if seg.seq == irs1 {
                self.fail(Failure::Reset, None)
            } else {
                Step::pending(None)
            };
        }
        if seg.flags & SYN != 0 {
            if seg.flags & ACK == 0 && seg.seq == self.irs {
                // The peer retransmitted its SYN: our SYN-ACK was lost.
                return Step::pending(Some(self.syn(ts_now)));
            }
            return Step::pending(Segment::reset_for(seg));
        }
        if seg.flags & ACK == 0 {
            return Step::pending(None);
        }
        if seg.ack != self.iss.wrapping_add(1) {
            return Step::pending(Segment::reset_for(seg));
        }
        let offered = u32::from(self.syn_window());
        if seg.seq.wrapping_sub(irs1) >= offered.max(1) {
            // Outside the window we offered (RFC 9293 would ACK; the peer's retransmission
            // fixes it).
            return Step::pending(None);
        }
        let negotiated = negotiate(&self.ours, &self.theirs);
        let snd_wnd = u32::from(seg.window) << negotiated.send_wscale;
        // RFC 7323 4.3: only a segment at rcv_nxt updates ts_recent.
        let ts = SynOptions::parse(&seg.options)
            .ok()
            .and_then(|o| o.timestamps)
            .filter(|_| seg.seq == irs1)
            .map_or(self.ts_recent(), |(val, _)| val);
        let est = self.established(snd_wnd, ts, offered);
        Step { send: None, outcome: Outcome::Established(est) }
    }

    /// The retransmission timer fired: resend the SYN or SYN-ACK, or give up.
    pub fn on_timeout(&mut self, ts_now: u32) -> Step {
        match self.state {
            State::SynSent | State::SynReceived => match self.rto.on_timeout() {
                Ok(_) => Step::pending(Some(self.syn(ts_now))),
                Err(_) => {
                    let rst = (self.state == State::SynReceived).then(|| Segment {
                        seq: self.iss.wrapping_add(1),
                        flags: RST,
                        ..self.base()
                    });
                    self.fail(Failure::TimedOut, rst)
                }
            },
            State::Established | State::Closed => Step::pending(None),
        }
    }
}

/// NOP, NOP, timestamps: the 12-byte option block of a non-SYN segment.
pub fn timestamp_option(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::segment::PSH;

    const LMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const RMAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn local() -> SocketAddrV4 {
        "10.99.0.1:8080".parse().unwrap()
    }

    fn remote() -> SocketAddrV4 {
        "10.99.0.2:40000".parse().unwrap()
    }

    /// A Linux-like SYN from the remote: mss 1460, sackOK, TS, wscale 7, ECN setup.
    fn linux_syn(seq: u32) -> Segment {
        Segment {
            src_mac: RMAC,
            dst_mac: LMAC,
            src: remote(),
            dst: local(),
            seq,
            flags: SYN | ECE | CWR,
            window: 64240,
            options: SynOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamps: Some((1000, 0)),
            }
            .encode(),
            ..Segment::default()
        }
    }

    fn from_remote(seq: u32, ack: u32, flags: u8) -> Segment {
        Segment {
            src_mac: RMAC,
            dst_mac: LMAC,
            src: remote(),
            dst: local(),
            seq,
            ack,
            flags,
            ..Segment::default()
        }
    }

    fn quick() -> Config {
        Config {
            rto: RtoConfig {
                initial: Duration::from_millis(10),
                min: Duration::from_millis(4),
                max_retries: 2,
                ..RtoConfig::default()
            },
            ..Config::default()
        }
    }

    #[test]
    fn passive_open_answers_syn_ack_and_establishes_on_the_final_ack() {
        let syn = linux_syn(0xffff_fff0);
        let (mut h, synack) = Handshake::passive(quick(), &syn, 5000, 77).unwrap();
        assert_eq!(h.state(), State::SynReceived);
        assert_eq!(synack.flags, SYN | ACK | ECE);
        assert_eq!(synack.window, 65535, "the advertisable buffer, capped (unscaled)");
        assert_eq!((synack.seq, synack.ack), (5000, 0xffff_fff1));
        assert_eq!((synack.src, synack.dst, synack.dst_mac), (local(), remote(), RMAC));
        let o = SynOptions::parse(&synack.options).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_permitted, "SACK-permitted answers the SYN's");
        assert_eq!(o.timestamps, Some((77, 1000)));
        assert!(Segment::checksums_ok(&synack.build()));

        let mut ack = from_remote(0xffff_fff1, 5001, ACK);
        ack.window = 502;
        ack.options = timestamp_option(1010, 77);
        let step = h.on_segment(&ack, 80);
        assert_eq!(step.send, None);
        let Outcome::Established(e) = step.outcome else { panic!("{step:?}") };
        assert_eq!(h.state(), State::Established);
        assert_eq!((e.snd_nxt(), e.rcv_nxt()), (5001, 0xffff_fff1));
        assert_eq!(e.snd_wnd, 502 << 7);
        assert_eq!(
            (e.negotiated.send_mss, e.negotiated.send_wscale, e.negotiated.recv_wscale),
            (1460, 7, 7)
        );
        assert!(e.negotiated.timestamps && e.negotiated.sack && e.ecn);
        assert_eq!(e.ts_recent, 1010);
        assert_eq!((e.local_mac, e.remote_mac), (LMAC, RMAC));
        assert_eq!(e.adv_wnd, 65535, "what the SYN-ACK advertised");
        // Later segments are the fast path's business.
        assert_eq!(h.on_segment(&ack, 81), Step::pending(None));
    }

    #[test]
    fn our_mss_is_the_mtu_less_40_within_the_largest_frame() {
        let max = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;
        assert_eq!(mss_for_mtu(1500), 1460);
        assert_eq!(mss_for_mtu(1280), 1240);
        assert_eq!(mss_for_mtu(u32::from(max) + 40), max);
        assert_eq!(mss_for_mtu(9000), max, "no more than one frame of the fast path carries");
        assert_eq!(mss_for_mtu(20), 0);
        assert_eq!(Config::default().mss, 1460);
    }

    #[test]
    fn the_send_mss_is_the_smaller_of_both_less_the_timestamps_either_way() {
        let max = etran_tcp_limit::ETRAN_TCP_MAX_PAYLOAD.0 as u16;
        // (our MTU, the peer's MSS option, timestamps) → what each segment carries at most.
        let cases = [
            (1500, Some(1460), true, 1448),
            (1500, Some(1460), false, 1460),
            (u32::from(max) + 40, Some(1460), true, 1448),
            (1500, Some(max), true, 1448),
            (u32::from(max) + 40, Some(max), true, max - 12),
            (u32::from(max) + 40, Some(max), false, max),
            (2000, Some(3000), true, 1948),
            (u32::from(max) + 40, None, true, 536 - 12),
        ];
        for (mtu, peer_mss, ts, payload) in cases {
            let config = Config { mss: mss_for_mtu(mtu), ..quick() };
            let theirs = SynOptions {
                mss: peer_mss,
                wscale: Some(7),
                sack_permitted: true,
                timestamps: ts.then_some((1000, 0)),
            };
            // Passive: our SYN-ACK announces our MSS, whatever the peer's.
            let syn = Segment { options: theirs.encode(), ..linux_syn(1) };
            let (mut h, synack) = Handshake::passive(config, &syn, 2, 0).unwrap();
            assert_eq!(SynOptions::parse(&synack.options).unwrap().mss, Some(config.mss));
            let mut ack = from_remote(2, 3, ACK);
            if ts {
                ack.options = timestamp_option(1001, 0);
            }
            let Outcome::Established(e) = h.on_segment(&ack, 0).outcome else { panic!() };
            assert_eq!(e.segment_payload(), payload, "passive, MTU {mtu}, {peer_mss:?}, ts {ts}");
            assert_eq!(e.conn(1, 1, 1 << 20).mss, payload);
            // Active: our SYN announces it, the SYN-ACK's caps it.
            let (mut h, syn) = Handshake::active(config, local(), remote(), LMAC, RMAC, 1, 0);
            assert_eq!(SynOptions::parse(&syn.options).unwrap().mss, Some(config.mss));
            let mut synack = from_remote(100, 2, SYN | ACK);
            synack.options = SynOptions { timestamps: ts.then_some((1000, 0)), ..theirs }.encode();
            let Outcome::Established(e) = h.on_segment(&synack, 0).outcome else { panic!() };
            assert_eq!(e.segment_payload(), payload, "active, MTU {mtu}, {peer_mss:?}, ts {ts}");
        }
    }

    #[test]
    fn ecn_is_negotiated_by_default_and_not_when_turned_off() {
        assert!(Config::default().ecn);
        let (_, syn) = Handshake::active(quick(), local(), remote(), LMAC, RMAC, 1, 0);
        assert_eq!(syn.flags, SYN | ECE | CWR, "an ECN-setup SYN");
        let off = Config { ecn: false, ..quick() };
        let (mut h, synack) = Handshake::passive(off, &linux_syn(1), 2, 0).unwrap();
        assert_eq!(synack.flags, SYN | ACK, "an ECN-setup SYN is not accepted");
        let Outcome::Established(e) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        assert!(!e.ecn);
        let (_, syn) = Handshake::active(off, local(), remote(), LMAC, RMAC, 1, 0);
        assert_eq!(syn.flags, SYN, "no ECN-setup SYN");
    }

    #[test]
    fn a_data_segment_establishes_when_the_ack_was_lost_and_its_data_is_left_to_the_replay() {
        let (mut h, _) = Handshake::passive(quick(), &linux_syn(100), 9, 0).unwrap();
        let mut data = from_remote(101, 10, ACK | PSH);
        data.payload = b"hello".to_vec();
        data.options = timestamp_option(5, 0);
        let Outcome::Established(e) = h.on_segment(&data, 1).outcome else { panic!() };
        assert_eq!(e.rcv_nxt(), 101, "payload not consumed here: the daemon replays it");
        assert_eq!(e.ts_recent, 5);
        // Also a later segment within the window we offered (the first ones were lost); its
        // timestamp is not taken (RFC 7323 4.3: only at rcv_nxt).
        for (seq, ok) in
            [(101 + 1448, true), (101 + 65534, true), (101 + 65535, false), (99, false)]
        {
            let (mut h, _) = Handshake::passive(quick(), &linux_syn(100), 9, 0).unwrap();
            let mut data = from_remote(seq, 10, ACK | PSH);
            data.payload = b"later".to_vec();
            data.options = timestamp_option(5, 0);
            match h.on_segment(&data, 1).outcome {
                Outcome::Established(e) if ok => {
                    assert_eq!((e.rcv_nxt(), e.ts_recent), (101, 1000))
                }
                Outcome::Pending if !ok => {}
                o => panic!("seq {seq}: {o:?}"),
            }
        }
    }

    #[test]
    fn passive_open_without_options_or_ecn() {
        let mut syn = linux_syn(1);
        syn.options.clear();
        syn.flags = SYN;
        let (mut h, synack) = Handshake::passive(quick(), &syn, 2, 0).unwrap();
        assert_eq!(synack.flags, SYN | ACK);
        let o = SynOptions::parse(&synack.options).unwrap();
        assert_eq!((o.mss, o.wscale, o.timestamps), (Some(1460), None, None));
        let mut ack = from_remote(2, 3, ACK);
        ack.window = 1000;
        let Outcome::Established(e) = h.on_segment(&ack, 0).outcome else { panic!() };
        assert_eq!(e.negotiated.send_mss, crate::transport::tcp::options::DEFAULT_MSS);
        assert_eq!((e.negotiated.send_wscale, e.negotiated.recv_wscale), (0, 0));
        assert_eq!(e.snd_wnd, 1000);
        assert!(!e.ecn && !e.negotiated.timestamps);
        assert_eq!(e.ts_recent, 0);
        // ECN off locally: no ECE even for an ECN-setup SYN.
        let cfg = Config { ecn: false, ..quick() };
        let (_, synack) = Handshake::passive(cfg, &linux_syn(1), 2, 0).unwrap();
        assert_eq!(synack.flags, SYN | ACK);
    }

    #[test]
    fn passive_rejects_non_syns_and_handles_rst_dup_syn_and_bad_acks() {
        for flags in [SYN | ACK, ACK, RST, SYN | RST, SYN | FIN] {
            let mut s = linux_syn(1);
            s.flags = flags;
            assert!(Handshake::passive(quick(), &s, 2, 0).is_err(), "{flags:#x}");
        }
        let (mut h, synack) = Handshake::passive(quick(), &linux_syn(1), 2, 0).unwrap();
        // A retransmitted SYN gets the SYN-ACK again.
        assert_eq!(h.on_segment(&linux_syn(1), 0).send, Some(synack));
        // An ACK of something we never sent gets a RST with seq = its ack.
        let s = h.on_segment(&from_remote(2, 999, ACK), 0);
        assert_eq!(s.outcome, Outcome::Pending);
        let rst = s.send.unwrap();
        assert_eq!((rst.flags, rst.seq), (RST, 999));
        // A RST outside the window is ignored; an exact one ends the handshake.
        assert_eq!(h.on_segment(&from_remote(50, 0, RST), 0), Step::pending(None));
        assert_eq!(
            h.on_segment(&from_remote(2, 0, RST), 0).outcome,
            Outcome::Failed(Failure::Reset)
        );
        assert_eq!(h.state(), State::Closed);
    }

    #[test]
    fn active_open_sends_syn_and_acks_the_syn_ack() {
        let (mut h, syn) =
            Handshake::active(quick(), local(), remote(), LMAC, RMAC, 0xffff_ffff, 5);
        assert_eq!(h.state(), State::SynSent);
        assert_eq!((syn.flags, syn.seq, syn.ack), (SYN | ECE | CWR, 0xffff_ffff, 0));
        assert_eq!((syn.src, syn.dst, syn.src_mac, syn.dst_mac), (local(), remote(), LMAC, RMAC));
        let o = SynOptions::parse(&syn.options).unwrap();
        assert_eq!(
            (o.mss, o.wscale, o.timestamps, o.sack_permitted),
            (Some(1460), Some(7), Some((5, 0)), true)
        );

        let mut synack = from_remote(7000, 0, SYN | ACK | ECE);
        synack.window = 65160;
        synack.options = SynOptions {
            mss: Some(1400),
            wscale: Some(9),
            sack_permitted: true,
            timestamps: Some((444, 5)),
        }
        .encode();
        let step = h.on_segment(&synack, 6);
        let Outcome::Established(e) = step.outcome else { panic!("{step:?}") };
        assert_eq!((e.snd_nxt(), e.rcv_nxt()), (0, 7001));
        assert_eq!(e.snd_wnd, 65160, "SYN-ACK windows are not scaled");
        assert_eq!(
            (e.negotiated.send_mss, e.negotiated.send_wscale, e.negotiated.recv_wscale),
            (1400, 9, 7)
        );
        assert!(e.ecn && e.negotiated.timestamps && e.negotiated.sack);
        assert_eq!(e.ts_recent, 444);
        let ack = step.send.unwrap();
        assert_eq!((ack.flags, ack.seq, ack.ack), (ACK, 0, 7001));
        let window = window::advertisable(1 << 20, 7) >> 7;
        assert_eq!(u32::from(ack.window), window, "the advertisable buffer, scaled");
        assert_eq!(e.adv_wnd, window << 7);
        assert_eq!(ack.options, timestamp_option(6, 444));
        assert!(Segment::checksums_ok(&ack.build()));
    }

    #[test]
    fn active_open_ecn_needs_ece_without_cwr_and_options_need_both_sides() {
        let (mut h, _) = Handshake::active(quick(), local(), remote(), LMAC, RMAC, 10, 0);
        let mut synack = from_remote(1, 11, SYN | ACK | ECE | CWR);
        synack.window = 100;
        let step = h.on_segment(&synack, 0);
        let Outcome::Established(e) = step.outcome else { panic!() };
        assert!(!e.ecn);
        assert!(!e.negotiated.timestamps);
        assert_eq!((e.negotiated.send_wscale, e.negotiated.recv_wscale), (0, 0));
        let ack = step.send.unwrap();
        assert!(ack.options.is_empty());
        assert_eq!(ack.window, 61440, "unscaled: 64 KiB less the reserve");
    }

    #[test]
    fn active_open_refused_by_rst_and_bad_acks_get_rst() {
        let (mut h, _) = Handshake::active(quick(), local(), remote(), LMAC, RMAC, 10, 0);
        // A RST without ACK, or with a wrong ACK, is ignored.
        assert_eq!(h.on_segment(&from_remote(0, 0, RST), 0), Step::pending(None));
        assert_eq!(h.on_segment(&from_remote(0, 99, RST | ACK), 0), Step::pending(None));
        // A SYN-ACK acknowledging something else is answered with RST, the handshake goes on.
        let s = h.on_segment(&from_remote(5, 99, SYN | ACK), 0);
        assert_eq!((s.send.as_ref().unwrap().flags, s.send.as_ref().unwrap().seq), (RST, 99));
        assert_eq!(h.state(), State::SynSent);
        // A bare SYN (simultaneous open) is ignored.
        assert_eq!(h.on_segment(&from_remote(5, 0, SYN), 0), Step::pending(None));
        // What Linux sends when nobody listens: RST|ACK acknowledging the SYN.
        assert_eq!(
            h.on_segment(&from_remote(0, 11, RST | ACK), 0).outcome,
            Outcome::Failed(Failure::Refused)
        );
        assert_eq!(h.state(), State::Closed);
    }

    #[test]
    fn syn_is_retransmitted_with_backoff_then_given_up() {
        let (mut h, syn) = Handshake::active(quick(), local(), remote(), LMAC, RMAC, 10, 0);
        assert_eq!(h.rto(), Duration::from_millis(10));
        let again = h.on_timeout(3).send.unwrap();
        assert_eq!((again.flags, again.seq), (syn.flags, syn.seq));
        assert_eq!(SynOptions::parse(&again.options).unwrap().timestamps, Some((3, 0)));
        assert_eq!(h.rto(), Duration::from_millis(20));
        assert!(h.on_timeout(4).send.is_some());
        let last = h.on_timeout(5);
        assert_eq!(last, Step { send: None, outcome: Outcome::Failed(Failure::TimedOut) });
        assert_eq!(h.on_timeout(6), Step::pending(None));

        // A half-open passive connection gives up with a RST to the peer.
        let (mut p, synack) = Handshake::passive(quick(), &linux_syn(1), 2, 0).unwrap();
        assert_eq!(p.on_timeout(1).send.unwrap().flags, synack.flags);
        p.on_timeout(2);
        let gave_up = p.on_timeout(3);
        assert_eq!(gave_up.outcome, Outcome::Failed(Failure::TimedOut));
        assert_eq!((gave_up.send.as_ref().unwrap().flags, gave_up.send.unwrap().seq), (RST, 3));
    }

    #[test]
    fn sack_is_offered_and_needs_both_sides() {
        let sack_of = |e: &Established| {
            let flag = tcp_conn_flag::TCP_CONN_SACK.0 as u8;
            (e.negotiated.sack, e.conn(0, 0, 4096).flags & flag != 0)
        };
        // Passive: a SYN without SACK-permitted gets none back and the connection has none.
        let mut syn = linux_syn(1);
        syn.options =
            SynOptions { sack_permitted: false, ..SynOptions::parse(&syn.options).unwrap() }
                .encode();
        let (mut h, synack) = Handshake::passive(quick(), &syn, 2, 0).unwrap();
        assert!(!SynOptions::parse(&synack.options).unwrap().sack_permitted);
        let Outcome::Established(e) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        assert_eq!(sack_of(&e), (false, false));
        // SACK off locally: not answered even to a SYN that offers it.
        let cfg = Config { sack: false, ..quick() };
        let (mut h, synack) = Handshake::passive(cfg, &linux_syn(1), 2, 0).unwrap();
        assert!(!SynOptions::parse(&synack.options).unwrap().sack_permitted);
        let Outcome::Established(e) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        assert_eq!(sack_of(&e), (false, false));
        // Active: offered; a SYN-ACK without it leaves the connection without SACK.
        let (mut h, syn) = Handshake::active(quick(), local(), remote(), LMAC, RMAC, 10, 0);
        assert!(SynOptions::parse(&syn.options).unwrap().sack_permitted);
        let mut synack = from_remote(1, 11, SYN | ACK);
        synack.options = SynOptions { mss: Some(1460), ..SynOptions::default() }.encode();
        let Outcome::Established(e) = h.on_segment(&synack, 0).outcome else { panic!() };
        assert_eq!(sack_of(&e), (false, false));
        // Both: the connection's flag is set.
        let (mut h, _) = Handshake::passive(quick(), &linux_syn(1), 2, 0).unwrap();
        let Outcome::Established(e) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        assert_eq!(sack_of(&e), (true, true));
    }

    #[test]
    fn abort_rst_is_acceptable_to_the_peer() {
        let (mut h, _) = Handshake::passive(quick(), &linux_syn(1), 2, 0).unwrap();
        let Outcome::Established(e) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        let c = e.conn(3, 0xabc, 4096);
        assert_eq!((c.owner_port, c.handle, c.rcv_wnd, c.rx_pos, c.tx_pos), (3, 0xabc, 4096, 0, 0));
        assert_eq!(c.rcv_reserve, window::reserve(4096, 7));
        assert_eq!(c.rcv_adv, 2 + 65535, "the edge the SYN-ACK advertised");
        assert_eq!((c.rcv_nxt, c.snd_una, c.snd_nxt), (2, 3, 3));
        assert_eq!((c.snd_wscale, c.rcv_wscale, c.mss), (7, 7, 1448), "1460 less timestamps");
        assert_eq!((c.cwnd, c.ssthresh, c.cwnd_edge), (14480, u32::MAX, 3 + 14480), "IW 10");
        assert_eq!((c.alpha, c.cc_recover, c.dctcp_end, c.cc), (1 << 16, 3, 3, 0));
        let (ts, sack, ecn) = (
            tcp_conn_flag::TCP_CONN_TIMESTAMPS.0,
            tcp_conn_flag::TCP_CONN_SACK.0,
            tcp_conn_flag::TCP_CONN_ECN.0,
        );
        assert_eq!(u32::from(c.flags), ts | sack | ecn);
        let no_ecn = Config { ecn: false, ..quick() };
        let (mut h, _) = Handshake::passive(no_ecn, &linux_syn(1), 2, 0).unwrap();
        let Outcome::Established(without) = h.on_segment(&from_remote(2, 3, ACK), 0).outcome else {
            panic!()
        };
        assert_eq!(u32::from(without.conn(3, 0xabc, 4096).flags), ts | sack);
        assert_eq!((c.local_mac, c.remote_mac), (LMAC, RMAC));
        let k = e.key();
        assert_eq!(k.local_port, 8080u16.to_be());
        assert_eq!(k.remote_ip.to_ne_bytes(), [10, 99, 0, 2]);
        let rst = e.abort(1234, 77);
        assert_eq!(
            (rst.flags, rst.seq, rst.ack, rst.src, rst.dst),
            (RST | ACK, 1234, 77, local(), remote())
        );
        assert!(Segment::checksums_ok(&rst.build()));
    }
}
