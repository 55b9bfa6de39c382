use super::epilogue::{dequantize_row, requantize_fixed, Finish, Shared};
use super::quantization::range_with_zero;
use super::*;

/// Deterministic pseudo-random numbers (an LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    fn weights(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| (self.next() % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect()
    }

    fn floats(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() % 10_000) as f32 / 10_000.0)
            .collect()
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// A convolution together with the PyTorch-order weights it was built from.
struct Case {
    conv: QConv2d,
    weights: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

impl Case {
    fn new(g: ConvGeometry, rng: &mut Lcg) -> Self {
        let weights = rng.weights(g.out_channels * g.patch_len());
        let scales = rng.floats(g.out_channels, 0.001, 0.02);
        let bias = rng.floats(g.out_channels, -0.5, 0.5);
        let conv = QConv2d::new(&weights, &scales, &bias, g);
        Case {
            conv,
            weights,
            scales,
            bias,
        }
    }

    fn weight(&self, c: usize, i: usize, ky: usize, kx: usize) -> i8 {
        let g = self.conv.geometry;
        self.weights[((c * g.in_channels + i) * g.kernel + ky) * g.kernel + kx]
    }

    /// The input tap `(c, ky, kx)` of output pixel `(y, x)`, if it is inside the image.
    fn tap(&self, h: usize, w: usize, y: usize, x: usize, ky: usize, kx: usize) -> Option<usize> {
        let g = self.conv.geometry;
        let iy = (y * g.stride + ky) as isize - g.padding as isize;
        let ix = (x * g.stride + kx) as isize - g.padding as isize;
        (iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize)
            .then(|| iy as usize * w + ix as usize)
    }

    /// Naive integer convolution of input `levels`: `[pixel][channel]` accumulators, padding
    /// taps reading `zero_point`, and each channel's weight sum.
    fn accumulators(
        &self,
        levels: &[u8],
        h: usize,
        w: usize,
        zero_point: u8,
    ) -> (Vec<i32>, Vec<i32>) {
        let g = self.conv.geometry;
        let (oh, ow) = (g.output_size(h), g.output_size(w));
        let n = g.out_channels;
        let mut acc = vec![0i32; oh * ow * n];
        for y in 0..oh {
            for x in 0..ow {
                for c in 0..n {
                    let acc = &mut acc[(y * ow + x) * n + c];
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            for i in 0..g.in_channels {
                                let a = match self.tap(h, w, y, x, ky, kx) {
                                    Some(p) => levels[p * g.in_channels + i],
                                    None => zero_point,
                                };
                                *acc += a as i32 * self.weight(c, i, ky, kx) as i32;
                            }
                        }
                    }
                }
            }
        }
        let sums = (0..n)
            .map(|c| {
                (0..g.in_channels)
                    .flat_map(|i| (0..g.kernel * g.kernel).map(move |t| (i, t)))
                    .map(|(i, t)| self.weight(c, i, t / g.kernel, t % g.kernel) as i32)
                    .sum()
            })
            .collect();
        (acc, sums)
    }

    /// The dynamic path's result from naive integer arithmetic and the shared epilogue: what
    /// every path must produce bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn integer_reference(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        q: ActQuant,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f32> {
        let n = self.conv.geometry.out_channels;
        let levels: Vec<u8> = input.iter().map(|&x| q.quantize(x)).collect();
        let (acc, sums) = self.accumulators(&levels, h, w, q.zero_point);
        let scales: Vec<f32> = self.scales.iter().map(|&s| q.scale * s).collect();
        let mut out = vec![0f32; acc.len()];
        for (at, (acc, out)) in (0..).step_by(n).zip(acc.chunks(n).zip(out.chunks_mut(n))) {
            dequantize_row(
                acc,
                q.zero_point,
                &sums,
                &scales,
                &self.bias,
                residual.map(|r| &r[at..at + n]),
                relu,
                out,
            );
        }
        out
    }

    /// f32 reference convolution on dequantized values.
    fn dequantized_reference(&self, input: &[f32], h: usize, w: usize, q: ActQuant) -> Vec<f32> {
        let g = self.conv.geometry;
        let (oh, ow) = (g.output_size(h), g.output_size(w));
        let mut out = vec![0f32; oh * ow * g.out_channels];
        for y in 0..oh {
            for x in 0..ow {
                for c in 0..g.out_channels {
                    let mut acc = 0f64;
                    for ky in 0..g.kernel {
                        for kx in 0..g.kernel {
                            let Some(p) = self.tap(h, w, y, x, ky, kx) else {
                                continue;
                            };
                            for i in 0..g.in_channels {
                                let x = input[p * g.in_channels + i];
                                let deq =
                                    (q.quantize(x) as f64 - q.zero_point as f64) * q.scale as f64;
                                acc +=
                                    self.weight(c, i, ky, kx) as f64 * self.scales[c] as f64 * deq;
                            }
                        }
                    }
                    out[(y * ow + x) * g.out_channels + c] = acc as f32 + self.bias[c];
                }
            }
        }
        out
    }
}

