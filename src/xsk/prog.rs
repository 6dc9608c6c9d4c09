//! The XDP side of a plain AF_XDP setup: `xsk_redirect` (frames on queue q → the socket in
//! XSKMAP slot q) and the `xsk_pktgen` live-frame generator, from `src/bpf/xsk/xsk_redirect.bpf.c`.
//! Attachments are BPF links: they go away when this value is dropped, or when the process
//! dies, so nothing stale stays on an interface.
use std::{
    mem::MaybeUninit,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use anyhow::Context;
use libbpf_rs::{skel::SkelBuilder, Link, MapCore, MapFlags, OpenObject};

use crate::bpf::xsk_redirect::{XskRedirectSkel, XskRedirectSkelBuilder};

use super::socket::Socket;

/// `BPF_F_TEST_XDP_LIVE_FRAMES`.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The loaded `xsk_redirect` object and whatever of it is attached.
pub struct XskProgram {
    links: Vec<Link>,
    // Declared before `object` so it is dropped first: it borrows the object storage.
    skel: Option<XskRedirectSkel<'static>>,
    object: *mut MaybeUninit<OpenObject>,
}

// SAFETY: the skeleton is Send; `object` is uniquely owned heap storage it borrows.
unsafe impl Send for XskProgram {}

impl XskProgram {
    /// Loads the programs. `pktgen_ifindex` is the interface `xsk_pktgen` transmits on (0 when the
    /// generator is not used).
    pub fn load(pktgen_ifindex: u32) -> anyhow::Result<XskProgram> {
        Self::open(pktgen_ifindex, None)
    }

    /// Loads the programs for a compat app port whose receive budget is the map `budget`
    /// (`xsk_port_redirect` counts arrivals in it): see [`XskProgram::attach_port_redirect`].
    pub fn load_for_port(budget: BorrowedFd<'_>) -> anyhow::Result<XskProgram> {
        Self::open(0, Some(budget))
    }

    /// The program the verifier worked hardest on: see [`crate::bpf::verifier::heaviest`].
    pub fn heaviest(&self) -> Option<(String, u32)> {
        use libbpf_rs::skel::Skel;
        self.skel.as_ref().and_then(|s| crate::bpf::verifier::heaviest(s.object()))
    }

    fn open(pktgen_ifindex: u32, budget: Option<BorrowedFd<'_>>) -> anyhow::Result<XskProgram> {
        crate::sys::require_root("loading XDP programs")?;
        let object = Box::into_raw(Box::new(MaybeUninit::<OpenObject>::uninit()));
        let mut this = XskProgram { links: Vec::new(), skel: None, object };
        // SAFETY: `object` stays allocated until our Drop, which drops the skeleton first.
        let storage: &'static mut MaybeUninit<OpenObject> = unsafe { &mut *object };
        let mut open = XskRedirectSkelBuilder::default()
            .open(storage)
            .context("opening the xsk_redirect BPF object")?;
        if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
            ro.pktgen_ifindex = pktgen_ifindex;
        }
        if let Some(budget) = budget {
            open.maps.port_rx.reuse_fd(budget).context("sharing the port's receive budget")?;
        }
        this.skel = Some(crate::bpf::verifier::load(open, "the xsk_redirect programs")?);
        Ok(this)
    }

    fn skel(&self) -> &XskRedirectSkel<'static> {
        self.skel.as_ref().expect("loaded")
    }

    /// Attaches `xsk_redirect` to `ifindex` (drv mode when the driver has it).
    pub fn attach_redirect(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let link = self.skel().progs.xsk_redirect.attach_xdp(ifindex as i32);
        self.keep_redirect("xsk_redirect", ifindex, link)
    }

    /// Attaches `xsk_port_redirect` to `ifindex`, the app side of the port whose budget was
    /// given to [`XskProgram::load_for_port`].
    pub fn attach_port_redirect(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let link = self.skel().progs.xsk_port_redirect.attach_xdp(ifindex as i32);
        self.keep_redirect("xsk_port_redirect", ifindex, link)
    }

    fn keep_redirect(
        &mut self,
        name: &str,
        ifindex: u32,
        link: libbpf_rs::Result<Link>,
    ) -> anyhow::Result<()> {
        let link = link.with_context(|| {
            format!("attaching {name} to ifindex {ifindex} (is another XDP program there?)")
        })?;
        self.links.push(link);
        Ok(())
    }

    /// Attaches `xsk_pktgen` to `ifindex` (any interface: attaching only keeps test runs cheap;
    /// real traffic there passes).
    pub fn attach_pktgen(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let link = self
            .skel()
            .progs
            .xsk_pktgen
            .attach_xdp(ifindex as i32)
            .with_context(|| format!("attaching xsk_pktgen to ifindex {ifindex}"))?;
        self.links.push(link);
        Ok(())
    }

    /// Points XSKMAP slot `queue` at `sock`.
    pub fn insert(&self, queue: u32, sock: &Socket) -> anyhow::Result<()> {
        self.insert_fd(queue, sock.as_fd())
    }

    /// Points XSKMAP slot `queue` at the bound AF_XDP socket `fd` (the daemon holds app
    /// sockets as bare descriptors).
    pub fn insert_fd(&self, queue: u32, fd: BorrowedFd<'_>) -> anyhow::Result<()> {
        let fd = fd.as_raw_fd() as u32;
        self.skel()
            .maps
            .xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .with_context(|| format!("inserting the AF_XDP socket into XSKMAP slot {queue}"))
    }

    /// Empties XSKMAP slot `queue`.
    pub fn remove(&self, queue: u32) -> anyhow::Result<()> {
        self.skel()
            .maps
            .xsks
            .delete(&queue.to_ne_bytes())
            .with_context(|| format!("clearing XSKMAP slot {queue}"))
    }

    /// A descriptor of `xsk_pktgen`, for threads that generate at once: each runs it with
    /// [`run_live_frames`] out of the `pktgen_ifindex` given to [`XskProgram::load`].
    pub fn pktgen_fd(&self) -> anyhow::Result<OwnedFd> {
        self.skel().progs.xsk_pktgen.as_fd().try_clone_to_owned().context("dup of xsk_pktgen's fd")
    }
}

/// Runs the XDP program `prog` `repeat` times over `frame` with `BPF_PROG_RUN` and
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: each run's verdict really happens (XDP_TX out of `ifindex`,
/// XDP_REDIRECT through the program's maps), from the calling thread. `ifindex` 0 is the
/// network namespace's loopback. Attach `prog` to some interface first, or every call with
/// `repeat` > 1 waits for an RCU grace period (see reference/machine-facts.md).
pub fn run_live_frames(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> std::io::Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. data_end must be the frame's size.
    let words = [0u32, frame.len() as u32, 0, ifindex, 0, 0];
    let mut ctx = [0u8; 24];
    for (c, w) in ctx.chunks_exact_mut(4).zip(words) {
        c.copy_from_slice(&w.to_ne_bytes());
    }
    let mut opts = libbpf_rs::libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        ctx_in: ctx.as_ptr().cast(),
        ctx_size_in: ctx.len() as u32,
        repeat: repeat as _,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    // SAFETY: the buffers outlive the call; the kernel only reads them (no output buffers).
    let ret = unsafe { libbpf_rs::libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) };
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    Ok(())
}

impl Drop for XskProgram {
    fn drop(&mut self) {
        self.links.clear();
        self.skel = None;
        // SAFETY: allocated by Box::into_raw in `load`; the skeleton borrowing it is gone.
        drop(unsafe { Box::from_raw(self.object) });
    }
}
