//! The shim's state without a daemon: the sockets' bookkeeping, the epoll sets' edges, the
//! events `poll` sees, the pacing of questions to the daemon.
use super::*;

/// Descriptor numbers no test process opens (the tracked bitmap is the process's).
const FD: RawFd = 900_000;

fn fresh() -> Sock {
    Sock::new(Kind::Fresh { bound: None }, false)
}

#[test]
fn a_question_is_due_once_its_interval_passed_since_the_last() {
    let every = Duration::from_millis(2);
    let now = Instant::now();
    assert!(due(None, now, every), "never asked");
    assert!(!due(Some(now), now, every));
    assert!(!due(Some(now), now + every / 2, every));
    assert!(due(Some(now), now + every, every));
    // A time before the last question (another thread's clock read): not due.
    assert!(!due(Some(now + every), now, every));
}

#[test]
fn an_edge_triggered_interest_reports_an_event_again_only_once_consumed() {
    let (inn, out) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
    let mut level = Interest::new(inn | out, 7, false);
    assert_eq!(level.report(inn), inn);
    assert_eq!(level.report(inn), inn, "level-triggered: every time");
    let mut edge = Interest::new(inn | out | libc::EPOLLET as u32, 7, false);
    assert_eq!(edge.report(inn), inn);
    assert_eq!(edge.report(inn), 0, "reported, not consumed");
    assert_eq!(edge.report(inn | out), out, "a new event is an edge");
    edge.reported &= !inn; // the program read all there was (`Shim::consumed`)
    assert_eq!(edge.report(inn | out), inn);
}

#[test]
fn duplicated_descriptors_share_a_socket_released_with_the_last() {
    let mut s = Shim::new();
    let (fd, dup) = (FD, FD + 1);
    s.insert(fd, fresh());
    s.share(fd, dup);
    assert!(tracked(fd) && tracked(dup));
    let mut same = s.same_socket(fd);
    same.sort_unstable();
    assert_eq!(same, [fd, dup]);
    assert!(s.remove(fd).is_none(), "the duplicate still refers to it");
    assert!(!tracked(fd) && tracked(dup));
    assert!(s.get(dup).is_some());
    assert!(s.remove(dup).is_some(), "the last descriptor: released");
    assert!(!tracked(dup));
    assert!(s.fds().is_empty());
    // A socket the kernel keeps for good: every descriptor of it untracked at once.
    s.insert(fd, fresh());
    s.share(fd, dup);
    s.untrack(dup);
    assert!(!tracked(fd) && !tracked(dup) && s.fds().is_empty());
}

#[test]
fn consuming_an_event_rearms_it_on_every_descriptor_of_the_socket_and_closing_leaves_the_sets() {
    let mut s = Shim::new();
    let (fd, dup, ep) = (FD + 10, FD + 11, FD + 12);
    let inn = libc::EPOLLIN as u32;
    s.insert(fd, fresh());
    s.share(fd, dup);
    let set = s.epolls.entry(ep).or_default();
    for f in [fd, dup] {
        let mut it = Interest::new(inn | libc::EPOLLET as u32, f as u64, false);
        it.report(inn);
        set.insert(f, it);
    }
    s.consumed(fd, inn);
    assert!(s.epolls[&ep].values().all(|it| it.reported == 0));
    s.remove(fd);
    assert_eq!(s.epolls[&ep].keys().copied().collect::<Vec<_>>(), [dup]);
    s.remove(dup);
}

#[test]
fn poll_events_of_sockets_without_a_connection() {
    use libc::{POLLERR, POLLHUP, POLLIN, POLLOUT};
    let mut s = Shim::new();
    let fd = FD + 20;
    s.insert(fd, fresh());
    assert_eq!(s.revents(fd), None, "fresh: the kernel's socket answers");
    s.get_mut(fd).unwrap().kind = Kind::ParentConnecting;
    assert_eq!(s.revents(fd), Some(0), "connecting: nothing yet");
    s.get_mut(fd).unwrap().kind = Kind::Failed;
    assert_eq!(s.revents(fd), Some(POLLIN | POLLOUT | POLLERR | POLLHUP));
    s.get_mut(fd).unwrap().inherited = true;
    assert_eq!(s.revents(fd), Some(POLLERR), "another process's state");
    assert_eq!(s.revents(FD + 21), None, "not ours");
    s.remove(fd);
}

#[test]
fn a_wait_asks_about_a_fresh_socket_from_the_parent_at_most_every_parent_check() {
    let mut s = Shim::new();
    let fd = FD + 30;
    let mut sock = fresh();
    sock.from_parent = true;
    sock.parent_asked = Some(Instant::now());
    s.insert(fd, sock);
    // Asked just now: the paced question is not asked (asking would set the time anew, and
    // need the daemon).
    let asked = s.get(fd).unwrap().parent_asked;
    s.adopt_from_parent_paced(fd);
    assert_eq!(s.get(fd).unwrap().parent_asked, asked);
    assert!(matches!(s.get(fd).unwrap().kind, Kind::Fresh { .. }));
    s.remove(fd);
}
