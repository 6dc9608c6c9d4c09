//! Running `etran_tcp_rehome` (`src/bpf/tcp/tcp_rehome.h`): the daemon's one way to change a
//! connection's owner, under the connection's lock, and learn where its stream stands.
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::bpf::tcp::types::{etran_tcp_owner, etran_tcp_rehome, tcp_conn_key};

use super::stream::Resume;

/// The owner of a connection on its way between apps: no app's port.
pub const MOVING: u32 = etran_tcp_owner::ETRAN_TCP_OWNER_MOVING.0;

/// Makes `owner` (a port slot, or [`MOVING`]) the owner of connection `key`; returns where the
/// kernel's state stood as it did, or None when the connection is not in the fast path.
pub fn rehome(
    prog: BorrowedFd<'_>,
    key: &tcp_conn_key,
    owner: u32,
) -> std::io::Result<Option<Resume>> {
    let req = etran_tcp_rehome { key: *key, owner, ..Default::default() };
    let size = std::mem::size_of::<etran_tcp_rehome>();
    let mut frame = vec![0u8; size];
    // SAFETY: a plain C struct copied into a buffer of its size.
    unsafe { std::ptr::write_unaligned(frame.as_mut_ptr().cast::<etran_tcp_rehome>(), req) };
    let mut out = vec![0u8; size];
    let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: size as u32,
        data_out: out.as_mut_ptr().cast(),
        data_size_out: size as u32,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: the buffers outlive the call and are as long as the options say.
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    if opts.retval != libbpf_rs::libbpf_sys::XDP_TX || opts.data_size_out as usize != size {
        return Err(std::io::Error::other(format!("etran_tcp_rehome answered {}", opts.retval)));
    }
    // SAFETY: the program wrote back a whole struct etran_tcp_rehome.
    let r: etran_tcp_rehome = unsafe { std::ptr::read_unaligned(out.as_ptr().cast()) };
    Ok((r.found != 0).then_some(Resume {
        rx_pos: r.rx_pos,
        tx_pos: r.tx_pos,
        una_pos: r.una_pos,
        send_wnd: r.send_wnd,
        rcv_wnd: r.rcv_wnd,
        fin: r.fin,
    }))
}
