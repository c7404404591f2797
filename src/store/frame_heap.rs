//! Plain frames in heaps of their own.
//!
//! A plain frame (~1.3 KB) lives from its publication until the packer replaces it (seconds under a
//! burst of ingest), while the objects published with it (store nodes, metadata) live as long as the
//! call. From the allocator's common heap, frames and long-lived objects of similar size share pages,
//! and a page with one long-lived object left stays resident after its frames are freed: 100,000 calls
//! arriving at once left ~700 bytes a call behind. Here each runtime thread allocates frames from a
//! mimalloc heap used for nothing else, so freeing them frees whole pages.

use bytes::Bytes;
// Links the mimalloc library whose heap functions are declared below, also where it is not the global
// allocator (the tests).
use mimalloc as _;
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr::NonNull;

unsafe extern "C" {
    fn mi_heap_new() -> *mut c_void;
    fn mi_heap_malloc(heap: *mut c_void, size: usize) -> *mut c_void;
    fn mi_free(p: *mut c_void);
}

thread_local! {
    /// This thread's frame heap (null until first used). Never deleted: at thread exit mimalloc keeps
    /// the blocks of an abandoned heap valid, and frames outlive the thread that made them.
    static HEAP: Cell<*mut c_void> = const { Cell::new(std::ptr::null_mut()) };
}

/// A frame's bytes in a frame heap.
struct HeapFrame {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the block is owned by this value alone and never written after construction; mimalloc frees
// a block from any thread.
unsafe impl Send for HeapFrame {}
// SAFETY: shared access only reads the immutable bytes.
unsafe impl Sync for HeapFrame {}

impl AsRef<[u8]> for HeapFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialized bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HeapFrame {
    fn drop(&mut self) {
        // SAFETY: allocated by mi_heap_malloc and freed once, here.
        unsafe { mi_free(self.ptr.as_ptr().cast()) };
    }
}

fn heap() -> *mut c_void {
    HEAP.with(|heap| {
        if heap.get().is_null() {
            // SAFETY: creates a heap owned by this thread; no pointers passed.
            heap.set(unsafe { mi_heap_new() });
        }
        heap.get()
    })
}

/// `frame`'s bytes, copied into this thread's frame heap (or kept as they are should it be exhausted).
pub fn frame_bytes(frame: String) -> Bytes {
    match in_heap(&[frame.as_bytes()]) {
        Some(bytes) => bytes,
        None => Bytes::from(frame),
    }
}

/// The concatenation of `parts`, written once, straight into this thread's frame heap (or into a
/// common allocation should it be exhausted).
pub fn frame_from(parts: &[&[u8]]) -> Bytes {
    in_heap(parts).unwrap_or_else(|| Bytes::from(parts.concat()))
}

fn in_heap(parts: &[&[u8]]) -> Option<Bytes> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let heap = heap();
    if heap.is_null() || len == 0 {
        return None;
    }
    // SAFETY: the heap belongs to this thread (thread-local), as mi_heap_malloc requires.
    let ptr = NonNull::new(unsafe { mi_heap_malloc(heap, len) }.cast::<u8>())?;
    let mut at = 0;
    for part in parts {
        // SAFETY: `ptr` is a fresh block of `len` bytes, the parts' lengths sum to `len`, and no part
        // overlaps it.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.as_ptr().add(at), part.len()) };
        at += part.len();
    }
    Some(Bytes::from_owner(HeapFrame { ptr, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_its_bytes_wherever_it_is_dropped() {
        let text = format!(
            "{{\"type\":\"notification\",\"pad\":\"{}\"}}",
            "x".repeat(1300)
        );
        let frame = frame_bytes(text.clone());
        assert_eq!(&frame[..], text.as_bytes());
        let shared = frame.clone();
        drop(frame);
        // Freed on another thread, as the packer's applier and the outboxes' writers do.
        let seen = std::thread::spawn(move || shared.to_vec()).join().unwrap();
        assert_eq!(seen, text.as_bytes());
    }

    #[test]
    fn frames_from_a_thread_that_ended_stay_valid() {
        let frame = std::thread::spawn(|| frame_bytes("{\"seq\":1}".to_owned()))
            .join()
            .unwrap();
        assert_eq!(&frame[..], b"{\"seq\":1}");
        assert_eq!(frame_bytes(String::new()), Bytes::new());
    }
}
