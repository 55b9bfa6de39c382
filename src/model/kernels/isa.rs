//! Instruction-set selection: which micro-kernel paths this CPU can run, and which one runs.

use std::sync::OnceLock;

#[cfg(target_arch = "aarch64")]
use super::aarch64;
#[cfg(target_arch = "arm")]
use super::arm;
use super::micro_kernel::{MicroKernel, SCALAR};
#[cfg(target_arch = "x86_64")]
use super::x86;

/// The instruction paths of the integer GEMM. All give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust; the reference.
    Scalar,
    /// x86-64 AVX2: `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// x86-64 AVX-512 VNNI: `vpdpbusd`.
    Avx512Vnni,
    /// aarch64 NEON without dot product (Cortex-A72, Raspberry Pi 4): `smull`/`smlal`/`sadalp`.
    Neon,
    /// aarch64 NEON with the dot-product extension (Cortex-A76, Raspberry Pi 5): `sdot`.
    NeonDotprod,
    /// armv7 (32-bit) NEON: `vmull.s8`/`vmlal.s8`/`vpadal.s16`.
    Armv7Neon,
}

impl Isa {
    /// Every path, slowest first.
    pub(super) const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Armv7Neon,
        Isa::Neon,
        Isa::NeonDotprod,
        Isa::Avx2,
        Isa::Avx512Vnni,
    ];

    /// Environment variable that forces a path (for debugging and benchmarks).
    pub const ENV: &'static str = "EDGECLASS_ISA";

    /// The name used by [`Isa::ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
            Isa::Armv7Neon => "armv7-neon",
        }
    }

    /// Parses a name as printed by [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => x86_has(Isa::Avx2),
            Isa::Avx512Vnni => x86_has(Isa::Avx512Vnni),
            Isa::Neon => aarch64_has(Isa::Neon),
            Isa::NeonDotprod => aarch64_has(Isa::NeonDotprod),
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => arm::has_neon(),
            #[cfg(not(target_arch = "arm"))]
            Isa::Armv7Neon => false,
        }
    }

    /// The paths this CPU can run, slowest first.
    pub fn available() -> Vec<Isa> {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The path the convolutions use unless told otherwise: `EDGECLASS_ISA` if set to an
    /// available path, otherwise the fastest available one.
    pub fn detect() -> Isa {
        let best = *Self::available().last().unwrap_or(&Isa::Scalar);
        match std::env::var(Self::ENV) {
            Ok(name) => match Self::from_name(&name) {
                Some(isa) if isa.is_available() => isa,
                _ => {
                    log::warn!(
                        "{}={name:?} is not an available path ({}); using {}",
                        Self::ENV,
                        Self::available()
                            .iter()
                            .map(|isa| isa.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        best.name()
                    );
                    best
                }
            },
            Err(_) => best,
        }
    }

    /// [`Isa::detect`], evaluated once per process.
    pub(super) fn cached() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(Isa::detect)
    }

    /// The micro-kernel (and epilogue) of this path.
    pub(super) fn micro_kernel(self) -> MicroKernel {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::AVX512_VNNI,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::AVX2,
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => aarch64::NEON_DOTPROD,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::NEON,
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => arm::ARMV7_NEON,
            // Paths of other architectures never pass `is_available`.
            _ => SCALAR,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_has(isa: Isa) -> bool {
    match isa {
        Isa::Avx2 => is_x86_feature_detected!("avx2"),
        Isa::Avx512Vnni => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        }
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn x86_has(_: Isa) -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn aarch64_has(isa: Isa) -> bool {
    match isa {
        Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        Isa::NeonDotprod => {
            std::arch::is_aarch64_feature_detected!("neon")
                && std::arch::is_aarch64_feature_detected!("dotprod")
        }
        _ => false,
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn aarch64_has(_: Isa) -> bool {
    false
}