const fn geometry(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> ConvGeometry {
    ConvGeometry {
        in_channels: cin,
        out_channels: cout,
        kernel,
        stride,
        padding,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn matches_dequantized_reference_with_padding_and_signed_input() {
    let case = Case::new(geometry(5, 7, 3, 2, 1), &mut Lcg(1));
    let (h, w) = (9, 6);
    let input: Vec<f32> = (0..h * w * 5)
        .map(|i| ((i * 7919) % 200) as f32 / 50.0 - 2.0)
        .collect();
    let mut out = Vec::new();
    let input = Nhwc {
        values: &input[..],
        height: h,
        width: w,
    };
    let dims = case.conv.forward(
        &pool(2),
        input,
        &mut out,
        &mut Scratch::default(),
        ForwardOptions::default(),
    );
    assert_eq!(dims, (5, 3));
    let expect = case.dequantized_reference(input.values, h, w, ActQuant::for_tensor(input.values));
    for (a, b) in out.iter().zip(&expect) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn every_path_is_bit_identical_to_the_integer_reference() {
    let pool = pool(2);
    let mut rng = Lcg(7);
    for (g, h, w, signed, fused) in SHAPES {
        let case = Case::new(g, &mut rng);
        let lo = if signed { -2.0 } else { 0.0 };
        let input = rng.floats(h * w * g.in_channels, lo, 3.0);
        let (oh, ow) = (g.output_size(h), g.output_size(w));
        let residual = fused.then(|| rng.floats(oh * ow * g.out_channels, -1.0, 1.0));
        for quant in [None, Some(ActQuant::for_range(lo, 2.5))] {
            let q = quant.unwrap_or_else(|| ActQuant::for_tensor(&input));
            let expect = case.integer_reference(&input, h, w, q, residual.as_deref(), fused);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; 3];
                let input = Nhwc {
                    values: &input[..],
                    height: h,
                    width: w,
                };
                let options = ForwardOptions {
                    input_quant: quant,
                    residual: residual.as_deref(),
                    relu: fused,
                    isa: Some(isa),
                };
                let dims =
                    case.conv
                        .forward(&pool, input, &mut out, &mut Scratch::default(), options);
                assert_eq!(dims, (oh, ow));
                assert!(
                    bits(&out) == bits(&expect),
                    "{} differs for {g:?} on {h}x{w}",
                    isa.name()
                );
            }
        }
    }
}

/// (geometry, height, width, signed input, residual + relu): shapes that reach every corner of
/// the tiling, packing and padding code.
const SHAPES: [(ConvGeometry, usize, usize, bool, bool); 9] = [
    (geometry(3, 64, 7, 2, 3), 23, 21, true, false), // conv1: K = 147
    (geometry(5, 7, 3, 2, 1), 9, 6, true, false),
    (geometry(64, 64, 3, 1, 1), 10, 9, false, true), // M = 90: partial tile
    (geometry(32, 40, 3, 1, 1), 13, 11, false, true), // 40 channels: partial panel
    (geometry(64, 128, 1, 2, 0), 7, 7, false, false), // downsample
    (geometry(24, 1000, 1, 1, 0), 1, 1, false, false), // fc
    (geometry(20, 5, 3, 1, 0), 5, 4, true, true),
    (geometry(16, 48, 3, 2, 1), 3, 3, false, true), // padding on every side
    (geometry(32, 24, 3, 2, 1), 11, 9, false, false), // stride 2 inside the image
];

#[test]
fn static_path_is_bit_identical_on_every_path_and_matches_float_arithmetic() {
    let pool = pool(2);
    let mut rng = Lcg(17);
    for (g, h, w, signed, fused) in SHAPES {
        let case = Case::new(g, &mut rng);
        let in_quant = ActQuant::for_range(if signed { -2.0 } else { 0.0 }, 2.5);
        let levels: Vec<u8> = (0..h * w * g.in_channels)
            .map(|_| (rng.next() % 128) as u8)
            .collect();
        let input = Nhwc {
            values: &levels[..],
            height: h,
            width: w,
        };
        let (oh, ow) = (g.output_size(h), g.output_size(w));
        let n = g.out_channels;
        let res_quant = ActQuant::for_range(-1.0, 1.5);
        let residual: Option<Vec<u8>> =
            fused.then(|| (0..oh * ow * n).map(|_| (rng.next() % 128) as u8).collect());
        let out_quant = ActQuant::for_range(if fused { 0.0 } else { -4.0 }, 4.0);
        let requant = case.conv.requantization(in_quant, out_quant);

        // Bit identity: naive accumulators through the shared requantization, with the
        // shortcut as levels and as real values, and the real outputs too.
        let (acc, _) = case.accumulators(&levels, h, w, in_quant.zero_point);
        let floor = if fused {
            out_quant.zero_point as f32
        } else {
            0.0
        };
        let residual_real: Option<Vec<f32>> = residual
            .as_deref()
            .map(|r| r.iter().map(|&l| res_quant.dequantize(l)).collect());
        let shortcuts = [
            residual.as_deref().map(|r| Residual::Levels(r, res_quant)),
            residual_real.as_deref().map(Residual::Float),
        ];
        for shortcut in shortcuts {
            let mut expect = vec![0u8; acc.len()];
            let mut expect_real = vec![0f32; acc.len()];
            let finish = Finish {
                residual: shortcut,
                output: out_quant,
                floor,
                out: Shared(expect.as_mut_ptr()),
                real_out: Some(Shared(expect_real.as_mut_ptr())),
            };
            // One output at a time with the portable arithmetic.
            for i in 0..acc.len() {
                let c = i % n;
                let (scales, offsets) = (&requant.scales[c..], &requant.offsets[c..]);
                // SAFETY: output `i` is inside both buffers, which nothing else accesses.
                unsafe { requantize_fixed::<1>(&acc[i..], scales, offsets, &finish, i) };
            }
            for isa in Isa::available() {
                let (mut out, mut real) = (vec![99; acc.len()], vec![f32::NAN; acc.len()]);
                let options = ForwardQuantizedOptions {
                    residual: shortcut,
                    relu: fused,
                    real_out: Some(&mut real),
                    isa: Some(isa),
                };
                let dims = case
                    .conv
                    .forward_quantized(&pool, input, &requant, &mut out, options);
                assert_eq!(dims, (oh, ow));
                assert!(out == expect, "{} differs for {g:?} on {h}x{w}", isa.name());
                assert!(
                    bits(&real) == bits(&expect_real),
                    "{} real outputs",
                    isa.name()
                );
            }
            // Levels are the real outputs rounded.
            for (&level, &real) in expect.iter().zip(&expect_real) {
                let exact = real / out_quant.scale + out_quant.zero_point as f32;
                assert!(exact >= 127.5 || (exact - level as f32).abs() <= 0.5 + 1e-3);
            }
        }
        let expect = {
            let mut out = vec![0; oh * ow * n];
            let options = ForwardQuantizedOptions {
                residual: shortcuts[0],
                relu: fused,
                ..Default::default()
            };
            case.conv
                .forward_quantized(&pool, input, &requant, &mut out, options);
            out
        };

        // The folded constants mean the same as the float arithmetic they replace: each level
        // is the float result quantized, give or take one level of rounding.
        let real = |q: ActQuant, l: &[u8]| l.iter().map(|&v| q.dequantize(v)).collect::<Vec<_>>();
        let float = case.dequantized_reference(&real(in_quant, &levels), h, w, in_quant);
        let res_real = residual.as_deref().map(|r| real(res_quant, r));
        for (i, (&got, &f)) in expect.iter().zip(&float).enumerate() {
            let mut v = f + res_real.as_ref().map_or(0.0, |r| r[i]);
            if fused {
                v = v.max(0.0);
            }
            let want = out_quant.quantize(v) as i32;
            assert!(
                (got as i32 - want).abs() <= 1,
                "{g:?} element {i}: {got} vs {want}"
            );
        }
        let exact = expect
            .iter()
            .zip(&float)
            .enumerate()
            .filter(|(i, (&got, &f))| {
                let v = f + res_real.as_ref().map_or(0.0, |r| r[*i]);
                got == out_quant.quantize(if fused { v.max(0.0) } else { v })
            })
            .count();
        assert!(
            exact * 100 >= expect.len() * 99,
            "{g:?}: {exact} of {} exact",
            expect.len()
        );
    }
}

#[test]
fn one_and_two_threads_and_reused_scratch_give_identical_outputs() {
    let mut rng = Lcg(3);
    let first = Case::new(geometry(64, 128, 3, 2, 1), &mut rng);
    let second = Case::new(geometry(128, 40, 3, 1, 1), &mut rng);
    let input = rng.floats(29 * 30 * 64, -1.0, 2.0);
    let run = |threads: usize, scratch: &mut Scratch| {
        let pool = pool(threads);
        let (mut mid, mut out) = (Vec::new(), Vec::new());
        let input = Nhwc {
            values: &input[..],
            height: 29,
            width: 30,
        };
        let relu = ForwardOptions {
            relu: true,
            ..Default::default()
        };
        let (height, width) = first.conv.forward(&pool, input, &mut mid, scratch, relu);
        let mid = Nhwc {
            values: &mid[..],
            height,
            width,
        };
        let plain = ForwardOptions::default();
        second.conv.forward(&pool, mid, &mut out, scratch, plain);
        out
    };
    let mut scratch = Scratch::default();
    let single = run(1, &mut scratch);
    let double = run(2, &mut scratch);
    let fresh = run(2, &mut Scratch::default());
    assert_eq!(bits(&single), bits(&double));
    assert_eq!(bits(&double), bits(&fresh));
}

#[test]
fn isa_names_round_trip_and_scalar_is_always_available() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
    }
    assert_eq!(Isa::from_name("sse9"), None);
    let available = Isa::available();
    // Shown with --nocapture: which paths the other tests exercised on this CPU.
    println!("available paths: {available:?}");
    assert_eq!(available.first(), Some(&Isa::Scalar));
    assert!(available.contains(&Isa::detect()));
}

