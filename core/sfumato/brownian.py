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
        self._end = (self.t1 - self.t0) ** 0.5 * self._normal(0, 1)
        # The last query's descent: per level l, the interval [a, a + 1] of level l's grid that
        # held the point, with W at both ends. A query reuses the levels it shares with the last
        # one (samplers query the path in order), so memory stays ~depth tensors however many
        # points are queried, and a nearby point costs a few draws.
        self._trail: list[tuple[int, Tensor, Tensor]] = [(0, torch.zeros(self.shape, dtype=torch.float64), self._end)]

    def _normal(self, level: int, index: int) -> Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + (1 << level) + index) % (2**63 - 1))
        # Drawn in float32 (torch's vectorised CPU normals: about six times faster than float64's,
        # and a query draws up to ``depth`` of them), summed in float64.
        return torch.randn(self.shape, generator=generator, dtype=torch.float32).double()

    def _value(self, index: int) -> Tensor:
        """W at grid point ``index`` of the finest level (``2^depth`` intervals). Each midpoint
        ``2a + 1`` of level ``l + 1`` is drawn from the bridge between its level-``l`` neighbours
        ``a`` and ``a + 1`` with a seed of its own, so the value does not depend on the queries."""
        if index == 1 << self.depth:
            return self._end
        trail = self._trail
        level = 0  # the deepest level whose interval the last query shares
        while level + 1 < len(trail) and trail[level + 1][0] == index >> (self.depth - level - 1):
            level += 1
        del trail[level + 1:]
        while True:
            a, low, high = trail[level]
            shift = self.depth - level
            if index == a << shift:
                return low
            if index == (a + 1) << shift:
                return high
            half = (self.t1 - self.t0) / (1 << (level + 1))  # the bridge: mean of the ends, variance half/2
            middle = torch.add(low, high).mul_(0.5).add_(self._normal(level + 1, 2 * a + 1), alpha=(half / 2) ** 0.5)
            child = index >> (shift - 1)
            trail.append((child, low, middle) if child == 2 * a else (child, middle, high))
            level += 1

    def __call__(self, t: float) -> Tensor:
        """``W(t)`` (float64), exact on the depth-``depth`` grid and linear between its points."""
        t = min(max(float(t), self.t0), self.t1)
        position = (t - self.t0) / (self.t1 - self.t0) * (1 << self.depth)
        low = min(int(position), (1 << self.depth) - 1)
        weight = position - low
        below = self._value(low)
        return below if weight == 0 else torch.lerp(below, self._value(low + 1), weight)


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
