//! Userspace's share of the kernel's WATCHED counts: how many tracked
//! processes fall in each slot, so that a program run by any other process
//! learns it is not tracked from one array read (no hash lookup). The
//! programs count the processes they track with atomic adds on the map;
//! userspace counts those it tracks itself (the masters, the workers found
//! at attach) with atomic adds on a mapping of the same memory.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use exporter_ebpf::abi::{WATCH_SLOTS, watch_slot};

/// Bytes per slot (a u64 count).
const SLOT_STRIDE: usize = 8;
const LEN: usize = WATCH_SLOTS as usize * SLOT_STRIDE;

pub struct Watched {
    slots: NonNull<u8>,
    /// Owns the map's descriptor (the mapping outlives neither).
    _map: MapData,
}

impl Watched {
    pub fn new(map: MapData) -> io::Result<Watched> {
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the array's LEN bytes (the map was
        // created mmap-able with WATCH_SLOTS values), unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Watched {
            slots: NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?,
            _map: map,
        })
    }

    fn slot(&self, tgid: u32) -> &AtomicU64 {
        let offset = watch_slot(tgid) as usize * SLOT_STRIDE;
        // SAFETY: offset + 8 <= LEN; the slot is aligned to 8 in a mapping
        // that lives as long as self, and the kernel updates it atomically.
        unsafe { AtomicU64::from_ptr(self.slots.as_ptr().add(offset).cast()) }
    }

    /// Counts a process userspace is about to track.
    pub fn add(&self, tgid: u32) {
        self.slot(tgid).fetch_add(1, Ordering::SeqCst);
    }

    /// Uncounts a process userspace stopped tracking (or did not after all).
    pub fn remove(&self, tgid: u32) {
        self.slot(tgid).fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: the mapping is shared memory updated only through atomics.
unsafe impl Send for Watched {}
unsafe impl Sync for Watched {}

impl Drop for Watched {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), not used after this.
        unsafe { libc::munmap(self.slots.as_ptr().cast(), LEN) };
    }
}
