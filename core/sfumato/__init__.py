"""sfumato: a plugin-based framework for diffusion models and CLIP.

Everything a plugin may use is exported here (and from ``sfumato.testing`` for its tests); the
rest of the package is private. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from ._version import PLUGIN_API_VERSION, __version__
from .adapter import Adapter, AdapterSpec, AdapterTarget, foreign_module_names
from .component import Component, ComponentSpec
from .combiner import COMBINER, CombineContext, Combiner, CombinerField
from .conditioning import Conditioning
from .errors import Interrupted, PluginError, SamplingError, SfumatoError, SpecError, WeightsError
from .hookspecs import hookimpl
from .interfaces import (
    KINDS,
    Autoencoder,
    Classifier,
    Dataset,
    Denoiser,
    Encoder,
    EncoderOutput,
    Guidance,
    GuidanceContext,
    Model,
    Predictor,
    SamplerStep,
    SamplingPlan,
    Scheduler,
    Speedup,
    StepResult,
    Task,
    bind_predictor,
)
from .formulation import Formulation, TrainingRandom, batch_view
from .noise_schedule import DiffusionSpec, NoiseSchedule
from .sigma_schedule import NoiseLevels, SigmaSchedule, SigmaScheduleField, build_sigma_schedule
from .kind_field import ComponentChoice
from .spec_paths import ComponentTable, SpecPath
from .weight_patches import WeightPatch, patch_weight
from . import branches
from . import model_patches
from .model_patches import PatchPoint, PointPatch
from . import spacing
from . import nn
from . import blocks
from . import conditioners
from .generation import ArgumentError, GenerationResult, from_pil, generate, to_pil
from .outputs import image_grid
from .pipeline import Pipeline
from .prediction import Prediction
from .sampling import StepCallback, StepEvent, randn, run_sampler
from .registry import PluginInfo, Registry, get_registry, set_registry
from .runtime import RuntimeSpec, resolve_device
from .training import (
    EvalContext, Recipe, SampleContext, StepContext, TrainCallback, TrainingTask, TrainResult, TrainSetup, TrainSpec,
    collate_examples, retrieval_recall, topk_accuracy, train,
)
from .weights import (
    atomic_write,
    check_state_dict,
    file_sha256,
    load_into,
    load_weights,
    read_component_spec,
    read_metadata,
    rename_by_prefix,
    save_component,
    save_weights,
)


def plugins() -> list[PluginInfo]:
    """Every loaded (or failed) plugin of the process-wide registry."""
    return get_registry().plugins()


def build(kind: str, spec: dict[str, Any] | ComponentSpec, **context: Any) -> Component:
    """Build one component of ``kind`` (``"scheduler"``, ``"denoiser"``, ...) from a spec dict
    such as ``{"type": "ddim", "steps": 30}``."""
    return get_registry().build(kind, spec, **context)


def load_pipeline(spec_or_path: Any, overrides: list[str] | dict[str, Any] | None = None, **kwargs: Any):
    """Build a ``Pipeline`` from a spec file path, a built-in model name or a spec dict.

    ``overrides`` are ``--set`` style: ``["scheduler.steps=30"]`` or ``{"scheduler.type": "euler"}``.
    """
    return Pipeline.load(spec_or_path, overrides=overrides, **kwargs)


__all__ = [
    "PLUGIN_API_VERSION", "__version__", "Component", "ComponentSpec", "Conditioning",
    "Interrupted", "PluginError", "SamplingError", "SfumatoError", "SpecError", "WeightsError",
    "hookimpl", "KINDS", "Autoencoder", "Classifier", "Dataset", "Denoiser", "Encoder", "EncoderOutput",
    "Guidance", "GuidanceContext", "Model", "Predictor", "SamplerStep", "SamplingPlan", "Scheduler", "StepResult",
    "Task", "bind_predictor", "DiffusionSpec", "NoiseSchedule", "Prediction", "PluginInfo",
    "Registry", "get_registry", "set_registry", "RuntimeSpec", "resolve_device", "atomic_write",
    "check_state_dict", "file_sha256", "load_into", "load_weights", "read_metadata", "read_component_spec", "save_component",
    "save_weights", "plugins", "build", "load_pipeline", "ArgumentError", "GenerationResult", "from_pil", "generate",
    "to_pil", "image_grid", "Pipeline", "StepCallback", "StepEvent", "randn", "run_sampler",
    "EvalContext", "retrieval_recall", "topk_accuracy", "Recipe", "SampleContext", "StepContext", "TrainCallback", "TrainingTask", "TrainResult", "TrainSetup",
    "TrainSpec", "collate_examples", "train", "nn",
    "NoiseLevels", "SigmaSchedule", "SigmaScheduleField", "build_sigma_schedule", "spacing",
    "ComponentTable", "SpecPath",
    "Formulation", "TrainingRandom", "batch_view",
    "Adapter", "AdapterSpec", "AdapterTarget", "foreign_module_names", "WeightPatch", "patch_weight",
    "COMBINER", "CombineContext", "Combiner", "CombinerField", "ComponentChoice", "branches",
    "model_patches", "PatchPoint", "PointPatch", "Speedup", "blocks", "conditioners", "rename_by_prefix",
]
