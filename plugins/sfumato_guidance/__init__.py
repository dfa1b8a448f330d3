"""First-party guidance: classifier-free (``cfg``), classifier (``classifier``) and CLIP
(``clip``) guidance, plus the noise-aware classifier component (``noise-classifier``) that
classifier guidance follows; the combiners of classifier-free guidance (``cfg``, ``apg``,
``cfg-zero-star``, ``tcfg``, ``perp-neg``); and guidance by a perturbed model (``pag``, ``seg``,
``skip-layer``); and guidance by a weaker model (``autoguidance``). See docs/guidance.md.

Every method is a ``sfumato.Guidance`` that wraps a predictor ``(x_t, t, cond) -> Prediction``,
so each works with every scheduler, including those that call the model twice per step, and
several ``[[guidance]]`` entries compose in spec order.
"""

from __future__ import annotations

import sfumato

from .autoguidance import AutoGuidance
from .cfg import ClassifierFreeGuidance
from .classifier_guidance import ClassifierGuidance
from .clip_guidance import CLIPGuidance
from .combiners import COMBINERS
from .noise_classifier import NoiseClassifier
from .perturbed import PERTURBED

SFUMATO_PLUGIN_API = 1

COMPONENTS = (ClassifierFreeGuidance, ClassifierGuidance, CLIPGuidance, NoiseClassifier, *COMBINERS, *PERTURBED,
              AutoGuidance)


@sfumato.hookimpl
def register_components(register):
    for component in COMPONENTS:
        register(component)
