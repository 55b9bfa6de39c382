//! 32-bit ARM (armv7) NEON micro-kernel.
//!
//! The `core::arch::arm` NEON intrinsics are unstable, and so is the `neon` target feature: on
//! stable Rust neither `#[target_feature(enable = "neon")]` nor `cfg(target_feature = "neon")`
//! exists, even when cross/env.sh builds with `-C target-feature=+neon`. So the kernel is one
//! `asm!` loop that turns NEON on for itself (`.fpu neon`) and names its registers as the 32
//! `d` registers (the `q` names are ignored as clobbers when the build lacks NEON, which would
//! leave callee-saved d8-d15 unsaved), and the path is chosen at run time from the kernel's
//! hardware capabilities. It therefore builds and is correct with or without `+neon`.

use super::epilogue::store_baseline;
use super::micro_kernel::{Acc, MicroKernel, Rows, MAX_NR, PANEL};
use std::arch::asm;

/// 2 rows x 16 channels with `vmull.s8`/`vmlal.s8`/`vpadal.s16`; see [`kernel_armv7_neon`].
pub(super) const ARMV7_NEON: MicroKernel = MicroKernel {
    rows: 2,
    max_panels: 1,
    run: kernel_armv7_neon,
    store: store_baseline,
};

/// Whether the CPU running us has NEON, from the kernel's hardware capabilities (the
/// `is_arm_feature_detected!` macro is not stable yet).
pub(super) fn has_neon() -> bool {
    /// `HWCAP_NEON` of Linux's arch/arm/include/uapi/asm/hwcap.h (not in the libc crate).
    const HWCAP_NEON: libc::c_ulong = 1 << 12;
    // SAFETY: getauxval only reads the process's auxiliary vector.
    unsafe { libc::getauxval(libc::AT_HWCAP) & HWCAP_NEON != 0 }
}

