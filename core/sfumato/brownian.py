"""Brownian noise for SDE samplers: one Brownian path per run, queried at any noise levels.

An SDE sampler that adds noise between levels ``s`` and ``s'`` must take the *increment*
``W(s') - W(s)`` of one path ``W``, so that runs with different step counts (and a sampler that
visits a midpoint) see the same path and converge as steps grow; independent draws per step only
match in distribution. k-diffusion's ``BrownianTreeNoiseSampler`` (torchsde's ``BrownianTree``)
does this; ``BrownianPath`` is the same idea written out: ``W`` on ``[t0, t1]`` with ``W(t0) = 0``,
its value at ``t1`` drawn from the run's seed, and every other value found by bisection, each
midpoint drawn from the Brownian bridge between its neighbours with a seed that depends only on
the run's seed and the midpoint's place in the tree. The same seed therefore gives the same path
whatever the queries, and all of it is drawn on the CPU before sampling starts (no host sync in
the loop).
"""

from __future__ import annotations

import torch
from torch import Tensor


class BrownianPath:
    """``W(t)`` for ``t`` in ``[t0, t1]``, ``W(t0) = 0``, of tensors shaped ``shape``.

    :param seed: the path's seed (draw it from the run's generator).
    :param depth: bisection levels; below ``(t1 - t0) / 2^depth`` the path is interpolated
        linearly (the standard deviation of that error is ``sqrt((t1 - t0) 2^-depth) / 2``).
    """

    def __init__(self, t0: float, t1: float, shape: tuple[int, ...], seed: int, depth: int = 24):
        if not t1 > t0:
            raise ValueError(f"a Brownian path needs t1 > t0, got [{t0}, {t1}]")
        self.t0, self.t1, self.shape, self.seed, self.depth = float(t0), float(t1), tuple(shape), int(seed), depth
        # The tree's nodes: (level, index) -> W at t0 + index (t1 - t0) / 2^level, index odd.
        self._nodes: dict[tuple[int, int], Tensor] = {}
        self._end = (self.t1 - self.t0) ** 0.5 * self._normal(0, 1)

    def _normal(self, level: int, index: int) -> Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + (1 << level) + index) % (2**63 - 1))
        return torch.randn(self.shape, generator=generator, dtype=torch.float64)

    def _value(self, level: int, index: int) -> Tensor:
        """W at grid point ``index`` of ``level`` (``2^level`` intervals)."""
        if index == 0:
            return torch.zeros(self.shape, dtype=torch.float64)
        if index == 1 << level:
            return self._end
        while index % 2 == 0:  # the same point on a coarser level
            level, index = level - 1, index // 2
        key = (level, index)
        if key not in self._nodes:
            left, right = self._value(level - 1, index // 2), self._value(level - 1, index // 2 + 1)
            half = (self.t1 - self.t0) / (1 << level)  # the bridge: mean of the ends, variance half/2
            self._nodes[key] = (left + right) / 2 + (half / 2) ** 0.5 * self._normal(level, index)
        return self._nodes[key]

    def __call__(self, t: float) -> Tensor:
        """``W(t)`` (float64), exact on the depth-``depth`` grid and linear between its points."""
        t = min(max(float(t), self.t0), self.t1)
        position = (t - self.t0) / (self.t1 - self.t0) * (1 << self.depth)
        low = min(int(position), (1 << self.depth) - 1)
        weight = position - low
        below = self._value(self.depth, low)
        return below if weight == 0 else torch.lerp(below, self._value(self.depth, low + 1), weight)


def brownian_increments(levels: Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Unit-variance increments of one Brownian path between consecutive ``levels``.

    :param levels: ``[N, k + 1]`` the noise levels each of ``N`` steps spans with its ``k`` draws
        (a sampler's ``noise_levels``), in any order.
    :returns: ``[N, k, *shape]`` (float32, CPU): ``(W(l_{j+1}) - W(l_j)) / sqrt(|l_{j+1} - l_j|)``,
        zeros where two levels coincide.
    """
    values = levels.double()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    path = BrownianPath(float(values.min()), float(values.max()), shape, seed)
    out = torch.zeros((*levels.shape[:1], levels.shape[1] - 1, *shape), dtype=torch.float64)
    for i, row in enumerate(values.tolist()):
        for j in range(len(row) - 1):
            span = abs(row[j + 1] - row[j])
            if span > 0:
                out[i, j] = (path(row[j + 1]) - path(row[j])) / span**0.5
    return out.float()
