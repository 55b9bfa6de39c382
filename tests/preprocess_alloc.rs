//! The hot path does not allocate once warmed up: raw camera frames of a steady size go from
//! bytes to tensor without touching the heap. (Own test binary: it installs a counting allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use edgeclass::capture::{Frame, PixelFormat};
use edgeclass::preprocess::{PreprocessConfig, Preprocessor};

/// Counts allocations made by threads that opted in (not the test harness's own threads).
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn frame(format: PixelFormat, data: Vec<u8>) -> Frame {
    Frame {
        format,
        width: 320,
        height: 240,
        data,
        captured_at: SystemTime::now(),
        seq: 0,
        origin: "cam0".to_string(),
    }
}

#[test]
fn raw_frames_are_processed_without_allocating_after_warm_up() {
    let pixels = 320 * 240;
    let gradient = |len: usize| (0..len).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    let frames = [
        frame(PixelFormat::Yuyv, gradient(pixels * 2)),
        frame(PixelFormat::Nv12, gradient(pixels * 3 / 2)),
        frame(PixelFormat::Rgb24, gradient(pixels * 3)),
    ];
    for frame in &frames {
        let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
        let warm_up = preprocessor.run(frame).unwrap().to_vec();

        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.with(|counting| counting.set(true));
        for _ in 0..5 {
            preprocessor.run(frame).unwrap();
        }
        COUNTING.with(|counting| counting.set(false));
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

        assert_eq!(
            allocations, 0,
            "{:?} frames allocated {allocations} times",
            frame.format
        );
        assert_eq!(preprocessor.run(frame).unwrap(), &warm_up[..]);
    }
}