/// 2 rows x 16 channels, computed as two halves of 8 channels: 2 rows x 16 channels would need
/// 16 accumulator registers, all that armv7 has. Per pair of depth steps, `vmull.s8` +
/// `vmlal.s8` multiply 2 channels x 4 bytes by the row's 4 activation bytes (duplicated) and sum
/// the two steps in i16 (at most 2 * 127 * 127, no overflow); `vpadal.s16` widens into i32
/// accumulators that hold two partial sums for each of two channels, merged by `vpadd` at the
/// end. Activations (`0..=127`) are read as s8.
///
/// Registers: q0-q3 weights (two steps x 8 channels), d8-d11 activations (two rows x two
/// steps), q6-q7 products, q8-q11 row 0 and q12-q15 row 1 accumulators. The outer loop walks
/// the rows' segments ([`Rows`]); the weights continue from one segment to the next.
///
/// # Safety
/// See [`MicroKernel`]; needs NEON ([`has_neon`]).
unsafe fn kernel_armv7_neon(a: Rows, w: *const i8, _panels: usize, acc: &mut Acc) {
    const HALF: usize = PANEL / 2;
    // One weight step: 16 channels x 4 bytes.
    const STEP_BYTES: usize = 4 * PANEL;
    for half in 0..2 {
        // Channels `half * 8..` of row 0 (the kernel writes row 1 `row_bytes` further).
        let out = acc[half * HALF..].as_mut_ptr();
        // SAFETY: this half's channels of each weight step are inside the caller's panel.
        let w = unsafe { w.add(half * HALF * 4) };
        // SAFETY: reads only the rows and the panel the caller guarantees (see `MicroKernel`),
        // writes 8 i32 of each of rows 0 and 1 of `acc` from `out`, declares every register it
        // changes, and runs on the NEON the caller guarantees.
        unsafe {
            asm!(
                ".fpu neon",
                "vmov.i32 q8, #0",
                "vmov.i32 q9, #0",
                "vmov.i32 q10, #0",
                "vmov.i32 q11, #0",
                "vmov.i32 q12, #0",
                "vmov.i32 q13, #0",
                "vmov.i32 q14, #0",
                "vmov.i32 q15, #0",
                // Next segment: row 0's start, row 1's one table row further.
                "3:",
                "ldr {a1}, [{starts}, {row_stride}]",
                "ldr {a0}, [{starts}], #4",
                "mov {pairs}, {segment_pairs}",
                "2:",
                // Channels 0-7 of this half for steps j and j + 1 (each load then moves a step on).
                "vld1.8 {{d0-d3}}, [{w}], {step}",
                "vld1.8 {{d4-d7}}, [{w}], {step}",
                // Each row's 4 bytes of step j (d8, d10) and j + 1 (d9, d11), duplicated.
                "vld1.32 {{d8[]}}, [{a0}]!",
                "vld1.32 {{d9[]}}, [{a0}]!",
                "vld1.32 {{d10[]}}, [{a1}]!",
                "vld1.32 {{d11[]}}, [{a1}]!",
                // Row 0, channels 0-3.
                "vmull.s8 q6, d0, d8",
                "vmull.s8 q7, d1, d8",
                "vmlal.s8 q6, d4, d9",
                "vmlal.s8 q7, d5, d9",
                "vpadal.s16 q8, q6",
                "vpadal.s16 q9, q7",
                // Row 0, channels 4-7.
                "vmull.s8 q6, d2, d8",
                "vmull.s8 q7, d3, d8",
                "vmlal.s8 q6, d6, d9",
                "vmlal.s8 q7, d7, d9",
                "vpadal.s16 q10, q6",
                "vpadal.s16 q11, q7",
                // Row 1, channels 0-3.
                "vmull.s8 q6, d0, d10",
                "vmull.s8 q7, d1, d10",
                "vmlal.s8 q6, d4, d11",
                "vmlal.s8 q7, d5, d11",
                "vpadal.s16 q12, q6",
                "vpadal.s16 q13, q7",
                // Row 1, channels 4-7.
                "vmull.s8 q6, d2, d10",
                "vmull.s8 q7, d3, d10",
                "vmlal.s8 q6, d6, d11",
                "vmlal.s8 q7, d7, d11",
                "vpadal.s16 q14, q6",
                "vpadal.s16 q15, q7",
                "subs {pairs}, {pairs}, #1",
                "bne 2b",
                "subs {segments}, {segments}, #1",
                "bne 3b",
                // Merge the two partial sums of each channel: d16-d19 become row 0's 8 channels,
                // d24-d27 row 1's (each vpadd reads its sources before overwriting them).
                "vpadd.i32 d16, d16, d17",
                "vpadd.i32 d17, d18, d19",
                "vpadd.i32 d18, d20, d21",
                "vpadd.i32 d19, d22, d23",
                "vpadd.i32 d24, d24, d25",
                "vpadd.i32 d25, d26, d27",
                "vpadd.i32 d26, d28, d29",
                "vpadd.i32 d27, d30, d31",
                "vst1.32 {{d16-d19}}, [{out}]",
                "add {a1}, {out}, #{row_bytes}",
                "vst1.32 {{d24-d27}}, [{a1}]",
                w = inout(reg) w => _,
                step = in(reg) STEP_BYTES,
                starts = inout(reg) a.starts => _,
                row_stride = in(reg) a.segments * size_of::<*const u8>(),
                segments = inout(reg) a.segments => _,
                // Two depth steps (8 bytes of a row) per iteration; a segment is a positive multiple
                // of 16 bytes.
                segment_pairs = in(reg) a.segment_len / 8,
                a0 = out(reg) _,
                a1 = out(reg) _,
                pairs = out(reg) _,
                out = in(reg) out,
                row_bytes = const MAX_NR * size_of::<i32>(),
                // q0-q15 are d0-d31. Without `+neon` the build has no d16-d31 (these clobbers are
                // then dropped), so compiled code keeps nothing there.
                out("d0") _, out("d1") _, out("d2") _, out("d3") _,
                out("d4") _, out("d5") _, out("d6") _, out("d7") _,
                out("d8") _, out("d9") _, out("d10") _, out("d11") _,
                out("d12") _, out("d13") _, out("d14") _, out("d15") _,
                out("d16") _, out("d17") _, out("d18") _, out("d19") _,
                out("d20") _, out("d21") _, out("d22") _, out("d23") _,
                out("d24") _, out("d25") _, out("d26") _, out("d27") _,
                out("d28") _, out("d29") _, out("d30") _, out("d31") _,
                options(nostack),
            )
        };
    }
}
