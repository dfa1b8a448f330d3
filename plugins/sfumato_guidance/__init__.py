"""First-party guidance: classifier-free (``cfg``), classifier (``classifier``) and CLIP
(``clip``) guidance, plus the noise-aware classifier component (``noise-classifier``) that
classifier guidance follows. See docs/guidance.md.

Every method is a ``sfumato.Guidance`` that wraps a predictor ``(x_t, t, cond) -> Prediction``,
so each works with every scheduler, including those that call the model twice per step, and
several ``[[guidance]]`` entries compose in spec order.
"""

from __future__ import annotations

import sfumato

from .cfg import ClassifierFreeGuidance
from .classifier_guidance import ClassifierGuidance
from .clip_guidance import CLIPGuidance
from .noise_classifier import NoiseClassifier

SFUMATO_PLUGIN_API = 1

COMPONENTS = (ClassifierFreeGuidance, ClassifierGuidance, CLIPGuidance, NoiseClassifier)


@sfumato.hookimpl
def register_components(register):
    for component in COMPONENTS:
        register(component)
