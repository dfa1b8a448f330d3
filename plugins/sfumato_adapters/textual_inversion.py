"""The ``textual-inversion`` adapter: learned embedding vectors bound to a trigger word in the text
encoder (Gal et al., https://arxiv.org/abs/2208.01618), through the encoder's ``add_tokens``.

=================  ==========================================  ===================================
format             contents                                    trigger (unless ``token`` is set)
=================  ==========================================  ===================================
diffusers          ``learned_embeds.safetensors``:             the key
                   ``{token: [width] or [n, width]}``
WebUI safetensors  ``emb_params: [n, width]`` (or               the file's name, as the WebUI does
                   ``string_to_param.*``)
WebUI ``.pt``      a pickle: ``string_to_param: {"*": ...}``,  its ``name``
                   ``name``; read only with ``allow_pickle``
                   (then with ``torch.load(weights_only=True)``)
=================  ==========================================  ===================================

SDXL embeddings (``clip_l`` and ``clip_g``, one per text encoder) are refused as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import sfumato
import torch
from pydantic import Field
from torch import Tensor

#: Suffixes of pickle files (which can run code when read).
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WEBUI_KEYS = ("emb_params", "string_to_param.*")


class TextualInversionSpec(sfumato.AdapterSpec):
    type: Literal["textual-inversion"] = "textual-inversion"
    token: str | None = Field(
        None, min_length=1, description="The trigger word prompts use. None: the file's own (a diffusers file's key, "
        "a WebUI .pt's name), else the file's name without its extension, as the WebUI does.")
    allow_pickle: bool = Field(False, description="Read a .pt / .bin pickle embedding (with "
                               "torch.load(weights_only=True)); only for files you trust. Safetensors need no permission.")


class TextualInversion(sfumato.Adapter):
    """A trigger word bound to the vectors of an embedding file in the ``[text_encoder]``."""

    Spec: ClassVar[type[TextualInversionSpec]] = TextualInversionSpec

    def __init__(self, spec: TextualInversionSpec):
        super().__init__(spec)
        recorded, self.vectors = read_embedding(spec.weights, spec.allow_pickle)
        self.token = spec.token or recorded or Path(spec.weights).stem
        self.encoder: Any = None

    def apply(self, components: Mapping[str, Any]) -> None:
        encoder = components.get("text_encoder")
        if encoder is None:
            raise sfumato.SpecError("a textual inversion binds a word in the [text_encoder], and this pipeline has none")
        if not callable(getattr(encoder, "add_tokens", None)):
            raise sfumato.SpecError(f"[text_encoder] {encoder.spec.type!r} cannot bind new words (it offers no "
                                    "add_tokens), so a textual inversion cannot apply to it")
        try:
            encoder.add_tokens({self.token: self.vectors})
        except sfumato.SfumatoError as exc:
            raise type(exc)(f"{self.spec.weights}: {exc}") from None
        self.encoder = encoder

    def remove(self) -> None:
        if self.encoder is not None:
            self.encoder.remove_tokens([self.token])
            self.encoder = None


def read_embedding(path: str | Path, allow_pickle: bool) -> tuple[str | None, Tensor]:
    """``(the trigger the file records or None, vectors [n, width])`` of an embedding file."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise sfumato.WeightsError(
            f"{path}: a pickle file ({path.suffix}), which can run code when read; convert it to .safetensors, or set "
            "allow_pickle = true in its [[adapters]] table if you trust it (it is then read with weights_only=True)")
    try:
        state: dict[str, Any] = sfumato.load_weights(path, allow_pickle=allow_pickle)
    except sfumato.WeightsError:
        raise
    except Exception as exc:  # weights_only refuses what is not tensors and plain data
        raise sfumato.WeightsError(f"{path}: not a readable embedding ({type(exc).__name__}: {exc})") from None
    keys = sorted(str(key) for key in state)
    if {"clip_l", "clip_g"} & set(keys):
        raise sfumato.WeightsError(f"{path}: an SDXL embedding (clip_l / clip_g vectors for SDXL's two text encoders), "
                                   "made for another architecture than this pipeline's")
    token: str | None = None
    if isinstance(state.get("string_to_param"), dict):  # a WebUI .pt
        value, name = state["string_to_param"].get("*"), state.get("name")
        token = name if isinstance(name, str) and name.strip() else None
    elif any(key in state for key in WEBUI_KEYS):
        value = state[next(key for key in WEBUI_KEYS if key in state)]
    elif len(state) == 1:
        token, value = next(iter(state.items()))
    else:
        raise sfumato.WeightsError(
            f"{path}: not a textual inversion embedding: expected one tensor ({{token: vectors}}, diffusers), emb_params "
            f"or string_to_param (WebUI); found the keys {', '.join(keys[:12])}")
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim not in (1, 2):
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise sfumato.WeightsError(f"{path}: the embedding must be float vectors [width] or [n, width], got {shape}")
    vectors = value.float().reshape(-1, value.shape[-1])  # (n, width)
    if not torch.isfinite(vectors).all():
        raise sfumato.WeightsError(f"{path}: the embedding holds NaN or infinite values")
    return token, vectors
