//! The int8 inference path does not allocate once warmed up: every activation, im2col and
//! quantization buffer is reused from frame to frame, on every pool thread. (Own test binary: it
//! installs a counting allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use edgeclass::model::{synthetic_input, Model, Precision};

/// Counts every allocation in the process while `COUNTING` is set.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count_allocation() {
    if COUNTING.load(Ordering::Relaxed) {
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

#[test]
fn quantized_forward_allocates_nothing_after_warm_up() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model_tiny_resnet18.safetensors");
    for precision in [Precision::Q8_0, Precision::Q4_0] {
        let model = Model::load(&weights, precision, 2).expect("load the reference network");
        let input = synthetic_input(1, model.input_size());
        let mut logits = Vec::new();
        for _ in 0..3 {
            model.forward(&input, &mut logits).expect("warm-up forward");
        }
        let first = logits.clone();
        ALLOCATIONS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        for _ in 0..50 {
            model.forward(&input, &mut logits).expect("forward");
        }
        COUNTING.store(false, Ordering::Relaxed);
        assert_eq!(logits, first, "{precision}: same input, same logits");
        // Each frame enters the rayon pool once; rayon's injector queue may allocate one block
        // per 63 entries. Anything per frame or per layer would show up here 50 times or more.
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        assert!(
            allocations <= 1,
            "{precision}: {allocations} allocations in 50 warm forwards"
        );
    }
}
