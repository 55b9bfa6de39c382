#!/usr/bin/env python3
"""How faithful edgeclass's int8 paths are to f32, next to ONNX Runtime's static int8.

    python3 -m pip install onnx onnxruntime numpy pillow sympy
    cargo build --release --bin edgeclass --example logits
    python3 tests/bench/int8_fidelity.py [--profile release] [--seed 0] [--keep DIR]

What it builds (seeded, in a scratch directory):
  - 64 crops of the real photos in tests/fixtures/images (random square windows of 35-100 % of
    the shorter side, half of them mirrored), resized to 256x256 PNG. Preprocessed as
    torchvision's eval transform does (Resize(256) is then the identity, CenterCrop(224),
    ToTensor, Normalize), which edgeclass reproduces bit for bit on PNG input.
  - A full-size ResNet-18 (torchvision's shapes and initialisation: Kaiming-normal convolutions)
    whose BatchNorm statistics are measured on those crops (then perturbed, as in
    tests/fixtures/make_reference.py), so every layer sees activations at a trained net's
    scale. The head is sharpened as a trained net's is: 64 classes get a prototype (the
    centred feature vector of one crop), scaled so that the median top-1 margin is
    MARGIN_STD standard deviations of the logits; the other 936 rows stay random.
    Written as torchvision-named safetensors, which `edgeclass quantize` takes.
  - The same network as ONNX (BatchNorm folded), run by ONNX Runtime in f32: the reference.
    numpy is used instead of PyTorch (the script needs no torch); the f32 paths agree to 1e-5.
  - ONNX Runtime static int8: QDQ, u8 activations, s8 per-channel weights, MinMax ranges
    calibrated on the 64 crops (the configuration the README's speed comparison uses).
  - edgeclass: `quantize --calibrate` on the same 64 crops (the static path) and the
    uncalibrated file (the dynamic path), logits by `examples/logits.rs`.

It prints, per path, the top-1 agreement with f32 and the logits cosine (mean and minimum).
`--edgeclass NAME=PATH` (repeatable) calibrates with other builds, to compare calibration
methods side by side; `--holdout` calibrates on the even crops and compares on the odd ones.

Measured 2026-12-02 (debug-profile binaries; --margin 0.3, the default seed):

    path                                       all 64 crops         held-out (32 of 64)
    ONNX Runtime static int8 (MinMax)          58/64  cos 0.99894   30/32  cos 0.99902
    edgeclass q8_0 dynamic                     64/64  cos 0.99948   32/32  cos 0.99954
    edgeclass q8_0 calibrated, 0.1 % percentile  59/64  cos 0.99628   28/32  cos 0.99629
    (branch int8-fidelity-mse, least-error ranges  59/64  cos 0.99936   29/32  cos 0.99940)

Measured 2026-12-03 (same settings; onnxruntime 1.32.0, onnx 1.23.2, numpy 2.5.5), after
least-error ranges with clipping weighted 1/2, floored by the 0.1 % percentile, on each image
and its mirror image:

    edgeclass q8_0 calibrated                  60/64  cos 0.99930   30/32  cos 0.99924
    (ONNX Runtime and the dynamic path: as above, unchanged)
"""

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "fixtures" / "images"
CROPS = 64
CROP_SIDE = 256
INPUT = 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BN_EPS = 1e-5
WIDTHS = (64, 128, 256, 512)
NUM_CLASSES = 1000
# Median margin between the f32 top-1 and top-2 logits, in standard deviations of the logits.
MARGIN_STD = 0.3


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="release", help="cargo profile of the binaries (target/PROFILE)")
    ap.add_argument("--edgeclass", action="append", metavar="NAME=PATH", default=[],
                    help="calibrate with this edgeclass binary instead of target/PROFILE's, as row "
                         "NAME; repeat to compare builds (before/after)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the crops and the network")
    ap.add_argument("--margin", type=float, default=MARGIN_STD,
                    help="median top-1 margin in logit standard deviations (default: %(default)s)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    ap.add_argument("--holdout", action="store_true",
                    help="calibrate (ONNX Runtime and edgeclass) on the even crops, compare on the odd ones")
    ap.add_argument("--json", action="store_true", help="also print the table as one JSON line")
    return ap.parse_args()