#[test]
fn max_pool_takes_the_largest_tap_and_ignores_padding() {
    let (h, w, c) = (5, 4, 3);
    let input = Lcg(11).floats(h * w * c, -5.0, -1.0); // all negative: padding must not win
    let mut out = Vec::new();
    let (oh, ow) = pool(2).install(|| max_pool_3x3_s2(&input, h, w, c, &mut out));
    assert_eq!((oh, ow), (3, 2));
    for y in 0..oh {
        for x in 0..ow {
            for ch in 0..c {
                let mut best = f32::NEG_INFINITY;
                for iy in (2 * y) as isize - 1..=(2 * y) as isize + 1 {
                    for ix in (2 * x) as isize - 1..=(2 * x) as isize + 1 {
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            best = best.max(input[(iy as usize * w + ix as usize) * c + ch]);
                        }
                    }
                }
                assert_eq!(out[(y * ow + x) * c + ch], best);
            }
        }
    }
    // On levels: a monotonic mapping, so pooling levels = quantizing the pooled values.
    let q = ActQuant::for_range(-5.0, 0.0);
    let levels: Vec<u8> = input.iter().map(|&v| q.quantize(v)).collect();
    let mut pooled = Vec::new();
    pool(1).install(|| max_pool_3x3_s2(&levels, h, w, c, &mut pooled));
    let expect: Vec<u8> = out.iter().map(|&v| q.quantize(v)).collect();
    assert_eq!(pooled, expect);
}

