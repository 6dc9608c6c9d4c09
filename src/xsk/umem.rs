//! UMEM: the packet memory an AF_XDP socket shares with the kernel, and the frame allocator
//! that hands its chunks out.
//!
//! A UMEM is `frame_count` chunks of `frame_size` bytes (2048 or 4096, aligned mode), backed by
//! 2 MiB huge pages when the system has them reserved and 4 KiB pages otherwise. Frames are
//! named by their byte offset in the UMEM ("address"), as in the rings. It is registered with
//! the kernel by the first socket bound to it ([`crate::xsk::Socket::new`]); the memory stays
//! mapped while any socket or handle uses it.
use std::{ptr::NonNull, sync::Arc};

use anyhow::{bail, Context};

use super::{ring::ConsRing, sys::XDP_PACKET_HEADROOM};

/// The chunk sizes a UMEM may have (aligned mode: powers of two up to a page).
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];

/// The smallest chunk size that receives a frame of `frame_len` bytes (Ethernet header
/// included) behind the kernel's `XDP_PACKET_HEADROOM` and `headroom` more: copy mode refuses
/// (drops, counted in `rx_dropped`) a frame longer than the chunk less both. An error names the
/// frame when no chunk holds it.
pub fn frame_size_for(frame_len: u32, headroom: u32) -> anyhow::Result<u32> {
    let need = XDP_PACKET_HEADROOM + headroom + frame_len;
    FRAME_SIZES.into_iter().find(|&size| size >= need).with_context(|| {
        format!(
            "a {frame_len}-byte frame needs {need}-byte UMEM chunks ({XDP_PACKET_HEADROOM} bytes \
             of kernel headroom and {headroom} of ours in front); AF_XDP chunks are at most {}",
            FRAME_SIZES[FRAME_SIZES.len() - 1]
        )
    })
}

/// How to lay out a UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of chunks.
    pub frame_count: u32,
    /// Chunk size: 2048 or 4096.
    pub frame_size: u32,
    /// Bytes the kernel leaves free in front of every received frame, on top of its own
    /// `XDP_PACKET_HEADROOM`.
    pub headroom: u32,
    /// Try 2 MiB huge pages first (falls back to 4 KiB pages silently; see
    /// [`Umem::huge_pages`]).
    pub huge_pages: bool,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig { frame_count: 4096, frame_size: 2048, headroom: 0, huge_pages: true }
    }
}

impl UmemConfig {
    /// Checks the layout without allocating anything.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !FRAME_SIZES.contains(&self.frame_size) {
            bail!("UMEM frame size {} is not supported: use 2048 or 4096", self.frame_size);
        }
        if self.frame_count == 0 {
            bail!("a UMEM needs at least one frame");
        }
        if self.headroom >= self.frame_size - XDP_PACKET_HEADROOM {
            bail!(
                "UMEM headroom {} leaves no room for data in a {}-byte frame (the kernel keeps {} more)",
                self.headroom,
                self.frame_size,
                XDP_PACKET_HEADROOM
            );
        }
        (self.frame_count as usize)
            .checked_mul(self.frame_size as usize)
            .filter(|&len| len <= 1 << 40)
            .context("UMEM too large")?;
        Ok(())
    }
}

struct Area {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
    cfg: UmemConfig,
    _map: memmap2::MmapMut,
}

// SAFETY: the mapping is owned by `_map`; concurrent access to frames is governed by frame
// ownership (only the current owner of a frame touches it), which the unsafe accessors require.
unsafe impl Send for Area {}
// SAFETY: as above.
unsafe impl Sync for Area {}

/// Packet memory; cheap to clone (all clones share one mapping).
#[derive(Clone)]
pub struct Umem {
    area: Arc<Area>,
}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("len", &self.area.len)
            .field("huge", &self.area.huge)
            .field("cfg", &self.area.cfg)
            .finish()
    }
}

const HUGE_PAGE: usize = 2 << 20;

