//! A global allocator wrapper that watches the fuzz worker threads' allocation *requests*.
//!
//! "Never absurd allocation" is checked per input: the largest single request made while the
//! input was parsed must stay below a soft limit (reported as a failure afterwards). A request
//! above the hard limit would make the host allocator fail and abort the whole process (losing
//! the input), so the allocator instead parks the requesting thread forever after flagging the
//! request; the supervising thread notices, saves the input and reports it.
//!
//! Only threads that registered an [`AllocWatch`] are watched; everything else (the test harness,
//! the supervisor) passes straight through to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Per-worker allocation watch, shared between the worker and its supervisor.
#[derive(Debug, Default)]
pub struct AllocWatch {
    /// Largest single request since the last [`AllocWatch::take_peak`].
    peak: AtomicUsize,
    /// Size of a request above the hard limit (0: none); the requester is parked.
    pub huge: AtomicUsize,
    /// Requests above this many bytes park the thread.
    pub hard_limit: AtomicUsize,
}

impl AllocWatch {
    /// A watch with the given hard limit.
    pub fn new(hard_limit: usize) -> Self {
        Self { peak: AtomicUsize::new(0), huge: AtomicUsize::new(0), hard_limit: AtomicUsize::new(hard_limit) }
    }

    /// The largest request since the previous call, resetting it.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

thread_local! {
    // Const-initialised and without a destructor, so reading it never allocates (which would
    // recurse into the allocator).
    static WATCH: Cell<*const AllocWatch> = const { Cell::new(std::ptr::null()) };
}

/// Watch the current thread's allocations with `w` (which must outlive the registration; the
/// harness keeps it in an `Arc` owned by the thread itself), or stop watching with `None`.
pub fn register(w: Option<&AllocWatch>) {
    WATCH.with(|c| c.set(w.map_or(std::ptr::null(), |w| w as *const AllocWatch)));
}

#[inline]
fn check(size: usize) {
    let p = WATCH.try_with(|c| c.get()).unwrap_or(std::ptr::null());
    if p.is_null() {
        return;
    }
    // SAFETY: `register` callers guarantee the watch outlives the registration.
    let w = unsafe { &*p };
    w.peak.fetch_max(size, Ordering::Relaxed);
    if size > w.hard_limit.load(Ordering::Relaxed) {
        w.huge.store(size, Ordering::SeqCst);
        // Park forever: the supervisor reports the input. `sleep` does not allocate.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// The fuzzer's global allocator: [`System`] plus [`check`] on every request.
pub struct TrackingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; `check` never
// allocates and never unwinds.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
