#!/usr/bin/env python3
"""edgeclass against ONNX Runtime on the same ResNet-18: the latency ratios the README quotes.

    python3 -m pip install torch torchvision onnx onnxruntime numpy
    cargo build --release
    python3 tests/bench/compare_ort.py                 # 12 rounds at 1 and 2 threads
    python3 tests/bench/compare_ort.py --rounds 4 --dynamic

Builds its ONNX Runtime models once, into a cache directory (default
`~/.cache/edgeclass/ort-bench`, not part of the repository):

    resnet18-fp32.onnx       torchvision's resnet18 with seeded random weights (timing does not
                             depend on the values), exported to ONNX opset 17, input `input`
                             1x3x224x224, BatchNorm folded into the convolutions
    resnet18-int8-u8s8.onnx  the same network after ONNX Runtime static quantization: QDQ, u8
                             activations, s8 per-channel weights, calibrated on seeded random
                             inputs; the fastest ONNX Runtime CPU configuration for this network

Then, per round and thread count, it times `edgeclass bench --json` (q8_0 on the synthetic
calibrated network; with `--dynamic` also q8_0 without calibration) and ONNX Runtime int8 and
fp32, each in its own process and with the order alternating between rounds, because shared
machines drift by more than the differences measured. It prints each round and, per thread
count, the median over rounds of edgeclass / ONNX Runtime int8 (below 1: edgeclass is faster)
and of ONNX Runtime fp32 / edgeclass (the speed-up over fp32).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORT_MODELS = {"int8": "resnet18-int8-u8s8.onnx", "fp32": "resnet18-fp32.onnx"}
INPUT_SHAPE = (1, 3, 224, 224)
SEED = 0
CALIBRATION_INPUTS = 8


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeclass" / "ort-bench"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edgeclass", type=Path, default=REPO / "target" / "release" / "edgeclass",
                    help="the edgeclass binary to measure (default: target/release/edgeclass)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated (default: 1,2)")
    ap.add_argument("--rounds", type=int, default=12, help="alternating rounds (default: 12)")
    ap.add_argument("--runs", type=int, default=50,
                    help="timed runs per measurement, after warm-up (default: 50)")
    ap.add_argument("--dynamic", action="store_true",
                    help="also measure edgeclass q8_0 with per-frame (uncalibrated) activation scales")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                    help="where the ONNX models are built and kept (default: %(default)s)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached ONNX models")
    # Internal: time one ONNX Runtime model in this (child) process and print one JSON line.
    ap.add_argument("--ort-child", choices=sorted(ORT_MODELS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads takes comma-separated integers, not {args.threads!r}")
    if min(args.threads) < 1 or args.rounds < 1 or args.runs < 1:
        ap.error("--threads, --rounds and --runs must be at least 1")
    return args


def seeded_inputs(count, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.standard_normal(INPUT_SHAPE, dtype=np.float32) for _ in range(count)]


def build_models(cache_dir, rebuild):
    """Exports the fp32 model and quantizes it, unless both are cached already."""
    paths = {name: cache_dir / file for name, file in ORT_MODELS.items()}
    if not rebuild and all(p.is_file() for p in paths.values()):
        return paths
    import torch
    import torchvision
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"building the ONNX models in {cache_dir} ...", file=sys.stderr)
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    fp32_tmp = paths["fp32"].with_suffix(".onnx.tmp")
    # The TorchScript exporter folds BatchNorm into the convolutions, as the shared reference
    # models were made; the dynamo exporter would also need onnxscript.
    torch.onnx.export(model, (torch.zeros(INPUT_SHAPE),), str(fp32_tmp), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"])

    class SeededInputs(CalibrationDataReader):
        def __init__(self):
            self.inputs = iter(seeded_inputs(CALIBRATION_INPUTS, SEED + 1))

        def get_next(self):
            x = next(self.inputs, None)
            return None if x is None else {"input": x}

    prepared = cache_dir / "resnet18-fp32-prepared.onnx.tmp"
    int8_tmp = paths["int8"].with_suffix(".onnx.tmp")
    quant_pre_process(str(fp32_tmp), str(prepared))
    quantize_static(str(prepared), str(int8_tmp), SeededInputs(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    prepared.unlink()
    # Renamed last, so an interrupted build is never mistaken for a cached model.
    fp32_tmp.replace(paths["fp32"])
    int8_tmp.replace(paths["int8"])
    return paths


def ort_child(model_path, threads, runs):
    """Times one model in this process (the parent set OMP_NUM_THREADS before we started)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (x,) = seeded_inputs(1, SEED)
    for _ in range(10):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1e3)
    print(json.dumps({"system": f"onnxruntime {ort.__version__}",
                      "median_ms": statistics.median(times)}))