impl Umem {
    /// Maps and pre-faults the memory (page-aligned; huge pages when available).
    pub fn new(cfg: UmemConfig) -> anyhow::Result<Umem> {
        cfg.validate()?;
        let len = cfg.frame_count as usize * cfg.frame_size as usize;
        let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let huge = if cfg.huge_pages {
            memmap2::MmapOptions::new().len(huge_len).huge(Some(21)).populate().map_anon().ok()
        } else {
            None
        };
        let (mut map, huge) = match huge {
            Some(m) => (m, true),
            None => (
                memmap2::MmapOptions::new()
                    .len(len)
                    .populate()
                    .map_anon()
                    .with_context(|| format!("mapping {len} bytes of UMEM"))?,
                false,
            ),
        };
        let ptr = NonNull::new(map.as_mut_ptr()).context("UMEM mapped at null")?;
        Ok(Umem { area: Arc::new(Area { ptr, len, huge, cfg, _map: map }) })
    }

    /// Maps a UMEM another process registered (the daemon's memfd, `MAP_SHARED`): the same
    /// pages the kernel already pinned for the socket, laid out as `cfg` says (no huge pages).
    pub fn from_memfd(fd: std::os::fd::BorrowedFd<'_>, cfg: UmemConfig) -> anyhow::Result<Umem> {
        use std::os::fd::AsRawFd;
        cfg.validate()?;
        let len = cfg.frame_count as usize * cfg.frame_size as usize;
        // SAFETY: the memfd is the UMEM, shared with the kernel by design; frames are accessed
        // only by their owner (see Umem::data), and the kernel writes only frames it was given.
        let mut map =
            unsafe { memmap2::MmapOptions::new().len(len).populate().map_mut(fd.as_raw_fd()) }
                .with_context(|| format!("mapping the {len}-byte UMEM memfd"))?;
        let cfg = UmemConfig { huge_pages: false, ..cfg };
        let ptr = NonNull::new(map.as_mut_ptr()).context("UMEM mapped at null")?;
        Ok(Umem { area: Arc::new(Area { ptr, len, huge: false, cfg, _map: map }) })
    }

    pub fn config(&self) -> UmemConfig {
        self.area.cfg
    }

    pub fn frame_count(&self) -> u32 {
        self.area.cfg.frame_count
    }

    pub fn frame_size(&self) -> u32 {
        self.area.cfg.frame_size
    }

    pub fn headroom(&self) -> u32 {
        self.area.cfg.headroom
    }

    /// Length in bytes (frames × frame size).
    pub fn len(&self) -> usize {
        self.area.len
    }

    pub fn is_empty(&self) -> bool {
        self.area.len == 0
    }

    /// Whether the memory is backed by 2 MiB huge pages.
    pub fn huge_pages(&self) -> bool {
        self.area.huge
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.area.ptr.as_ptr()
    }

    /// The start of the chunk that holds `addr`.
    pub fn frame_base(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.area.cfg.frame_size) - 1)
    }

    /// Where a frame's data starts when we write it for TX: past the configured headroom, so
    /// TX and RX frames look alike.
    pub fn tx_offset(&self) -> u64 {
        u64::from(self.area.cfg.headroom)
    }

    fn check(&self, addr: u64, len: usize) {
        let last = addr.checked_add((len as u64).max(1) - 1);
        let ok = last.is_some_and(|last| {
            last < self.area.len as u64 && self.frame_base(addr) == self.frame_base(last)
        });
        assert!(ok, "UMEM access {addr:#x}+{len} outside one frame of {:#x} bytes", self.area.len);
    }

    /// The bytes at `addr..addr+len`, which must lie within one frame.
    ///
    /// # Safety
    /// The caller must own the frame (it was received on RX / completed, or allocated and not
    /// yet handed to the kernel), so nothing writes it concurrently.
    pub unsafe fn data(&self, addr: u64, len: usize) -> &[u8] {
        self.check(addr, len);
        std::slice::from_raw_parts(self.as_ptr().add(addr as usize), len)
    }

    /// Mutable view of `addr..addr+len` within one frame.
    ///
    /// # Safety
    /// As for [`Umem::data`], and no other reference to these bytes may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn data_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        self.check(addr, len);
        std::slice::from_raw_parts_mut(self.as_ptr().add(addr as usize), len)
    }
}

/// Hands out the UMEM's chunks (by base address) and takes them back.
///
/// Invariant: every chunk in the allocator's range is either in the free stack (exactly once)
/// or out (owned by the app or the kernel). A bitmap records which; freeing a chunk that is
/// already free, or one outside the range, is a bug caught by a debug assertion and, in release
/// builds, ignored and counted ([`FrameAlloc::rejected`]) so it can never corrupt the stack.
/// Leaks show as `allocated() != 0` once everything should be back.
pub struct FrameAlloc {
    free: Vec<u64>,
    is_free: Vec<u64>,
    first: u32,
    count: u32,
    shift: u32,
    rejected: u64,
}

