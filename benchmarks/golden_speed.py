"""Wall time of one inference of the integer golden model (target: under 2 s for v1.1 at 227).

    python benchmarks/golden_speed.py [--model v1.1] [--size 227] [--repeat 5] [--json]

Prints the median and minimum over ``--repeat`` runs after one warm-up, and the five slowest
layers; with ``--json`` one JSON line instead. The cost does not depend on the weight values, so
the weights are whatever :func:`squeezeforge.quant.weights.load_weights` finds without
downloading (real ones under ``SQUEEZEFORGE_MODELS``, else synthetic).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

TARGET_S = 2.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="v1.1", choices=("v1.0", "v1.1"))
    ap.add_argument("--size", type=int, default=227, choices=(227, 224))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)

    from squeezeforge.quant.golden import golden_layer, run_golden
    from squeezeforge.quant.preprocess import default_image, load_image
    from squeezeforge.quant.quantize import quantize
    from squeezeforge.quant.weights import load_weights

    fm = load_weights(args.model, download=False, progress=False)
    x = load_image(default_image(), args.size)[0]
    qm = quantize(fm, [x], size=args.size)
    run_golden(qm, x)                                        # warm-up
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        blobs = run_golden(qm, x)
        times.append(time.perf_counter() - t)
    per_layer = {}
    for l in qm.net.layers:                                  # one timed pass, layer by layer
        t = time.perf_counter()
        golden_layer(qm, l.name, blobs)
        per_layer[l.name] = time.perf_counter() - t
    med = statistics.median(times)
    res = dict(benchmark="golden_speed", model=args.model, size=args.size,
               weights="synthetic" if fm.synthetic else "real",
               macs=qm.net.total_macs(args.size), runs=len(times),
               median_s=round(med, 4), min_s=round(min(times), 4), target_s=TARGET_S,
               meets_target=med < TARGET_S, gmacs_per_s=round(qm.net.total_macs(args.size) / med / 1e9, 3),
               slowest_layers={k: round(v, 4) for k, v in
                               sorted(per_layer.items(), key=lambda kv: -kv[1])[:5]},
               python=platform.python_version(), numpy=np.__version__, cpus=os.cpu_count())
    if args.json:
        print(json.dumps(res))
    else:
        print(f"golden model, SqueezeNet {args.model} at {args.size}x{args.size} "
              f"({res['macs'] / 1e6:.1f} M MACs, {res['weights']} weights)")
        print(f"  one inference: median {med:.3f} s, min {min(times):.3f} s over {len(times)} runs "
              f"({res['gmacs_per_s']} GMAC/s); target < {TARGET_S:.0f} s: "
              f"{'met' if res['meets_target'] else 'MISSED'}")
        print("  slowest layers: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in res["slowest_layers"].items()))
    return 0 if res["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
