"""Token merging for Stable Diffusion (Bolya & Hoffman 2023, "Token Merging for Fast Stable
Diffusion", https://arxiv.org/abs/2303.17604; the ``tomesd`` package): before a self-attention,
merge the ``ratio`` most redundant image tokens into others; after it, copy each merged token's
output back to the tokens it absorbed. Attention costs ``N^2``, so merging half the tokens
quarters it.

The merge is ``tomesd``'s ``bipartite_soft_matching_random2d``: the feature map is cut into
``sx`` x ``sy`` cells, one token per cell (a random one, or the top-left with ``random = false``)
is a destination, and the ``r = ratio * N`` source tokens most similar (cosine) to a destination
are averaged into it. Patches run at the ``self-attention`` points on ``q``, ``k`` and ``v``;
merging them is merging the attention's input, since the projections are linear and a mean's
weights sum to one, so only the attention itself runs on fewer tokens. One departure from
``tomesd``: the similarity is measured on the keys (as ToMe for ViTs does) rather than on the
block's input, which the attention point does not see.

``max_downsample`` limits merging to the attentions of the resolution levels whose feature map is
at most that much smaller than the input (1: the first level only, where the tokens are most
numerous: ``tomesd``'s default). Random cells are drawn from a generator on the device, seeded
from the run's seed, so a seed gives the same image.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from einops import rearrange
from pydantic import Field, field_validator
from torch import Tensor

import sfumato

from .calls import ForwardClock, denoiser_of, patching_predictor, points_of

#: Offset from the run's seed for the merge generator (any fixed value keeps runs reproducible).
MERGE_SEED_OFFSET = 0x70E


def bipartite_soft_matching_2d(metric: Tensor, height: int, width: int, sx: int, sy: int, r: int,
                               generator: torch.Generator | None) -> tuple[Callable[[Tensor], Tensor],
                                                                            Callable[[Tensor], Tensor]]:
    """``(merge, unmerge)`` for tokens ``[B, N, C]`` of a ``height`` x ``width`` map (``tomesd``'s
    ``bipartite_soft_matching_random2d``): ``merge`` maps ``N`` tokens to ``N - r``, ``unmerge``
    back. ``metric`` ``[B, N, C']`` measures similarity; ``generator`` None: the top-left token
    of each cell is its destination."""
    batch, tokens, _ = metric.shape
    device = metric.device
    with torch.no_grad():
        hsy, wsx = height // sy, width // sx
        if generator is None:
            rand_idx = torch.zeros(hsy, wsx, 1, device=device, dtype=torch.int64)
        else:
            rand_idx = torch.randint(sy * sx, size=(hsy, wsx, 1), device=device, generator=generator)
        # -1 marks each cell's destination, 0 its sources
        idx_buffer_view = torch.zeros(hsy, wsx, sy * sx, device=device, dtype=torch.int64)
        idx_buffer_view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx))
        idx_buffer_view = rearrange(idx_buffer_view, "hc wc (sy sx) -> (hc sy) (wc sx)", sy=sy, sx=sx)
        if hsy * sy < height or wsx * sx < width:  # the map does not divide into cells: the rest are sources
            idx_buffer = torch.zeros(height, width, device=device, dtype=torch.int64)
            idx_buffer[: hsy * sy, : wsx * sx] = idx_buffer_view
        else:
            idx_buffer = idx_buffer_view
        order = idx_buffer.reshape(1, -1, 1).argsort(dim=1)  # (1, N, 1): destinations, then sources
        num_dst = hsy * wsx
        a_idx, b_idx = order[:, num_dst:, :], order[:, :num_dst, :]  # sources, destinations

        def split(x: Tensor) -> tuple[Tensor, Tensor]:
            channels = x.shape[-1]
            src = torch.gather(x, dim=1, index=a_idx.expand(batch, tokens - num_dst, channels))
            dst = torch.gather(x, dim=1, index=b_idx.expand(batch, num_dst, channels))
            return src, dst

        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(metric)
        scores = a @ b.transpose(-1, -2)  # (B, sources, destinations) cosine similarities
        r = min(a.shape[1], r)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]  # kept sources, merged sources
        dst_idx = torch.gather(node_idx[..., None], dim=-2, index=src_idx)

    def merge(x: Tensor) -> Tensor:
        src, dst = split(x)
        n, t1, c = src.shape
        unm = torch.gather(src, dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = torch.gather(src, dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="mean")
        return torch.cat([unm, dst], dim=1)  # (B, N - r, C)

    def unmerge(x: Tensor) -> Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        c = unm.shape[-1]
        src = torch.gather(dst, dim=-2, index=dst_idx.expand(batch, r, c))
        out = torch.zeros(batch, tokens, c, device=x.device, dtype=x.dtype)  # (B, N, C)
        out.scatter_(dim=-2, index=b_idx.expand(batch, num_dst, c), src=dst)
        sources = a_idx.expand(batch, a_idx.shape[1], 1)
        out.scatter_(dim=-2, index=torch.gather(sources, dim=1, index=unm_idx).expand(batch, unm_len, c), src=unm)
        out.scatter_(dim=-2, index=torch.gather(sources, dim=1, index=src_idx).expand(batch, r, c), src=src)
        return out

    return merge, unmerge


class TokenMerging(sfumato.Speedup):
    """ToMe for SD: self-attention over merged image tokens."""

    class Spec(sfumato.ComponentSpec):
        type: Literal["tome"] = "tome"
        ratio: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of the image tokens merged away before each "
                             "self-attention (tomesd's ratio); 0 merges nothing (output unchanged).")
        max_downsample: Literal[1, 2, 4, 8] = Field(1, description="Merge only at resolution levels at most this "
                                                    "much smaller than the input (1: the first level only).")
        sx: int = Field(2, ge=1, description="Width of the cells that each keep one destination token.")
        sy: int = Field(2, ge=1, description="Height of the cells that each keep one destination token.")
        random: bool = Field(True, description="Choose each cell's destination at random (seeded by the run's seed), "
                             "or always its top-left token.")
        layers: list[str] | None = Field(None, description="Regular expressions selecting the self-attention points "
                                         "by module name (\"down_blocks.0\"); default: every one.")

        @field_validator("layers", mode="before")
        @classmethod
        def _one_layer_or_a_list(cls, value):
            return [value] if isinstance(value, str) else value

    def neutral(self) -> bool:
        return self.spec.ratio == 0.0

    def wrap(self, predictor: sfumato.Predictor, context: sfumato.GuidanceContext) -> sfumato.Predictor:
        if self.neutral():
            return predictor
        spec, name = self.spec, self.type_name()
        denoiser = denoiser_of(context, name)
        points = points_of(denoiser, spec.layers, sfumato.model_patches.SELF_ATTENTION, name)
        seed = (context.generator.initial_seed() if context.generator is not None else 0) + MERGE_SEED_OFFSET
        run = {"tokens": 0, "generator": None}  # the input's pixels; the run's merge generator (made on first use)

        def see_input(x: Tensor) -> None:
            run["tokens"] = x.shape[-2] * x.shape[-1]
            if spec.random and run["generator"] is None:
                run["generator"] = torch.Generator(device=x.device).manual_seed(seed)

        def merged_attention(q: Tensor, k: Tensor, v: Tensor, attend, size) -> Tensor:
            tokens = q.shape[2]
            height, width = size if size is not None else (math.isqrt(tokens),) * 2
            downsample = math.ceil(math.sqrt(run["tokens"] / tokens)) if run["tokens"] else 1
            r = int(tokens * spec.ratio)
            if downsample > spec.max_downsample or r <= 0 or height * width != tokens:
                return attend(q, k, v)
            heads = q.shape[1]
            metric = rearrange(k, "b h n d -> b n (h d)")
            merge, unmerge = bipartite_soft_matching_2d(metric, height, width, spec.sx, spec.sy, r, run["generator"])
            q, k, v = (rearrange(merge(rearrange(a, "b h n d -> b n (h d)")), "b n (h d) -> b h n d", h=heads)
                       for a in (q, k, v))  # (B, heads, N - r, d)
            out = attend(q, k, v)
            return rearrange(unmerge(rearrange(out, "b h n d -> b n (h d)")), "b n (h d) -> b h n d", h=heads)

        return patching_predictor(predictor, denoiser, ForwardClock(context.step),
                                  {point: merged_attention for point in points}, before=see_input)