impl FrameAlloc {
    /// An allocator over all of the UMEM's frames.
    pub fn new(umem: &Umem) -> FrameAlloc {
        FrameAlloc::with_range(umem.frame_size(), 0, umem.frame_count())
    }

    /// An allocator over frames `first..first+count` of a UMEM with `frame_size` chunks (to
    /// split one UMEM between sockets or threads).
    pub fn with_range(frame_size: u32, first: u32, count: u32) -> FrameAlloc {
        assert!(frame_size.is_power_of_two(), "frame size must be a power of two");
        let shift = frame_size.trailing_zeros();
        // Pop order is ascending addresses.
        let free = (first..first + count).rev().map(|i| u64::from(i) << shift).collect();
        let words = (count as usize).div_ceil(64);
        let mut is_free = vec![u64::MAX; words];
        if count % 64 != 0 {
            if let Some(last) = is_free.last_mut() {
                *last = (1u64 << (count % 64)) - 1;
            }
        }
        FrameAlloc { free, is_free, first, count, shift, rejected: 0 }
    }

    /// Frames in the range.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    /// Frames currently free.
    pub fn available(&self) -> u32 {
        self.free.len() as u32
    }

    /// Frames currently out (owned by the app or the kernel).
    pub fn allocated(&self) -> u32 {
        self.count - self.available()
    }

    /// Frees that were refused (double frees and foreign addresses) in release builds.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The index in the range (0..capacity) of the chunk holding `addr`, `None` outside it.
    pub fn index_of(&self, addr: u64) -> Option<usize> {
        self.index(addr)
    }

    fn index(&self, addr: u64) -> Option<usize> {
        let i = addr >> self.shift;
        let first = u64::from(self.first);
        (i >= first && i < first + u64::from(self.count)).then(|| (i - first) as usize)
    }

    fn flip(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        let was = self.is_free[w] & b != 0;
        self.is_free[w] ^= b;
        was
    }

    /// One free chunk's base address.
    pub fn alloc(&mut self) -> Option<u64> {
        let addr = self.free.pop()?;
        let i = self.index(addr).expect("free stack holds only our frames");
        let was_free = self.flip(i);
        debug_assert!(was_free, "frame {addr:#x} on the free stack was not free");
        Some(addr)
    }

    /// Up to `n` chunks appended to `out`; returns how many.
    pub fn alloc_into(&mut self, n: usize, out: &mut Vec<u64>) -> usize {
        let mut got = 0;
        while got < n {
            match self.alloc() {
                Some(a) => out.push(a),
                None => break,
            }
            got += 1;
        }
        got
    }

    /// Takes back every chunk the completion ring `comp` returns (the kernel is done with it).
    pub fn reclaim(&mut self, comp: &mut ConsRing<u64>) {
        self.reclaim_each(comp, |_| {});
    }

    /// [`FrameAlloc::reclaim`], telling `each` the index in the range ([`FrameAlloc::index_of`])
    /// of every chunk taken back, before it is free again.
    pub fn reclaim_each(&mut self, comp: &mut ConsRing<u64>, mut each: impl FnMut(usize)) {
        let mut done = [0u64; 64];
        loop {
            let n = comp.consume_into(&mut done) as usize;
            for &a in &done[..n] {
                if let Some(i) = self.index(a) {
                    each(i);
                }
                self.free(a);
            }
            if n < done.len() {
                break;
            }
        }
    }

    /// Gives back the chunk holding `addr` (any address inside it). Returns false, and does
    /// nothing, for a double free or an address outside the range (a debug assertion fires
    /// first in debug builds).
    pub fn free(&mut self, addr: u64) -> bool {
        let base = (addr >> self.shift) << self.shift;
        let Some(i) = self.index(base) else {
            debug_assert!(false, "freeing {addr:#x}, not a frame of this allocator");
            self.rejected += 1;
            return false;
        };
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.is_free[w] & b != 0 {
            debug_assert!(false, "double free of frame {base:#x}");
            self.rejected += 1;
            return false;
        }
        self.is_free[w] |= b;
        self.free.push(base);
        true
    }

