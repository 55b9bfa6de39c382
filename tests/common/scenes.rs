//! Rendered scenes for training tests: a door in a wall, open or closed, under varied light,
//! noise and position. ImageNet weights are not available offline, so heads are trained on
//! the seeded backbone with a task it can learn, built here.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use image::{Rgb, RgbImage};

use super::rng::Rng;

/// How much a set of scenes varies.
#[derive(Debug, Clone, Copy)]
pub struct Variation {
    /// Largest shift of the door from the centre, in pixels.
    pub shift: f32,
    /// Light level ranges over `[1 - light, 1 + light]`.
    pub light: f32,
    /// Whether the hinge may be on either side (a mirrored door).
    pub mirrored: bool,
}

impl Variation {
    /// A fixed camera: small shifts, moderate light changes, hinge always on the left.
    pub const CAMERA: Variation = Variation {
        shift: 6.0,
        light: 0.2,
        mirrored: false,
    };
    /// What the camera did not see while collecting: the door moved (the camera was bumped),
    /// night and noon light, the mirror image.
    pub const SHIFTED: Variation = Variation {
        shift: 28.0,
        light: 0.55,
        mirrored: true,
    };
}

/// A 160x120 picture of a door, `open` or closed, varied by `seed` within `variation`.
pub fn door(open: bool, seed: u64, variation: Variation) -> RgbImage {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ u64::from(open));
    let (width, height) = (160i32, 120i32);
    let light = rng.range(1.0 - variation.light, 1.0 + variation.light);
    let wall = [
        rng.range(170.0, 220.0),
        rng.range(160.0, 200.0),
        rng.range(130.0, 180.0),
    ];
    let wood = [
        rng.range(110.0, 160.0),
        rng.range(65.0, 100.0),
        rng.range(30.0, 60.0),
    ];
    let dark = rng.range(15.0, 45.0);
    let gradient = rng.range(-0.25, 0.25);
    let (door_w, door_h) = (rng.range(40.0, 48.0) as i32, rng.range(80.0, 90.0) as i32);
    let left = width / 2 - door_w / 2 + rng.range(-variation.shift, variation.shift) as i32;
    let top = height - door_h - 8 + rng.range(-variation.shift / 3.0, variation.shift / 3.0) as i32;
    let hinge_left = !(variation.mirrored && rng.unit() < 0.5);
    let mut noise = Rng(seed ^ 0xA5A5);
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let (x, y) = (x as i32, y as i32);
        let inside = x >= left && x < left + door_w && y >= top && y < top + door_h;
        let frame = x >= left - 3 && x < left + door_w + 3 && y >= top - 3 && y < top + door_h;
        // Within the doorway: column counted from the hinge.
        let from_hinge = if hinge_left {
            x - left
        } else {
            left + door_w - 1 - x
        };
        let mut colour = if inside {
            if open {
                // The interior is dark; the door panel shows edge-on by the hinge.
                if from_hinge < 7 {
                    wood.map(|c| c * 0.8)
                } else {
                    [dark, dark, dark * 1.1]
                }
            } else {
                let knob =
                    (from_hinge - (door_w - 7)).pow(2) + (y - (top + door_h / 2)).pow(2) <= 6;
                let panel = (x - left) % 12 == 0;
                if knob {
                    [220.0, 190.0, 80.0]
                } else if panel {
                    wood.map(|c| c * 0.85)
                } else {
                    wood
                }
            }
        } else if frame {
            [70.0, 45.0, 25.0]
        } else if y > height - 10 {
            wall.map(|c| c * 0.6)
        } else {
            wall
        };
        let shade = light * (1.0 + gradient * (x as f32 / width as f32 - 0.5));
        colour = colour.map(|c| c * shade + noise.range(-12.0, 12.0));
        Rgb(colour.map(|c| c.round().clamp(0.0, 255.0) as u8))
    })
}

/// Writes `count` scenes per state into `dir/open` and `dir/closed` as PNG files, seeds
/// starting at `first_seed`.
pub fn write_doors(dir: &std::path::Path, count: usize, first_seed: u64, variation: Variation) {
    for (state, open) in [("open", true), ("closed", false)] {
        let folder = dir.join(state);
        std::fs::create_dir_all(&folder).expect("create class folder");
        for i in 0..count {
            let seed = first_seed + i as u64;
            door(open, seed, variation)
                .save(folder.join(format!("{state}-{seed}.png")))
                .expect("write scene");
        }
    }
}
