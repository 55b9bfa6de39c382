//! The hand-over slot and the motion gate, on real frames decoded from the sample JPEGs.

mod common {
    pub mod wait;
}

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::wait::{current_thread_id, wait_until_asleep};
use edgeclass::capture::{Frame, FrameSlot, MotionConfig, MotionGate, PixelFormat, SlotStats};
use image::RgbImage;

fn frame(seq: u64) -> Frame {
    Frame {
        format: PixelFormat::Encoded,
        width: 0,
        height: 0,
        data: vec![seq as u8; 16],
        captured_at: SystemTime::now(),
        seq,
        origin: "test".into(),
    }
}

#[test]
fn newest_frame_wins_and_replaced_frames_count_as_dropped() {
    let slot = FrameSlot::new();
    for seq in 0..5 {
        slot.put(frame(seq));
    }
    let taken = slot.take(Duration::ZERO).expect("a frame is waiting");
    assert_eq!(taken.seq, 4);
    assert_eq!(
        slot.stats(),
        SlotStats {
            delivered: 1,
            dropped: 4
        }
    );
    // Nothing else can put a frame, so waiting could not change the answer.
    assert!(
        slot.take(Duration::ZERO).is_none(),
        "slot holds one frame at most"
    );
    assert_eq!(
        slot.stats(),
        SlotStats {
            delivered: 1,
            dropped: 4
        }
    );
}

/// Runs `take` on a thread of its own and returns once that thread is blocked waiting in it
/// (a frame put or a close after that must wake it), with the result: the frame and how long
/// `take` waited.
fn spawn_waiting_take(
    slot: &Arc<FrameSlot>,
    timeout: Duration,
) -> thread::JoinHandle<(Option<Frame>, Duration)> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let consumer = {
        let slot = Arc::clone(slot);
        thread::spawn(move || {
            tid_tx.send(current_thread_id()).expect("send thread id");
            let started = Instant::now();
            (slot.take(timeout), started.elapsed())
        })
    };
    let tid = tid_rx.recv().expect("consumer thread id");
    assert!(
        wait_until_asleep(tid, Duration::from_secs(30)),
        "consumer never blocked in take"
    );
    consumer
}

#[test]
fn take_waits_for_a_frame_from_another_thread() {
    let slot = Arc::new(FrameSlot::new());
    let consumer = spawn_waiting_take(&slot, Duration::from_secs(30));
    slot.put(frame(7));
    let (taken, _) = consumer.join().unwrap();
    assert_eq!(taken.expect("producer puts a frame").seq, 7);
}

#[test]
fn close_wakes_a_waiting_consumer_and_ignores_later_frames() {
    let slot = Arc::new(FrameSlot::new());
    let consumer = spawn_waiting_take(&slot, Duration::from_secs(60));
    slot.close();
    let (taken, waited) = consumer.join().unwrap();
    assert!(taken.is_none());
    // Woken by close, not by the 60 s timeout.
    assert!(waited < Duration::from_secs(60), "waited {waited:?}");
    slot.put(frame(1));
    assert!(slot.is_closed());
    assert!(slot.take(Duration::ZERO).is_none());
    assert_eq!(slot.stats(), SlotStats::default());
}

fn fixture(name: &str) -> RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/images")
        .join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn gate() -> MotionGate {
    MotionGate::new(&MotionConfig::default())
}

/// `image` shifted right by `dx` pixels, the uncovered strip filled with the edge column.
fn shifted(image: &RgbImage, dx: u32) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        *image.get_pixel(x.saturating_sub(dx), y)
    })
}

/// Deterministic noise of up to `amplitude` levels per channel (a small LCG, no extra crates).
fn noisy(image: &RgbImage, amplitude: i16) -> RgbImage {
    let mut state: u32 = 12345;
    let mut out = image.clone();
    for value in out.iter_mut() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let noise = ((state >> 16) % (2 * amplitude as u32 + 1)) as i16 - amplitude;
        *value = (i16::from(*value) + noise).clamp(0, 255) as u8;
    }
    out
}

#[test]
fn first_frame_is_classified_and_the_same_frame_again_is_not() {
    let cat = fixture("chelsea.jpg");
    let mut gate = gate();
    assert!(gate.changed(&cat));
    assert!(!gate.changed(&cat));
    assert_eq!(gate.last_difference(), 0.0);
}

#[test]
fn a_different_scene_is_classified() {
    let mut gate = gate();
    assert!(gate.changed(&fixture("chelsea.jpg")));
    assert!(gate.changed(&fixture("coffee.jpg")));
    assert!(gate.last_difference() > 0.05, "{}", gate.last_difference());
}

#[test]
fn a_shifted_scene_is_classified() {
    let cat = fixture("chelsea.jpg");
    let mut gate = gate();
    assert!(gate.changed(&cat));
    assert!(
        gate.changed(&shifted(&cat, 24)),
        "difference {}",
        gate.last_difference()
    );
}

#[test]
fn sensor_noise_below_the_threshold_is_not() {
    let cat = fixture("chelsea.jpg");
    let mut gate = gate();
    assert!(gate.changed(&cat));
    assert!(
        !gate.changed(&noisy(&cat, 6)),
        "difference {}",
        gate.last_difference()
    );
    assert!(
        gate.last_difference() > 0.0,
        "noise should register, just below the threshold"
    );
}

#[test]
fn the_reference_moves_only_when_a_frame_is_classified() {
    // Two small steps that each stay under the threshold add up to a change.
    let base = RgbImage::from_pixel(64, 48, image::Rgb([100, 100, 100]));
    let step = |level: u8| RgbImage::from_pixel(64, 48, image::Rgb([level; 3]));
    let mut gate = gate();
    assert!(gate.changed(&base));
    assert!(!gate.changed(&step(103)), "1.2% change stays under 2%");
    assert!(
        gate.changed(&step(106)),
        "2.4% from the classified frame crosses 2%"
    );
    assert!(!gate.changed(&step(106)));
}

#[test]
fn a_disabled_gate_classifies_everything() {
    let cat = fixture("chelsea.jpg");
    let mut gate = MotionGate::new(&MotionConfig {
        enabled: false,
        ..MotionConfig::default()
    });
    assert!(gate.changed(&cat));
    assert!(gate.changed(&cat));
}

/// A static scene should cost almost nothing: report the gate's cost relative to decoding the
/// JPEG the daemon has to decode anyway (ratio only; this machine's timings are noisy).
#[test]
fn gate_costs_a_small_fraction_of_a_decode() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/chelsea.jpg");
    let bytes = std::fs::read(path).unwrap();
    let rounds = 50;
    let started = Instant::now();
    let mut cat = RgbImage::new(0, 0);
    for _ in 0..rounds {
        cat = image::load_from_memory(&bytes).unwrap().to_rgb8();
    }
    let decode = started.elapsed();
    let mut gate = gate();
    let started = Instant::now();
    let mut changed = 0;
    for _ in 0..rounds {
        changed += usize::from(gate.changed(&cat));
    }
    let gating = started.elapsed();
    assert_eq!(
        changed, 1,
        "only the first of identical frames is classified"
    );
    println!(
        "motion gate / JPEG decode time ratio on a 320x213 frame: {:.4}",
        gating.as_secs_f64() / decode.as_secs_f64()
    );
}
