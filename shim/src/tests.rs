//! The shim's conversions between C's arguments and Rust's, without a daemon.
use super::*;

#[test]
fn socket_addresses_go_both_ways_and_are_cut_to_the_callers_buffer() {
    let a = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 7000);
    let sin = state::sockaddr_in(a);
    let p = (&sin as *const libc::sockaddr_in).cast::<sockaddr>();
    let full = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
    // SAFETY: a sockaddr_in of `full` bytes.
    assert_eq!(unsafe { v4(p, full) }, Some(a));
    assert_eq!(unsafe { v4(p, full - 1) }, None, "too short");
    assert_eq!(unsafe { v4(std::ptr::null(), full) }, None);
    let mut six = sin;
    six.sin_family = libc::AF_INET6 as libc::sa_family_t;
    let p6 = (&six as *const libc::sockaddr_in).cast::<sockaddr>();
    assert_eq!(unsafe { v4(p6, full) }, None, "not IPv4");

    let mut out = [0xffu8; 32];
    let mut len = full;
    // SAFETY: a buffer of `len` bytes.
    unsafe { put_addr(out.as_mut_ptr().cast(), &mut len, a) };
    assert_eq!(unsafe { v4(out.as_ptr().cast(), len) }, Some(a));
    // A buffer of 4 bytes gets 4, and the length it would need.
    let mut short = [0xffu8; 8];
    let mut len = 4;
    // SAFETY: as above.
    unsafe { put_addr(short.as_mut_ptr().cast(), &mut len, a) };
    assert_eq!(len, full);
    assert_eq!(short[4..], [0xff; 4], "nothing past the caller's length");
    assert_eq!(u16::from_be_bytes([short[2], short[3]]), 7000);
}

#[test]
fn timeouts_from_c() {
    assert_eq!(ms_timeout(-1), None, "without limit");
    assert_eq!(ms_timeout(0), Some(Duration::ZERO));
    assert_eq!(ms_timeout(1500), Some(Duration::from_millis(1500)));
    let ts = libc::timespec { tv_sec: 2, tv_nsec: 5 };
    // SAFETY: a timespec, or none.
    assert_eq!(unsafe { timespec_timeout(&ts) }, Some(Duration::new(2, 5)));
    assert_eq!(unsafe { timespec_timeout(std::ptr::null()) }, None);
    let tv = libc::timeval { tv_sec: 1, tv_usec: 500_000 };
    let len = std::mem::size_of::<libc::timeval>() as socklen_t;
    let p = (&tv as *const libc::timeval).cast::<c_void>();
    assert_eq!(timeval_of(p, len), Some(Some(Duration::from_millis(1500))));
    assert_eq!(timeval_of(p, len - 1), None, "too short: EINVAL");
    let zero = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let p0 = (&zero as *const libc::timeval).cast::<c_void>();
    assert_eq!(timeval_of(p0, len), Some(None), "zero: no timeout");
    let one: c_int = 1;
    assert_eq!(int_of((&one as *const c_int).cast(), 4), Some(1));
    assert_eq!(int_of((&one as *const c_int).cast(), 2), None);
}

/// A control buffer of `msgs` (level, type, descriptors), laid out as the C library's macros
/// walk it.
fn control(msgs: &[(c_int, c_int, &[RawFd])]) -> Vec<u64> {
    // SAFETY: computations on lengths.
    let space: usize =
        msgs.iter().map(|m| unsafe { libc::CMSG_SPACE(4 * m.2.len() as u32) } as usize).sum();
    let mut buf = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr pointing at the buffer; each header within it.
    unsafe {
        let mut m: msghdr = std::mem::zeroed();
        m.msg_control = buf.as_mut_ptr().cast();
        m.msg_controllen = space;
        let mut c = libc::CMSG_FIRSTHDR(&m);
        for &(level, ty, fds) in msgs {
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = libc::CMSG_LEN(4 * fds.len() as u32) as usize;
            let data = libc::CMSG_DATA(c).cast::<c_int>();
            for (i, &fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd);
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    buf
}

#[test]
fn the_descriptors_a_message_passes() {
    let mut buf = control(&[
        (libc::SOL_SOCKET, libc::SCM_RIGHTS, &[3, 4]),
        (libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0, 0, 0]),
        (libc::SOL_SOCKET, libc::SCM_RIGHTS, &[9]),
    ]);
    // SAFETY: a zeroed msghdr.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_control = buf.as_mut_ptr().cast();
    m.msg_controllen = buf.len() * 8;
    // SAFETY: the control buffer above.
    assert_eq!(unsafe { passed_fds(&m) }, [3, 4, 9]);
    m.msg_controllen = 0;
    assert_eq!(unsafe { passed_fds(&m) }, [] as [RawFd; 0]);
}

#[test]
fn tcp_info_of_a_socket_without_a_connection() {
    assert_eq!(tcp_info(true, None).tcpi_state, 10, "TCP_LISTEN");
    assert_eq!(tcp_info(false, None).tcpi_state, 7, "TCP_CLOSE");
}
