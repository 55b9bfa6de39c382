//! The frame-to-logits hot path does not allocate once warmed up: raw camera frames go from bytes
//! to tensor (whole or cropped), the int8 network from tensor to logits (and features), and
//! custom heads from features to logits, reusing their buffers on every thread; the motion gate
//! decides on fixed buffers, and collecting frames for labelling costs nothing while it saves
//! nothing.
//! (Own test binary with one test: it installs a process-wide counting allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use edgeclass::capture::{CollectConfig, Collector, Frame, MotionConfig, MotionGate, PixelFormat};
use edgeclass::model::{
    calibrate, synthetic_input, write_gguf, BackboneRef, Dense, Head, Model, Network, Precision,
    StorageDtype,
};
use edgeclass::postprocess::MeanProbabilities;
use edgeclass::preprocess::{CropRegion, PreprocessConfig, Preprocessor, Tta};

/// Counts every allocation in the process (all threads) while `COUNTING` is set.
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

/// Allocations anywhere in the process while `work` runs.
fn allocations_during(work: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    work();
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed)
}

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

// One test on purpose: the count is process-wide, so nothing else may run beside it.
#[test]
fn hot_path_allocates_nothing_after_warm_up() {
    let pixels = 320 * 240;
    let gradient = |len: usize| (0..len).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    let frames = [
        frame(PixelFormat::Yuyv, gradient(pixels * 2)),
        frame(PixelFormat::Nv12, gradient(pixels * 3 / 2)),
        frame(PixelFormat::Rgb24, gradient(pixels * 3)),
    ];
    let door = CropRegion::new(0.25, 0.0, 0.5, 0.75).expect("valid region");
    for frame in &frames {
        for region in [None, Some(door)] {
            let mut preprocessor =
                Preprocessor::new(PreprocessConfig::default()).with_region(region);
            let warm_up = preprocessor.run(frame).unwrap().to_vec();
            let allocations = allocations_during(|| {
                for _ in 0..5 {
                    preprocessor.run(frame).unwrap();
                }
            });
            assert_eq!(
                allocations, 0,
                "{:?} frames cut to {region:?} allocated {allocations} times",
                frame.format
            );
            assert_eq!(preprocessor.run(frame).unwrap(), &warm_up[..]);
        }
    }

    // The motion gate, masked, deciding both ways: a changed frame (the reference is copied
    // into place) and unchanged ones.
    let mask = vec![CropRegion::new(0.0, 0.0, 0.25, 0.25).expect("valid region")];
    let mut gate = MotionGate::new(&MotionConfig {
        mask,
        ..MotionConfig::default()
    });
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let first = preprocessor.decode(&frames[0]).unwrap().clone();
    let second = preprocessor.decode(&frames[1]).unwrap().clone();
    assert!(gate.changed(&first));
    let mut decisions = Vec::with_capacity(4);
    let allocations = allocations_during(|| {
        for image in [&first, &second, &second, &first] {
            decisions.push(gate.changed(image));
        }
    });
    assert_eq!(decisions, [false, true, false, true]);
    assert_eq!(allocations, 0, "the motion gate allocated");

    // Test-time augmentation: every view, and the mean of their probabilities, reuse their
    // buffers. A YUYV frame loaded raw: the plain view reads its planes, the others convert it.
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let mut mean = MeanProbabilities::default();
    let logits: Vec<f32> = (0..1000).map(|i| (i % 13) as f32).collect();
    let all_views = |preprocessor: &mut Preprocessor, mean: &mut MeanProbabilities| {
        preprocessor.load(&frames[0]).unwrap();
        mean.clear();
        for view in Tta::FlipCrops.views() {
            preprocessor.view(*view);
            mean.add(&logits, 1.0);
        }
        mean.logits();
    };
    all_views(&mut preprocessor, &mut mean);
    let allocations =
        allocations_during(|| (0..3).for_each(|_| all_views(&mut preprocessor, &mut mean)));
    assert_eq!(
        allocations, 0,
        "test-time views allocated {allocations} times"
    );

    // Collecting: one frame saved, then frames inside the interval and, after it, a
    // near-duplicate of the saved one are turned down without allocating.
    let collect_dir = tempfile::tempdir().expect("temporary directory");
    let config = CollectConfig {
        enabled: true,
        dir: Some(collect_dir.path().to_path_buf()),
        every_s: 60,
        ..CollectConfig::default()
    };
    let camera = "door".parse().expect("camera id");
    let mut collector = Collector::new(camera, &config, collect_dir.path());
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let image = preprocessor.decode(&frames[0]).unwrap();
    let start = Instant::now();
    assert!(collector.wants(image, start));
    collector.save(b"jpeg", SystemTime::now());
    let after = |seconds| start + Duration::from_secs(seconds);
    let mut wanted = Vec::with_capacity(6);
    let allocations = allocations_during(|| {
        for second in [1, 30, 59, 60, 90, 120] {
            wanted.push(collector.wants(image, after(second)));
        }
    });
    assert_eq!(wanted, [false; 6]);
    assert_eq!(allocations, 0, "turning frames down allocated");
    assert_eq!(
        std::fs::read_dir(collect_dir.path())
            .expect("list the collect dir")
            .count(),
        1
    );

    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model_tiny_resnet18.safetensors");
    // The same network calibrated (static path: levels between layers).
    let dir = tempfile::tempdir().expect("temporary directory");
    let calibrated = dir.path().join("calibrated.gguf");
    let samples = [synthetic_input(2, 224), synthetic_input(3, 224)];
    let network = Network::load(&weights).expect("load the reference network");
    let network = calibrate(
        network,
        Precision::Q8_0,
        2,
        samples.iter().map(Vec::as_slice),
    )
    .expect("calibrate");
    write_gguf(&network, StorageDtype::Q8_0, &calibrated).expect("write the calibrated model");
    let models = [
        (&weights, Precision::Q8_0, "dynamic"),
        (&weights, Precision::Q4_0, "dynamic"),
        (&calibrated, Precision::Q8_0, "calibrated"),
    ];
    for (path, precision, scales) in models {
        let model = Model::load(path, precision, 2).expect("load the reference network");
        assert_eq!(model.activation_scales(), scales);
        let input = synthetic_input(1, model.input_size());
        let mut logits = Vec::new();
        for _ in 0..3 {
            model.forward(&input, &mut logits).expect("warm-up forward");
        }
        let first = logits.clone();
        let allocations = allocations_during(|| {
            for _ in 0..50 {
                model.forward(&input, &mut logits).expect("forward");
            }
        });
        assert_eq!(
            logits, first,
            "{precision} {scales}: same input, same logits"
        );
        // Each frame enters the rayon pool once; rayon's injector queue may allocate one block
        // per 63 entries. Anything per frame or per layer would show up here 50 times or more.
        assert!(
            allocations <= 1,
            "{precision} {scales}: {allocations} allocations in 50 warm forwards"
        );

        // The same frame for the ImageNet classes and a head, as a camera with heads runs it.
        let head = two_layer_head(&model);
        let (mut features, mut hidden, mut head_logits) = (Vec::new(), Vec::new(), Vec::new());
        let mut with_head = || {
            model
                .forward_with_features(&input, &mut logits, &mut features)
                .expect("forward with features");
            head.forward(&features, &mut hidden, &mut head_logits);
        };
        with_head();
        let allocations = allocations_during(|| (0..50).for_each(|_| with_head()));
        assert!(
            allocations <= 1,
            "{precision} {scales}: {allocations} allocations in 50 warm forwards with a head"
        );
    }
}

/// A `features -> 8 -> 2` head on `model`'s backbone.
fn two_layer_head(model: &Model) -> Head {
    let features = model.feature_len();
    let dense = |inputs: usize, outputs: usize| Dense {
        weight: (0..inputs * outputs)
            .map(|i| (i % 7) as f32 * 0.01)
            .collect(),
        bias: vec![0.0; outputs],
    };
    let backbone = BackboneRef {
        fingerprint: model.fingerprint().to_string(),
        file: "tiny".into(),
    };
    let classes = vec!["open".to_string(), "closed".to_string()];
    Head::new(
        classes,
        vec![dense(features, 8), dense(8, 2)],
        features,
        backbone,
    )
    .expect("head")
}