    /// Whether the chunk holding `addr` is currently free.
    pub fn is_free(&self, addr: u64) -> bool {
        self.index((addr >> self.shift) << self.shift)
            .is_some_and(|i| self.is_free[i / 64] & (1 << (i % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_frame_and_the_headroom() {
        assert_eq!(frame_size_for(1514, 0).unwrap(), 2048);
        assert_eq!(frame_size_for(2048 - XDP_PACKET_HEADROOM, 0).unwrap(), 2048);
        assert_eq!(frame_size_for(2048 - XDP_PACKET_HEADROOM + 1, 0).unwrap(), 4096);
        assert_eq!(frame_size_for(1514, 600).unwrap(), 4096);
        assert_eq!(frame_size_for(3520, 0).unwrap(), 4096);
        let e = frame_size_for(9014, 0).unwrap_err().to_string();
        assert!(e.contains("9014-byte frame") && e.contains("at most 4096"), "{e}");
    }

    #[test]
    fn config_errors_are_clear() {
        let bad = UmemConfig { frame_size: 3000, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("2048 or 4096"));
        let bad = UmemConfig { headroom: 2048 - 256, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("headroom"));
        let bad = UmemConfig { frame_count: 0, ..Default::default() };
        assert!(bad.validate().is_err());
        assert!(Umem::new(bad).is_err());
    }

    #[test]
    fn umem_maps_page_aligned_memory() {
        let umem = Umem::new(UmemConfig {
            frame_count: 64,
            frame_size: 4096,
            headroom: 128,
            huge_pages: true,
        })
        .unwrap();
        assert_eq!(umem.as_ptr() as usize % 4096, 0);
        if umem.huge_pages() {
            assert_eq!(umem.as_ptr() as usize % HUGE_PAGE, 0);
        }
        assert_eq!(umem.len(), 64 * 4096);
        assert_eq!(umem.frame_base(4096 * 3 + 700), 4096 * 3);
        // SAFETY: nobody else uses this UMEM.
        unsafe {
            umem.data_mut(4096, 4).copy_from_slice(b"abcd");
            assert_eq!(umem.data(4096, 4), b"abcd");
        }
    }

    #[test]
    #[should_panic(expected = "outside one frame")]
    fn umem_access_across_frames_panics() {
        let umem =
            Umem::new(UmemConfig { frame_count: 2, huge_pages: false, ..Default::default() })
                .unwrap();
        // SAFETY: nobody else uses this UMEM; the call panics before touching memory.
        let _ = unsafe { umem.data(2000, 100) };
    }

    #[test]
    fn allocator_hands_out_every_frame_once() {
        let mut a = FrameAlloc::with_range(2048, 10, 100);
        let mut got = Vec::new();
        assert_eq!(a.alloc_into(1000, &mut got), 100);
        assert_eq!(a.alloc(), None);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert!(sorted.iter().all(|&x| x % 2048 == 0 && (10 * 2048..110 * 2048).contains(&x)));
        assert_eq!(a.allocated(), 100);
        for (i, addr) in got.iter().enumerate() {
            // Any address inside the chunk frees it.
            assert!(a.free(addr + (i as u64 % 2048)));
        }
        assert_eq!(a.allocated(), 0);
        assert_eq!(a.available(), 100);
    }

    #[test]
    fn allocator_random_churn_keeps_its_invariant() {
        let mut a = FrameAlloc::with_range(4096, 0, 77);
        let mut out: Vec<u64> = Vec::new();
        let mut x = 0x1234_5678u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 {
                if let Some(f) = a.alloc() {
                    assert!(!out.contains(&f), "handed out twice");
                    out.push(f);
                }
            } else if !out.is_empty() {
                let f = out.swap_remove((x as usize / 3) % out.len());
                assert!(a.free(f));
                assert!(a.is_free(f));
            }
            assert_eq!(a.allocated() as usize, out.len());
        }
        for f in out.drain(..) {
            a.free(f);
        }
        assert_eq!(a.available(), 77);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "double free"))]
    fn double_free_is_caught() {
        let mut a = FrameAlloc::with_range(2048, 0, 4);
        let f = a.alloc().unwrap();
        assert!(a.free(f));
        assert!(!a.free(f));
        assert_eq!(a.rejected(), 1);
        assert_eq!(a.available(), 4);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "not a frame"))]
    fn foreign_free_is_caught() {
        let mut a = FrameAlloc::with_range(2048, 0, 4);
        assert!(!a.free(2048 * 4));
        assert_eq!(a.available(), 4);
    }
}