def run_json(cmd, env=None):
    """Runs a measuring child and returns its last stdout line as JSON; a failure ends the script."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr.strip()}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        sys.exit(f"{' '.join(map(str, cmd))} printed nothing")
    return json.loads(lines[-1])


def time_ort(args, model, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--ort-child", model, "--threads", str(threads),
           "--runs", str(args.runs), "--cache-dir", str(args.cache_dir)]
    return run_json(cmd, env)["median_ms"]


def time_edgeclass(args, threads, dynamic):
    cmd = [str(args.edgeclass), "bench", "--json", "--precisions", "q8_0",
           "--threads", str(threads), "--runs", str(args.runs)]
    if dynamic:
        cmd.append("--dynamic")
    return run_json(cmd)["median_ms"]


def summary(values, fmt="{:.2f}x"):
    """Median, range and rounds below 1, the way the README quotes them."""
    below = sum(v < 1 for v in values)
    return (f"{fmt.format(statistics.median(values))} ({len(values)} rounds: "
            f"{min(values):.2f}-{max(values):.2f}, {below} below 1)")


def main():
    args = parse_args()
    if args.ort_child:
        ort_child(args.cache_dir / ORT_MODELS[args.ort_child], args.threads[0], args.runs)
        return
    if not args.edgeclass.is_file():
        sys.exit(f"no edgeclass binary at {args.edgeclass}: run `cargo build --release` "
                 "or pass --edgeclass PATH")
    build_models(args.cache_dir, args.rebuild)
    edgeclass_kinds = ["calibrated"] + (["dynamic"] if args.dynamic else [])
    ratios = {(t, k): [] for t in args.threads for k in edgeclass_kinds + ["fp32 speed-up"]}
    print(f"edgeclass {args.edgeclass} vs ONNX Runtime (models in {args.cache_dir}), "
          f"{args.runs} runs per measurement, medians in ms")
    for round_index in range(args.rounds):
        for threads in args.threads:
            measurements = [("ort int8", lambda: time_ort(args, "int8", threads)),
                            ("ort fp32", lambda: time_ort(args, "fp32", threads))]
            measurements += [(k, lambda d=(k == "dynamic"): time_edgeclass(args, threads, d))
                             for k in edgeclass_kinds]
            names = [name for name, _ in measurements]
            # Alternate who goes first, so a drift during the round favours neither side.
            if round_index % 2:
                measurements.reverse()
            ms = {name: measure() for name, measure in measurements}
            for kind in edgeclass_kinds:
                ratios[(threads, kind)].append(ms[kind] / ms["ort int8"])
            ratios[(threads, "fp32 speed-up")].append(ms["ort fp32"] / ms["calibrated"])
            print(f"round {round_index + 1:2} x{threads}: "
                  + ", ".join(f"{name} {ms[name]:.2f}" for name in names)
                  + f"; calibrated / ort int8 {ratios[(threads, 'calibrated')][-1]:.2f}",
                  flush=True)
    print()
    for threads in args.threads:
        print(f"{threads} thread{'s' if threads > 1 else ''}:")
        for kind in edgeclass_kinds:
            print(f"  edgeclass q8_0 {kind} / ONNX Runtime int8: "
                  + summary(ratios[(threads, kind)]))
        print("  ONNX Runtime fp32 / edgeclass q8_0 calibrated (speed-up): "
              f"{statistics.median(ratios[(threads, 'fp32 speed-up')]):.2f}x")


if __name__ == "__main__":
    main()
