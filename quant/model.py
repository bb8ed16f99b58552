"""The in-memory float model every importer returns: a network plus per-convolution weights."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .network import Network

__all__ = ["FloatModel", "WeightError", "synthetic_model"]


class WeightError(ValueError):
    """A weight file that cannot be used: missing, truncated, corrupt, mismatched or not finite.

    The message names the file and the problem in one line.
    """


@dataclass
class FloatModel:
    net: Network
    params: dict[str, tuple[np.ndarray, np.ndarray]]   # conv name -> (W (O,I,k,k), b (O,)) float32
    source: str                                          # a path, or "synthetic"
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)

    def validate(self) -> "FloatModel":
        """Check every convolution has finite weights of the prototxt's shapes; raise WeightError."""
        for conv in self.net.convs:
            if conv.name not in self.params:
                raise WeightError(f"{self.source}: no weights for layer {conv.name}")
            w, b = self.params[conv.name]
            if tuple(w.shape) != conv.weight_shape:
                raise WeightError(f"{self.source}: {conv.name} weights have shape {tuple(w.shape)}, "
                                  f"the {self.net.name} network needs {conv.weight_shape}")
            if tuple(b.shape) != (conv.cout,):
                raise WeightError(f"{self.source}: {conv.name} bias has shape {tuple(b.shape)}, "
                                  f"the {self.net.name} network needs ({conv.cout},)")
            for what, a in (("weights", w), ("bias", b)):
                bad = ~np.isfinite(a)
                if bad.any():
                    raise WeightError(f"{self.source}: {conv.name} {what} hold {int(bad.sum())} "
                                      f"NaN or Inf values")
        return self


def synthetic_model(net: Network, seed: int = 0) -> FloatModel:
    """Seeded random weights (He initialisation) so every tool runs without trained weights."""
    rng = np.random.default_rng(seed)
    params = {}
    for c in net.convs:
        std = np.sqrt(2.0 / c.reduction)
        w = rng.normal(0.0, std, size=c.weight_shape).astype(np.float32)
        if c.name == net.convs[0].name:
            w /= 64.0  # the input is in pixel units (+-128), not unit variance
        b = rng.normal(0.0, 0.05, size=(c.cout,)).astype(np.float32)
        params[c.name] = (w, b)
    return FloatModel(net, params, "synthetic", synthetic=True)
