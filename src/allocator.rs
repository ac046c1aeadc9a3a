//! The binary's allocator (the `jwtguard` binary only): dlmalloc for everyday blocks, fresh
//! pages from the kernel for large ones.
//!
//! dlmalloc is one heap behind one lock, with no per-thread caches: tiny_http starts a
//! thread per connection, and glibc's per-thread arenas would hold about 1 MiB more at 32
//! connections (README, Performance). But dlmalloc zero-fills a large zeroed block taken
//! from its heap and keeps the pages once it is freed. tiny_http's drain allocates a zeroed
//! buffer of the whole unread length of a body (up to 16 MiB) when a client closes before
//! sending it: 200 such clients made the process hold about 1 GiB (bench/bounds.sh). A
//! block of 256 KiB or more is therefore mapped from the kernel instead: zero pages that
//! cost memory only where they are written, and go back to the kernel when freed.

use std::alloc::{GlobalAlloc, Layout};
use std::num::NonZeroUsize;
use std::ptr::{self, NonNull};

use dlmalloc::GlobalDlmalloc;
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// Blocks this large or larger (256 KiB) are mapped from the kernel.
const LARGE: usize = 256 << 10;

/// The alignment a mapping always has (a page); a block that needs more stays with
/// dlmalloc.
const PAGE: usize = 4096;

pub struct Allocator;

fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

/// A new private anonymous mapping of `size` bytes (zeroed by the kernel), or null.
fn map(size: usize) -> *mut u8 {
    let Some(len) = NonZeroUsize::new(size) else {
        return ptr::null_mut();
    };
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new mapping at an address of the kernel's choosing aliases no memory.
    match unsafe { mmap_anonymous(None, len, prot, MapFlags::MAP_PRIVATE) } {
        Ok(block) => block.as_ptr().cast(),
        Err(_) => ptr::null_mut(),
    }
}

// SAFETY: every block is freed, and reallocated, by the allocator that made it: the choice
// depends only on the layout, which callers pass back unchanged (GlobalAlloc's contract).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded as received.
            unsafe { GlobalDlmalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded as received.
            unsafe { GlobalDlmalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: `block` is a mapping of this size made by `map` (same layout).
            if let Some(block) = NonNull::new(block) {
                let _ = unsafe { munmap(block.cast(), layout.size()) };
            }
        } else {
            // SAFETY: forwarded as received.
            unsafe { GlobalDlmalloc.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size`, rounded up to `layout.align()`, does not overflow (the
        // caller's guarantee).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(layout) && !is_large(new_layout) {
            // SAFETY: forwarded as received.
            return unsafe { GlobalDlmalloc.realloc(block, layout, new_size) };
        }
        // From one allocator to the other, or between mappings: a new block, a copy.
        // SAFETY: `new_layout` is valid, as above.
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live and distinct, each at least this long.
            unsafe {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        moved
    }
}
