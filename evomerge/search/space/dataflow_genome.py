"""The data-flow genome: one indicator per slot (and one input scale per slot), as in the paper.

Slots lay out all layers of A, then all of B, repeated `repeats` times: T = repeats * (L_A + L_B). A slot is on
iff its indicator > 0 (gene u > 0.5 in the optimiser's [0, 1] box). Every path starts with A's first layer and
ends with A's last; those two slots of the first repetition are therefore not genes. Initialisation: A's
first-repetition slots start `init_on` step sizes above the threshold (likely on), the rest at `init_off`.
"""

from __future__ import annotations

import numpy as np

from evomerge.merging.dataflow import DataflowPath, Hop
from evomerge.search.config import DataflowConfig


class DataflowGenome:
    def __init__(self, config: DataflowConfig, model_a: str, model_b: str, layers_a: int, layers_b: int,
                 sigma0: float):
        self.config, self.model_a, self.model_b = config, model_a, model_b
        self.layers_a, self.layers_b, self.sigma0 = layers_a, layers_b, sigma0
        self.slots: list[tuple[int, str, int]] = []  # (repetition, model, layer)
        for r in range(config.repeats):
            for i in range(layers_a):
                if r == 0 and i in (0, layers_a - 1):
                    continue  # the fixed ends of every path
                self.slots.append((r, "a", i))
            self.slots.extend((r, "b", i) for i in range(layers_b))
        self.names = [f"on.r{r}.{m}{i}" for r, m, i in self.slots]
        if config.scales:
            self.names += [f"scale.r{r}.{m}{i}" for r, m, i in self.slots]

    def __len__(self) -> int:
        return len(self.names)

    def x0(self, x0=None) -> np.ndarray:
        c = self.config
        on = [0.5 + (c.init_on if (r == 0 and m == "a") else c.init_off) * self.sigma0 for r, m, _ in self.slots]
        x = np.clip(np.array(on), 0.0, 1.0)
        if c.scales:
            lo, hi = c.scale_bounds
            x = np.concatenate([x, np.full(len(self.slots), (1.0 - lo) / (hi - lo))])
        return x

    def values(self, x: np.ndarray) -> dict[str, float]:
        x = np.clip(np.asarray(x, float), 0.0, 1.0)
        lo, hi = self.config.scale_bounds
        n = len(self.slots)
        out = {name: float(2 * u - 1) for name, u in zip(self.names[:n], x[:n])}  # the paper's indicator I
        if self.config.scales:
            out.update({name: float(lo + u * (hi - lo)) for name, u in zip(self.names[n:], x[n:])})
        return out

    def path(self, x: np.ndarray) -> DataflowPath:
        x = np.clip(np.asarray(x, float), 0.0, 1.0)
        n = len(self.slots)
        lo, hi = self.config.scale_bounds
        hops = [Hop(model="a", layer=0)]
        for k, (_, m, i) in enumerate(self.slots):
            if x[k] > 0.5:
                scale = float(lo + x[n + k] * (hi - lo)) if self.config.scales else 1.0
                hops.append(Hop(model=m, layer=i, scale=scale))
        hops.append(Hop(model="a", layer=self.layers_a - 1))
        return DataflowPath(model_a=self.model_a, model_b=self.model_b, hops=hops, dtype=self.config.dtype)
