"""``squeezeforge bench``: benchmark figures, printed for a person and returned as a dict (JSON).

Current figures: wall time of one inference in the float reference and in the integer golden
model (median of ``--repeat`` runs, after one warm-up), against the golden-model target of 2 s.
"""
from __future__ import annotations

import statistics
import time

__all__ = ["run_bench", "time_call"]

GOLDEN_TARGET_S = 2.0


def time_call(fn, repeat: int) -> dict:
    """Median and min wall time of ``fn()`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return dict(median_s=round(statistics.median(times), 4), min_s=round(min(times), 4),
                runs=len(times))


def run_bench(args) -> dict:
    from squeezeforge.host.cli import _load_image, _load_model, _weights_label, log
    from squeezeforge.quant.golden import run_golden
    from squeezeforge.quant.quantize import quantize
    from squeezeforge.quant.reference import forward_float
    quiet = args.json
    fm = _load_model(args, quiet)
    _, x, _ = _load_image(args, quiet)
    qm = quantize(fm, None, size=args.size)
    log(f"timing {args.model} at {args.size}x{args.size}, {args.repeat} runs each ...", quiet)
    t_float = time_call(lambda: forward_float(fm.net, fm.params, x), args.repeat)
    t_golden = time_call(lambda: run_golden(qm, x), args.repeat)
    res = dict(model=args.model, size=args.size, weights=_weights_label(fm),
               macs=fm.net.total_macs(args.size),
               float_inference=t_float, golden_inference=t_golden,
               golden_target_s=GOLDEN_TARGET_S,
               golden_meets_target=t_golden["median_s"] < GOLDEN_TARGET_S)
    if not quiet:
        print(f"SqueezeNet {args.model} at {args.size}x{args.size} ({res['macs'] / 1e6:.1f} M MACs), "
              f"weights: {res['weights']}")
        print(f"  {'float reference, one inference':<40}{t_float['median_s']:8.3f} s (median of {t_float['runs']})")
        print(f"  {'golden int8 model, one inference':<40}{t_golden['median_s']:8.3f} s (median of {t_golden['runs']})"
              f"   target < {GOLDEN_TARGET_S:.0f} s: {'met' if res['golden_meets_target'] else 'MISSED'}")
    return res
