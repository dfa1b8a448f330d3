"""What the DiT embeds: patches and their positions, timesteps, class labels, captions and
PixArt's micro-conditions. Module and parameter names are diffusers' (``pos_embed.proj``,
``timestep_embedder.linear_1``, ``class_embedder.embedding_table``, ``caption_projection``).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

import sfumato

from .spec import TIMESTEP_CHANNELS, TIMESTEP_FREQ_SHIFT


def sincos_positions(dim: int, grid_height: int, grid_width: int, base_size: int, interpolation_scale: float) -> Tensor:
    """The fixed 2-D sine-cosine patch positions of MAE and DiT (https://arxiv.org/abs/2111.06377),
    computed as diffusers' ``get_2d_sincos_pos_embed`` does.

    Patch ``(row, column)`` sits at ``(row, column) * base_size / grid / interpolation_scale``, so
    a grid other than the trained ``base_size`` is stretched over the same range. The first half
    of the channels encode the column, the second half the row, each as
    ``[sin(p * w_i), cos(p * w_i)]`` with ``w_i = 10000 ** (-i / (dim / 4))``. Positions are
    float32 and the sinusoids float64, on the CPU, exactly as diffusers computes them; returned in float32.

    :returns: ``[grid_height * grid_width, dim]``, rows in row-major patch order.
    """
    rows = torch.arange(grid_height, dtype=torch.float32) / (grid_height / base_size) / interpolation_scale
    columns = torch.arange(grid_width, dtype=torch.float32) / (grid_width / base_size) / interpolation_scale
    row, column = (axis.double() for axis in torch.meshgrid(rows, columns, indexing="ij"))  # (gh, gw) each

    def one_axis(positions: Tensor) -> Tensor:  # (N,) -> (N, dim / 2)
        frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim / 4,)
        angles = torch.outer(positions, frequencies)  # (N, dim / 4)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([one_axis(column.flatten()), one_axis(row.flatten())], dim=1).float()  # (N, dim)


class PatchEmbed(nn.Module):
    """Cut ``x`` into ``patch_size`` squares, project each to the hidden width and add its position.

    ``[B, C, H, W] -> [B, (H / p) * (W / p), D]``. The projection is a stride-``p`` convolution
    (diffusers' ``pos_embed.proj``). Sin-cos positions are not parameters: they are computed per
    grid size and device and kept in a cache, so checkpoints hold none (as in diffusers); learned
    positions are the parameter ``pos_embed`` of shape ``[1, N, D]`` for the trained grid.
    """

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, sample_size: int,
                 learned: bool, interpolation_scale: float):
        super().__init__()
        self.patch_size = patch_size
        self.base_size = sample_size // patch_size
        self.interpolation_scale = interpolation_scale
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = None
        if learned:
            table = sincos_positions(hidden_size, self.base_size, self.base_size, self.base_size, interpolation_scale)
            self.pos_embed = nn.Parameter(table[None])  # (1, N, D)
        self._sincos_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        """:param x: ``[B, C, H, W]``, ``H`` and ``W`` multiples of the patch size. :returns: ``[B, N, D]``."""
        grid_height, grid_width = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = rearrange(self.proj(x), "b d h w -> b (h w) d")  # (B, N, D)
        return (tokens + self.positions(grid_height, grid_width, x.device)).to(tokens.dtype)

    def positions(self, grid_height: int, grid_width: int, device: torch.device) -> Tensor:
        """``[1, N, D]`` positions of a ``grid_height x grid_width`` patch grid."""
        if self.pos_embed is not None:
            if (grid_height, grid_width) != (self.base_size, self.base_size):
                raise sfumato.SpecError(
                    f"[denoiser] dit has learned positions for a {self.base_size}x{self.base_size} patch grid "
                    f"(sample_size {self.base_size * self.patch_size}), but x_t is {grid_height * self.patch_size}x"
                    f"{grid_width * self.patch_size}: generate at {self.base_size * self.patch_size}x"
                    f"{self.base_size * self.patch_size} (latent pixels), or use positions = 'sincos'"
                )
            return self.pos_embed
        key = (grid_height, grid_width, device)
        if key not in self._sincos_cache:
            table = sincos_positions(self.proj.out_channels, grid_height, grid_width, self.base_size,
                                     self.interpolation_scale)
            self._sincos_cache[key] = table[None].to(device)  # (1, N, D)
        return self._sincos_cache[key]


def embed_timesteps(mlp: sfumato.nn.TimestepEmbedding, t: Tensor, freq_shift: float, dtype: torch.dtype) -> Tensor:
    """``mlp(sinusoid(t))``: the 256-channel sinusoid (cosines first) of (fractional) timesteps
    through an MLP (``sfumato.nn.TimestepEmbedding``, diffusers' ``TimestepEmbedding``). ``[B] -> [B, D]``."""
    sinusoid = sfumato.nn.timestep_embedding(t, TIMESTEP_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=freq_shift)
    return mlp(sinusoid.to(dtype))


class LabelEmbedding(nn.Module):
    """One learned vector per class, plus the null class (row ``num_classes``) for classifier-free
    guidance. Condition dropout is the training recipe's business, not this layer's (diffusers'
    ``LabelEmbedding`` drops labels itself in training mode)."""

    def __init__(self, num_classes: int, embed_dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


class TimestepLabelEmbedding(nn.Module):
    """``timestep MLP(t) (+ class embedding(label))``: what one adaLN-Zero layer is conditioned on
    (diffusers' ``CombinedTimestepLabelEmbeddings``; no class embedding for an unconditional model)."""

    def __init__(self, embed_dim: int, num_classes: int | None, freq_shift: float):
        super().__init__()
        self.freq_shift = freq_shift
        self.timestep_embedder = sfumato.nn.TimestepEmbedding(TIMESTEP_CHANNELS, embed_dim)
        self.class_embedder = LabelEmbedding(num_classes, embed_dim) if num_classes is not None else None

    def forward(self, t: Tensor, labels: Tensor | None, dtype: torch.dtype) -> Tensor:
        """:param t: ``[B]``. :param labels: ``[B]`` long (required with a class embedding). :returns: ``[B, D]``."""
        embedding = embed_timesteps(self.timestep_embedder, t, self.freq_shift, dtype)
        if self.class_embedder is not None:
            embedding = embedding + self.class_embedder(labels)
        return embedding


class TimestepSizeEmbedding(nn.Module):
    """PixArt's conditioning vector: the timestep MLP, plus, with micro-conditions, embeddings of
    the image resolution ``(height, width)`` and aspect ratio ``height / width`` (each a sinusoid
    through its own MLP of width ``D / 3``; diffusers' ``PixArtAlphaCombinedTimestepSizeEmbeddings``)."""

    def __init__(self, embed_dim: int, micro_conditions: bool):
        super().__init__()
        self.timestep_embedder = sfumato.nn.TimestepEmbedding(TIMESTEP_CHANNELS, embed_dim)
        self.micro_conditions = micro_conditions
        if micro_conditions:
            self.resolution_embedder = sfumato.nn.TimestepEmbedding(TIMESTEP_CHANNELS, embed_dim // 3)
            self.aspect_ratio_embedder = sfumato.nn.TimestepEmbedding(TIMESTEP_CHANNELS, embed_dim // 3)

    def forward(self, t: Tensor, image_size: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """:param t: ``[B]``. :param image_size: ``(height, width)`` of the image in pixels. :returns: ``[B, D]``."""
        shift = TIMESTEP_FREQ_SHIFT["ada_norm_single"]  # PixArt embeds the sizes with the timestep's sinusoid
        embedding = embed_timesteps(self.timestep_embedder, t, shift, dtype)  # (B, D)
        if not self.micro_conditions:
            return embedding
        batch, (height, width) = t.shape[0], image_size
        resolution = torch.full((batch, 2), float(height), device=t.device)  # filled on the device: no host copy
        resolution[:, 1] = width
        resolution = resolution.flatten()  # (2B,): h, w, h, w, ...
        aspect_ratio = torch.full((batch,), height / width, dtype=torch.float32, device=t.device)  # (B,)
        resolution = rearrange(embed_timesteps(self.resolution_embedder, resolution, shift, dtype),
                               "(b two) d -> b (two d)", two=2)  # (B, 2 * D / 3)
        aspect_ratio = embed_timesteps(self.aspect_ratio_embedder, aspect_ratio, shift, dtype)  # (B, D / 3)
        return embedding + torch.cat([resolution, aspect_ratio], dim=1)


class CaptionProjection(nn.Module):
    """PixArt's caption projection: text-encoder states to the hidden width through
    ``linear_2(gelu_tanh(linear_1(tokens)))`` (diffusers' ``PixArtAlphaTextProjection``)."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_size)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.linear_2(self.act_1(self.linear_1(tokens)))