#[test]
fn global_avg_pool_averages_each_channel() {
    let input = [1.0, 10.0, 3.0, 20.0, 5.0, 30.0, 7.0, 40.0];
    let mut out = vec![9.0; 7];
    global_avg_pool(&input, 2, 2, 2, &mut out);
    assert_eq!(out, [4.0, 25.0]);
}

/// Times the ResNet-18 layer shapes at 1 and 2 threads on the detected path
/// (`EDGECLASS_ISA` to force one). Prints medians; asserts nothing about time.
/// `cargo test --release --lib model::kernels::tests::resnet18_timings -- --ignored --nocapture`
#[test]
#[ignore = "timing harness, run by hand"]
fn resnet18_timings() {
    use std::time::Instant;
    const REPEATS: usize = 21;
    // (name, geometry, input size, occurrences in the network)
    let layers = [
        ("conv1 7x7/2 3->64", geometry(3, 64, 7, 2, 3), 224, 1),
        ("layer1 3x3 64", geometry(64, 64, 3, 1, 1), 56, 4),
        ("layer2 3x3/2 64->128", geometry(64, 128, 3, 2, 1), 56, 1),
        ("layer2 3x3 128", geometry(128, 128, 3, 1, 1), 28, 3),
        ("layer2 down 1x1/2", geometry(64, 128, 1, 2, 0), 56, 1),
        ("layer3 3x3/2 128->256", geometry(128, 256, 3, 2, 1), 28, 1),
        ("layer3 3x3 256", geometry(256, 256, 3, 1, 1), 14, 3),
        ("layer3 down 1x1/2", geometry(128, 256, 1, 2, 0), 28, 1),
        ("layer4 3x3/2 256->512", geometry(256, 512, 3, 2, 1), 14, 1),
        ("layer4 3x3 512", geometry(512, 512, 3, 1, 1), 7, 3),
        ("layer4 down 1x1/2", geometry(256, 512, 1, 2, 0), 14, 1),
        ("fc 512->1000", geometry(512, 1000, 1, 1, 0), 1, 1),
    ];
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let pools = [pool(1), pool(2)];
    let mut rng = Lcg(5);
    let mut totals = [0f64; 2];
    println!("path {}", Isa::detect().name());
    println!(
        "{:<24} {:>3} {:>9} {:>9} {:>7}",
        "layer", "n", "1T ms", "2T ms", "1T/2T"
    );
    let mut time_layer = |name: &str, count: usize, run: &mut dyn FnMut(&rayon::ThreadPool)| {
        let mut ms = [0f64; 2];
        for (t, pool) in pools.iter().enumerate() {
            run(pool);
            let times = (0..REPEATS)
                .map(|_| {
                    let start = Instant::now();
                    run(pool);
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            ms[t] = median(times) * count as f64;
            totals[t] += ms[t];
        }
        println!(
            "{name:<24} {count:>3} {:>9.3} {:>9.3} {:>7.2}",
            ms[0],
            ms[1],
            ms[0] / ms[1]
        );
    };
    for (name, g, size, count) in layers {
        let case = Case::new(g, &mut rng);
        let input = rng.floats(size * size * g.in_channels, -1.0, 2.0);
        let (mut out, mut scratch) = (Vec::new(), Scratch::default());
        time_layer(name, count, &mut |pool| {
            let input = Nhwc {
                values: &input[..],
                height: size,
                width: size,
            };
            let relu = ForwardOptions {
                relu: true,
                ..Default::default()
            };
            case.conv.forward(pool, input, &mut out, &mut scratch, relu);
        });
    }
    let input = rng.floats(112 * 112 * 64, 0.0, 2.0);
    let mut out = Vec::new();
    time_layer("maxpool 3x3/2 64", 1, &mut |pool| {
        pool.install(|| max_pool_3x3_s2(&input, 112, 112, 64, &mut out));
    });
    let input = rng.floats(7 * 7 * 512, 0.0, 2.0);
    time_layer("global avg pool 512", 1, &mut |_| {
        global_avg_pool(&input, 7, 7, 512, &mut out)
    });
    println!(
        "{:<24} {:>3} {:>9.3} {:>9.3} {:>7.2}",
        "total",
        "",
        totals[0],
        totals[1],
        totals[0] / totals[1]
    );
}

#[test]
fn quantize_clamps_out_of_range_and_non_finite_values() {
    let q = ActQuant::for_range(-1.0, 1.54);
    assert_eq!(q.zero_point, 50);
    assert_eq!(q.quantize(0.0), 50);
    assert_eq!(q.quantize(-1.0), 0);
    assert_eq!(q.quantize(1.54), 127);
    assert_eq!(q.quantize(-100.0), 0);
    assert_eq!(q.quantize(100.0), 127);
    assert_eq!(q.quantize(f32::NAN), 0);
    assert_eq!(q.quantize(f32::INFINITY), 127);
    assert_eq!(q.quantize(f32::NEG_INFINITY), 0);
    // Half a step rounds up.
    assert_eq!(q.quantize(0.5 * q.scale), 51);
}

#[test]
fn tensor_range_includes_zero_and_ignores_nan() {
    let mut values = Lcg(9).floats(21, 0.5, 2.0);
    values[3] = -1.25;
    values[19] = 4.5; // in the remainder after the 8-lane chunks
    values[7] = f32::NAN;
    assert_eq!(range_with_zero(&values), (-1.25, 4.5));
    assert_eq!(range_with_zero(&[1.0, 2.0]), (0.0, 2.0));
    assert_eq!(
        ActQuant::for_tensor(&values),
        ActQuant::for_range(-1.25, 4.5)
    );
}