# ----------------------------------------------------------------------------- images

def make_crops(rng, out_dir):
    """CROPS seeded square crops of the fixture photos, CROP_SIDE x CROP_SIDE PNG files."""
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    paths = []
    for i in range(CROPS):
        photo = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.35, 1.0))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize(
            (CROP_SIDE, CROP_SIDE), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = out_dir / f"crop{i:02}.png"
        crop.save(path)
        paths.append(path)
    return paths


def preprocess(path):
    """torchvision's Resize(256) (identity here), CenterCrop(224), ToTensor, Normalize: 3x224x224."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32)
    assert rgb.shape[:2] == (CROP_SIDE, CROP_SIDE)
    o = (CROP_SIDE - INPUT) // 2
    rgb = rgb[o:o + INPUT, o:o + INPUT] / 255.0
    return ((rgb - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- network

def conv_names():
    """(name, in, out, kernel, stride, padding) of every convolution, torchvision order."""
    convs = [("conv1", 3, 64, 7, 2, 3)]
    cin = 64
    for stage, width in enumerate(WIDTHS, start=1):
        for b in range(2):
            stride = 2 if (stage > 1 and b == 0) else 1
            p = f"layer{stage}.{b}"
            convs.append((f"{p}.conv1", cin, width, 3, stride, 1))
            if stride != 1 or cin != width:
                convs.append((f"{p}.downsample.0", cin, width, 1, stride, 0))
            convs.append((f"{p}.conv2", width, width, 3, 1, 1))
            cin = width
    return convs


def bn_name(conv):
    """The BatchNorm after `conv` in torchvision's state dict."""
    if conv == "conv1":
        return "bn1"
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    return conv.replace("conv", "bn")


def conv2d(x, w, stride, pad):
    """NCHW convolution without bias, by im2col + matmul (float64 accumulation is not needed)."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    y = cols @ w.reshape(o, -1).T
    return y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def max_pool(x):
    """3x3, stride 2, padding 1 on non-negative input (zero padding = -inf padding)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    return win.max(axis=(4, 5))


class Net:
    """ResNet-18 in numpy, BatchNorm folded into (weight, bias) per convolution."""

    def __init__(self, rng):
        self.rng = rng
        self.convs = conv_names()
        self.state = {}
        for name, cin, cout, k, _, _ in self.convs:
            # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu")
            std = np.sqrt(2.0 / (cout * k * k))
            self.state[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)

    def folded(self, name):
        bn = bn_name(name)
        s = self.state
        scale = s[f"{bn}.weight"] / np.sqrt(s[f"{bn}.running_var"] + BN_EPS)
        w = s[f"{name}.weight"] * scale[:, None, None, None]
        b = s[f"{bn}.bias"] - s[f"{bn}.running_mean"] * scale
        return w.astype(np.float32), b.astype(np.float32)

    def conv(self, x, name, calibrate):
        spec = next(c for c in self.convs if c[0] == name)
        if calibrate:
            raw = conv2d(x, self.state[f"{name}.weight"], spec[4], spec[5])
            self.calibrate_bn(name, raw)
        w, b = self.folded(name)
        return conv2d(x, w, spec[4], spec[5]) + b[None, :, None, None]

    def calibrate_bn(self, name, raw):
        """Batch statistics on the crops, perturbed as in tests/fixtures/make_reference.py."""
        rng, c, bn = self.rng, raw.shape[1], bn_name(name)
        mean = raw.mean(axis=(0, 2, 3))
        var = raw.var(axis=(0, 2, 3))
        s = self.state
        s[f"{bn}.running_mean"] = (mean * (1 + 0.2 * rng.standard_normal(c)) + 0.05 * rng.standard_normal(c)).astype(np.float32)
        s[f"{bn}.running_var"] = (var * rng.uniform(0.5, 2.0, c)).astype(np.float32)
        s[f"{bn}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        s[f"{bn}.bias"] = (0.2 * rng.standard_normal(c)).astype(np.float32)
        s[f"{bn}.num_batches_tracked"] = np.array(1, np.int64)

    def features(self, x, calibrate=False):
        relu = lambda v: np.maximum(v, 0)
        x = max_pool(relu(self.conv(x, "conv1", calibrate)))
        for stage in range(1, 5):
            for b in range(2):
                p = f"layer{stage}.{b}"
                y = relu(self.conv(x, f"{p}.conv1", calibrate))
                ds = f"{p}.downsample.0"
                identity = self.conv(x, ds, calibrate) if f"{ds}.weight" in self.state else x
                x = relu(self.conv(y, f"{p}.conv2", calibrate) + identity)
        return x.mean(axis=(2, 3))

    def sharpen_head(self, feats, margin):
        """Random fc (torchvision's init) plus one prototype row per crop, scaled to `margin`."""
        rng = self.rng
        bound = 1.0 / np.sqrt(feats.shape[1])
        w = rng.uniform(-bound, bound, (NUM_CLASSES, feats.shape[1])).astype(np.float32)
        b = rng.uniform(-bound, bound, NUM_CLASSES).astype(np.float32)
        centred = feats - feats.mean(axis=0)
        protos = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        classes = rng.choice(NUM_CLASSES, len(feats), replace=False)

        mean = feats.mean(axis=0)

        def margins(alpha):
            # A prototype scores a crop by its centred features: alpha * <f - mean, proto>.
            wa, ba = w.copy(), b.copy()
            wa[classes] += alpha * protos
            ba[classes] -= alpha * protos @ mean
            logits = feats @ wa.T + ba
            top2 = np.sort(logits, axis=1)[:, -2:]
            return np.median((top2[:, 1] - top2[:, 0]) / logits.std(axis=1)), (wa, ba)

        lo, hi = 0.0, 1.0
        while margins(hi)[0] < margin:
            hi *= 2
            assert hi < 1e6, "the prototypes cannot reach the margin"
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if margins(mid)[0] < margin else (lo, mid)
        wa, ba = margins(hi)[1]
        self.state["fc.weight"], self.state["fc.bias"] = wa.astype(np.float32), ba.astype(np.float32)


def write_safetensors(path, tensors):
    """Minimal safetensors writer (F32, I64), as in tests/fixtures/make_reference.py."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        dtype, np_type = ("I64", "<i8") if t.dtype == np.int64 else ("F32", "<f4")
        raw = np.ascontiguousarray(t).astype(np_type).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def to_onnx(net, path):
    """The network as ONNX opset 17, BatchNorm folded: input `input` Nx3x224x224, output `logits`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def conv(x, name, out):
        w, b = net.folded(name)
        spec = next(c for c in net.convs if c[0] == name)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], kernel_shape=[spec[3]] * 2,
                                      strides=[spec[4]] * 2, pads=[spec[5]] * 4))
        return out

    def relu(x, out):
        nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    x = relu(conv("input", "conv1", "conv1.out"), "conv1.relu")
    nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = "maxpool"
    for stage in range(1, 5):
        for b in range(2):
            p = f"layer{stage}.{b}"
            y = relu(conv(x, f"{p}.conv1", f"{p}.conv1.out"), f"{p}.relu1")
            ds = f"{p}.downsample.0"
            identity = conv(x, ds, f"{ds}.out") if f"{ds}.weight" in net.state else x
            z = conv(y, f"{p}.conv2", f"{p}.conv2.out")
            nodes.append(helper.make_node("Add", [z, identity], [f"{p}.add"]))
            x = relu(f"{p}.add", f"{p}.out")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], axis=1))
    inits.extend([numpy_helper.from_array(net.state["fc.weight"], "fc.w"),
                  numpy_helper.from_array(net.state["fc.bias"], "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def ort_logits(path, inputs):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, {"input": x[None]})[0][0] for x in inputs])


def ort_static_int8(fp32_path, int8_path, inputs):
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Crops(CalibrationDataReader):
        def __init__(self):
            self.it = iter(inputs)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    prepared = int8_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(str(prepared), str(int8_path), Crops(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)


# ----------------------------------------------------------------------------- edgeclass

def run(cmd):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stderr.strip()}")
    return done


def edgeclass_logits(example, weights, precision, images, out):
    run([example, weights, precision, out, *images])
    return np.fromfile(out, "<f4").reshape(len(images), NUM_CLASSES)


# ----------------------------------------------------------------------------- main

def compare(reference, logits):
    agree = int((reference.argmax(1) == logits.argmax(1)).sum())
    cos = (reference * logits).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(logits, axis=1))
    return agree, float(cos.mean()), float(cos.min())


def main():
    args = parse_args()
    target = REPO / "target" / args.profile
    example = target / "examples" / "logits"
    builds = dict(b.split("=", 1) for b in args.edgeclass) or {"": target / "edgeclass"}
    for path, what in [(example, "--example logits")] + [(Path(p), "--bin edgeclass") for p in builds.values()]:
        if not Path(path).is_file():
            sys.exit(f"no {path}: run `cargo build --profile {args.profile} {what}` first "
                     "(`--release` for the release profile)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="int8-fidelity-"))
    crops_dir = work / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    try:
        rng = np.random.default_rng(args.seed)
        images = make_crops(rng, crops_dir)
        inputs = np.stack([preprocess(p) for p in images])
        net = Net(rng)
        # BatchNorm statistics over all crops at once (one batch, as a training-mode pass).
        feats = net.features(inputs, calibrate=True)
        net.sharpen_head(feats, args.margin)
        write_safetensors(work / "resnet18.safetensors", net.state)
        to_onnx(net, work / "resnet18-fp32.onnx")
        reference = ort_logits(work / "resnet18-fp32.onnx", inputs)
        numpy_logits = net.features(inputs) @ net.state["fc.weight"].T + net.state["fc.bias"]
        top2 = np.sort(reference, axis=1)[:, -2:]
        print(f"f32 reference: ONNX Runtime fp32; numpy agrees to max |diff| "
              f"{np.abs(numpy_logits - reference).max():.1e} (logit std {reference.std(axis=1).mean():.2f}, "
              f"median top-1 margin {np.median(top2[:, 1] - top2[:, 0]):.2f})")

        # The calibration images: all crops, or with --holdout the even ones (the odd are compared).
        calib = list(range(0, CROPS, 2)) if args.holdout else list(range(CROPS))
        tested = list(range(1, CROPS, 2)) if args.holdout else calib
        calib_dir = work / "calibration"
        calib_dir.mkdir(exist_ok=True)
        for i in calib:
            shutil.copy(images[i], calib_dir / images[i].name)
        ort_static_int8(work / "resnet18-fp32.onnx", work / "resnet18-int8.onnx", inputs[calib])
        results = {"onnxruntime static int8 (QDQ u8/s8 per-channel, MinMax)":
                   ort_logits(work / "resnet18-int8.onnx", inputs)}
        out = work / "logits.f32"
        weights = work / "resnet18.safetensors"
        results["edgeclass f32"] = edgeclass_logits(example, weights, "f32", images, out)
        # q8_0 from safetensors: weights quantized at load, activations measured per frame.
        results["edgeclass q8_0 dynamic"] = edgeclass_logits(example, weights, "q8_0", images, out)
        for name, binary in builds.items():
            static = work / f"static{name}.gguf"
            run([binary, "quantize", "--input", weights, "--output", static, "--calibrate", calib_dir])
            row = "edgeclass q8_0 calibrated (static)" + (f" [{name}]" if name else "")
            results[row] = edgeclass_logits(example, static, "q8_0", images, out)

        reference = reference[tested]
        results = {name: logits[tested] for name, logits in results.items()}
        table = {}
        print(f"{'path':58} {'top-1 = f32':>12} {'cosine mean':>12} {'cosine min':>11}")
        for name, logits in results.items():
            agree, mean, low = compare(reference, logits)
            table[name] = {"top1_agree": agree, "images": len(tested), "cosine_mean": mean, "cosine_min": low}
            print(f"{name:58} {agree:>7}/{len(tested):<4} {mean:>12.5f} {low:>11.5f}")
        if args.json:
            print(json.dumps(table))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
