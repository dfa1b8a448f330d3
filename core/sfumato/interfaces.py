"""The component interfaces of sfumato. Each kind is an abstract class; plugins subclass them.

=============  =========================================================================
kind           contract
=============  =========================================================================
encoder        text or images -> ``EncoderOutput(tokens [B, L, D], pooled [B, D])``
denoiser       ``(x_t, t, cond) -> raw prediction`` (epsilon, v or x0, as trained)
autoencoder    images in [-1, 1] <-> latents (already scaled for the denoiser)
scheduler      plans timesteps; one update per ``step`` given a predictor it may call often
guidance       wraps a predictor into a guided predictor
classifier     noise-aware classifier ``(x_t, t) -> logits`` for classifier guidance
dataset        yields training examples (image, caption and/or label)
task           a named job over a pipeline's components (text-to-image, classify, ...)
adapter        ``[[adapters]]``: LoRA / textual inversion applied to built components
formulation    ``[diffusion]``: how the network's input, output and time relate to sigma (``vp``,
               ``flow``, ``edm``); see ``sfumato.formulation``
sigmas         ``sigmas(formulation, steps) -> [steps]`` decreasing noise levels; selected by a
               scheduler's ``sigmas`` field (``sfumato.sigma_schedule``)
combiner       ``combine(cond, uncond, scale, context) -> Prediction``: classifier-free guidance's
               combination (CFG, APG, CFG-Zero*, ...); selected by a guidance's ``combiner``
               field (``sfumato.combiner``)
=============  =========================================================================

Weighted components (encoders, denoisers, autoencoders) are ``torch.nn.Module`` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .adapter import Adapter
from .combiner import Combiner
from .component import Component
from .conditioning import Conditioning
from .errors import SpecError
from .formulation import Formulation
from .model_patches import PointPatch, patched, perturbation_points
from .prediction import Prediction
from .sigma_schedule import SigmaSchedule

if TYPE_CHECKING:
    from .pipeline import Pipeline

#: ``(x_t, t, cond) -> Prediction``: a denoiser bound to its noise schedule, possibly guided.
#: ``x_t`` is in the variance-preserving parameterisation and ``t`` is a float tensor of shape
#: ``[B]`` of (possibly fractional) training timesteps.
Predictor = Callable[[Tensor, Tensor, Conditioning], Prediction]

#: ``(x_t, t) -> Prediction``: a predictor with its conditioning bound; what schedulers call.
Model = Callable[[Tensor, Tensor], Prediction]


# -- encoders -------------------------------------------------------------------------------


@dataclass
class EncoderOutput:
    """:param tokens: per-token states ``[B, L, D]`` (for cross-attention).
    :param pooled: one embedding per input ``[B, D]`` (projected, for similarity).
    :param mask: ``[B, L]`` True where ``tokens`` hold real tokens (text encoders)."""

    tokens: Tensor
    pooled: Tensor
    mask: Tensor | None = None


class Encoder(Component, nn.Module, ABC):
    """Turns text or images into embeddings. A text encoder owns its tokenizer."""

    kind: ClassVar[str] = "encoder"
    modality: ClassVar[Literal["text", "image"]]

    @abstractmethod
    def encode(self, inputs: list[str] | Tensor) -> EncoderOutput:
        """Encode a list of strings (text) or an image batch ``[B, 3, H, W]`` in [-1, 1] (image)."""

    @property
    def embed_dim(self) -> int:
        """Width of ``pooled``."""
        raise NotImplementedError


# -- denoisers ------------------------------------------------------------------------------


class Denoiser(Component, nn.Module, ABC):
    """A network ``(x_t, t, cond) -> raw prediction``, in the parameterisation it was trained with.

    ``t`` is a float tensor ``[B]`` of training timesteps (fractional values are allowed).
    The noise formulation is not part of the denoiser; ``Formulation.predict`` calls it and turns the
    raw output into a ``Prediction``.
    """

    kind: ClassVar[str] = "denoiser"

    in_channels: int
    out_channels: int
    #: The class label that means "no class" (trained with condition dropout), used as the
    #: negative for classifier-free guidance of class-conditional models; None if there is none.
    null_label: int | None = None
    #: Labels a class-conditional denoiser accepts: 0 to ``num_classes - 1`` (plus ``null_label``).
    #: Generation checks requested labels against it, so a wrong label is an error that says the
    #: range rather than an index error deep in an embedding; None: not declared, not checked.
    num_classes: int | None = None
    #: The block classes this denoiser repeats (transformer blocks, residual blocks): ``[runtime]
    #: compile`` compiles each class once and every instance shares the compiled code (regional
    #: compilation, as diffusers' ``_repeated_blocks``) instead of tracing the whole forward. A
    #: listed block must take tensors (and fixed Python values) and return a tensor; Python state it
    #: reads (a model patch applied to a point inside it) is guarded, and a change recompiles it.
    #: Empty: the whole forward is compiled (``sfumato.runtime.compile_denoiser``).
    repeated_blocks: ClassVar[tuple[type[nn.Module], ...]] = ()

    @abstractmethod
    def forward(self, x: Tensor, t: Tensor, cond: Conditioning | None = None) -> Tensor:
        """:param x: ``[B, C, H, W]`` noisy sample. :param t: ``[B]`` timesteps.
        :returns: ``[B, C, H, W]`` raw prediction."""

    def perturbation_points(self) -> dict[str, str]:
        """The named points where a model patch may change a forward (``sfumato.model_patches``):
        module name -> kind (``self-attention``, ``cross-attention``, ``block``, ``deep-branch``). A denoiser
        advertises a point by building it from a module that inherits ``PatchPoint``; guidance
        (PAG, SEG, skip-layer) and speed plugins (step caches, token merging) select them by name."""
        return perturbation_points(self)

    def patched(self, patches: Mapping[str, Sequence[PointPatch]]) -> AbstractContextManager[None]:
        """A ``with`` block in which the forwards run ``patches`` (point name -> ``PointPatch``es,
        each on its batch rows) at those points (``sfumato.model_patches.patched``)."""
        return patched(self, patches)


def bind_predictor(denoiser: Callable[..., Tensor], schedule: Formulation) -> Predictor:
    """The unguided predictor: run the denoiser as its formulation says (input, time) and convert
    its output (``Formulation.predict``)."""

    def predict(x: Tensor, t: Tensor, cond: Conditioning) -> Prediction:
        return schedule.predict(denoiser, x, t, cond)

    return predict


# -- autoencoders ---------------------------------------------------------------------------


class Autoencoder(Component, nn.Module, ABC):
    """Images in [-1, 1] ``[B, 3, H, W]`` <-> latents ``[B, latent_channels, H/downscale, W/downscale]``.

    ``encode`` returns latents already scaled (and shifted) for the denoiser; ``decode`` undoes it.
    """

    kind: ClassVar[str] = "autoencoder"

    latent_channels: int
    downscale: int

    @abstractmethod
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] to scaled latents (sampled from the posterior when it has one)."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents to images in [-1, 1] (not clamped)."""


# -- schedulers -----------------------------------------------------------------------------


@dataclass
class SamplingPlan:
    """The schedule a scheduler will follow for one run.

    :param timesteps: ``[N]`` the training timestep given to the model at each step (float).
    :param sigmas: ``[N + 1]`` the noise level at each step boundary, ``sqrt((1 - a) / a)``;
        the last one is the level the run ends at (usually 0).
    :param init_noise_sigma: unit-variance noise is multiplied by this to start a full-strength run.
    :param schedule: the model's training schedule the plan was made for.
    :param extra: scheduler-specific per-step tensors (for example DDIM's previous timesteps).
    """

    timesteps: Tensor
    sigmas: Tensor
    init_noise_sigma: float
    schedule: Formulation
    extra: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def to(self, device: torch.device | str) -> SamplingPlan:
        extra = {k: v.to(device) for k, v in (self.extra or {}).items()}
        return SamplingPlan(
            self.timesteps.to(device), self.sigmas.to(device), self.init_noise_sigma, self.schedule, extra
        )


class StepResult(NamedTuple):
    """What one scheduler step returns.

    :param x: the sample after the step, in the scheduler's working space.
    :param denoised: the x0 prediction the step used (for previews and callbacks).
    :param carry: tensors the next step needs (multistep history); ``{}`` for one-step methods.
    """

    x: Tensor
    denoised: Tensor
    carry: dict[str, Tensor]


class Scheduler(Component, ABC):
    """Samples a trajectory: ``plan`` picks the noise levels, ``step`` performs one update.

    A scheduler keeps no state between runs: everything a step needs arrives in its arguments
    (the plan, the step index, the ``carry`` returned by the previous step, and ``noise`` for
    stochastic methods, drawn by the caller from a seeded CPU generator). ``step`` must not
    synchronise with the host, so ``torch.compile(step, fullgraph=True)`` works.
    """

    kind: ClassVar[str] = "scheduler"
    #: True when ``step`` consumes fresh noise (ancestral and SDE samplers).
    stochastic: ClassVar[bool] = False
    #: How many times ``step`` calls the model (Heun: 2).
    model_calls_per_step: ClassVar[int] = 1
    #: Independent standard-normal draws ``step`` takes per step when ``stochastic``: 1 gives
    #: ``noise`` shaped like ``x``; k > 1 gives ``[k, *x.shape]`` (an SDE solver's two stages).
    noise_draws: ClassVar[int] = 1
    #: Convergence order of the deterministic solver (Euler, DDIM: 1; Heun, DPM-Solver++(2M): 2): as
    #: the steps double, its error to the exact probability-flow solution shrinks ~2^order times.
    #: The conformance kit measures it on Gaussian data, where the exact solution is known.
    order: ClassVar[int] = 1

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def plan(self, schedule: Formulation, steps: int | None = None, strength: float = 1.0) -> SamplingPlan:
        """Choose the timesteps for ``steps`` steps (default: the spec's). ``strength < 1`` keeps
        only the last ``strength`` fraction of the trajectory (image-to-image)."""

    def noise_levels(self, plan: SamplingPlan) -> Tensor | None:
        """Brownian noise: ``[N, noise_draws + 1]`` the noise levels that step ``i``'s draws span
        (draw ``j`` is the unit-variance increment of one Brownian path from level ``j`` to
        ``j + 1``: ``sfumato.brownian``), so that runs with any number of steps see the same path,
        as k-diffusion's ``BrownianTreeNoiseSampler``. None (the default): independent draws."""
        return None

    @abstractmethod
    def step(
        self,
        model: Model,
        x: Tensor,
        plan: SamplingPlan,
        i: int,
        carry: dict[str, Tensor] | None = None,
        noise: Tensor | None = None,
    ) -> StepResult:
        """Advance ``x`` from step boundary ``i`` to ``i + 1``."""

    def noised(self, x0: Tensor, noise: Tensor, plan: SamplingPlan, i: int) -> Tensor:
        """``x0`` noised to step boundary ``i`` of ``plan``, in this scheduler's working space.

        Used to start image-to-image runs (``i = 0``) and to blend the known region when
        inpainting. The default is the variance-preserving ``sqrt(a) x0 + sqrt(1 - a) noise``;
        sigma-space schedulers override it with ``x0 + sigma * noise``.
        """
        sigma = plan.sigmas[i]
        a = 1 / (1 + sigma**2)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


# -- guidance -------------------------------------------------------------------------------


@dataclass(eq=False)
class SamplerStep:
    """Where the sampler is: the step it is taking, of how many. One record per run, shared by
    the run's guidance (``GuidanceContext.step``) and updated in place by ``run_sampler`` before
    each scheduler step, so a guidance method reads the current step at call time.

    Every model call a step makes sees that step's ``index``: Heun's second call (the corrector,
    at the trial point on boundary ``i + 1``, with ``t = plan.timesteps[i + 1]``) still sees
    ``index = i``, and so do DPM-2's and the SDE solvers' intermediate calls; a guidance method
    that needs the call's own noise level reads its ``t``. Image-to-image runs count the steps of
    their (shortened) plan.

    Compilation: ``index`` is a Python int, right for decisions that change the work (skip a
    forward pass); a ``torch.compile``-d guided predictor that reads it guards on it and
    recompiles as it changes (per value, then wherever a decision on it flips). ``index_tensor``
    holds the same value as a 0-d int64 tensor on the plan's device, filled in place, so
    arithmetic on it (``plan.sigmas[index_tensor]``, ``torch.where(index_tensor < k, ...)``)
    compiles once for the whole run and never synchronises with the host.

    :param index: the step being taken, 0 to ``count - 1`` (0 outside a run).
    :param count: the steps of the run's plan (0 when no run has started: a predictor called
        outside ``run_sampler``).
    :param index_tensor: ``index`` as a 0-d int64 tensor.
    """

    index: int = 0
    count: int = 0
    index_tensor: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))

    @classmethod
    def for_plan(cls, plan: SamplingPlan) -> SamplerStep:
        """The record of a run of ``plan``, before its first step (its tensor on the plan's device)."""
        return cls(0, len(plan), torch.zeros((), dtype=torch.long, device=plan.timesteps.device))

    def enter(self, index: int) -> None:
        """Move to step ``index`` (``run_sampler`` calls it before each scheduler step)."""
        self.index = index
        self.index_tensor.fill_(index)

    def within(self, start: float, stop: float) -> bool:
        """Whether the step lies in the window ``start <= index / count < stop`` of the run, given
        as fractions of its steps (a method's ``start`` / ``stop`` fields); True outside a run."""
        return self.count == 0 or start <= self.index / self.count < stop


@dataclass
class GuidanceContext:
    """What a guidance method may use besides the predictor it wraps: one per run, made before
    the first ``wrap`` and shared by every ``[[guidance]]`` entry of the run.

    :param schedule: the model's noise schedule.
    :param components: the pipeline's built components by table name (``denoiser``,
        ``autoencoder``, ``text_encoder``, ``image_encoder``, ``classifier``, ...).
    :param prompts: the prompts of this run, one per sample, when there are any.
    :param labels: the class labels of this run, when there are any.
    :param generator: a seeded generator for methods that draw random numbers (CLIP cutouts).
    :param plan: the run's sampling plan (its ``timesteps`` and ``sigmas``), set before ``wrap``;
        None when the predictor is used outside a sampling run.
    :param step: the step the sampler is taking (``SamplerStep``), updated in place by
        ``run_sampler``: read it when the guided predictor is called, not in ``wrap``.
    :param branches: the branches (``sfumato.branches.Branch``) that guidance wrapped after the
        latest batching guidance asked it to compute; see ``open_batch`` and ``add_branch``.
    :param conditioner: ``prompts -> Conditioning``, what ``encode`` calls: set by
        ``sfumato.blocks.guided_model`` (``sfumato.blocks.prompt_conditioner``); None in a context
        built by hand, where ``encode`` uses ``components["text_encoder"]`` alone.
    """

    schedule: Formulation
    components: dict[str, Any]
    prompts: list[str] | None = None
    labels: Tensor | None = None
    generator: torch.Generator | None = None
    plan: SamplingPlan | None = None
    step: SamplerStep = field(default_factory=SamplerStep)
    branches: list[Any] | None = None
    conditioner: Callable[[list[str]], Conditioning] | None = None

    def encode(self, prompts: list[str]) -> Conditioning:
        """The full conditioning of ``prompts``, one row each and without a negative, built as the
        call built its own: the pipeline's ``[text_encoder]``, then every component's
        ``extra_conditioning`` (``sfumato.conditioners``: SDXL's second text encoder, pooled
        ``text_embeds`` and ``time_ids``; a ControlNet's image) with the call's size and inputs,
        on the pipeline's device and dtype. For guidance that needs the prediction of another
        prompt (perp-neg's empty one): batch it with the call's rows as a ``Branch``. Call it when
        the guided predictor runs or once in ``wrap``; it encodes each time it is called.

        :raises SpecError: when the pipeline has no ``[text_encoder]``.
        """
        if self.conditioner is not None:
            return self.conditioner(list(prompts))
        encoder = self.components.get("text_encoder")
        if encoder is None:
            raise SpecError("guidance asked for the conditioning of a prompt, but the pipeline has no [text_encoder]")
        out = encoder.encode(list(prompts))
        return Conditioning(tokens=out.tokens, pooled=out.pooled, mask=out.mask)

    def open_batch(self) -> list[Any]:
        """Called in ``wrap`` by a guidance method that runs one batched forward per call (``cfg``):
        the branches that guidance wrapped after it declares are collected in the returned list,
        for it to compute as more rows of that forward (``sfumato.branches.evaluate``)."""
        self.branches = []
        return self.branches

    def add_branch(self, branch: Any) -> bool:
        """Declare ``branch`` to the nearest batching guidance wrapped before this one. False when
        there is none: the declaring method then computes it itself (``sfumato.branches.with_branch``
        does either)."""
        if self.branches is None:
            return False
        self.branches.append(branch)
        return True


class Guidance(Component, ABC):
    """Wraps a predictor into a guided predictor. Several compose in spec order.

    State per run: ``wrap`` is called once per sampling run (``generate`` calls it again for
    each chunk of a large call), with that run's context, before the first step. State a method
    keeps across the model calls of a run (a momentum buffer, a cache, a running average) lives
    in the closure ``wrap`` returns, so it starts afresh every run and the same pipeline called
    twice gives identical output; never keep it on ``self``, which every run (and every thread
    of a server) shares. The step a call belongs to is ``context.step`` (see ``SamplerStep``).
    """

    kind: ClassVar[str] = "guidance"

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def wrap(self, predictor: Predictor, context: GuidanceContext) -> Predictor:
        """Return a predictor with the same signature that applies this guidance; called once
        per run (see the class docstring for state)."""


class Speedup(Component, ABC):
    """Makes a run's denoiser forwards cheaper: a step cache, token merging (``[[speedups]]``).

    ``wrap`` receives the *unguided* predictor (``bind_predictor``; the denoiser run as its
    formulation says) and returns one with the same signature; every ``[[guidance]]`` entry then
    wraps the result, so a speedup sees each forward of the run once, with the whole batch
    guidance makes (``[negative, positive, branches]``). Several speedups compose in spec order
    (the last wraps the others). A speedup changes the work, not the method: a neutral one (its
    ``neutral()`` is True) must return the predictor it is given, so the output is bit-identical.

    Most speedups apply model patches (``sfumato.model_patches``) to the points the denoiser
    advertises, for the forwards inside their predictor (``with denoiser.patched(...)``), and
    read the step a call belongs to from ``context.step`` (``SamplerStep``) to decide whether to
    compute or to reuse. State per run (the cached features) lives in the closure ``wrap`` returns,
    exactly as for guidance: ``wrap`` is called once per run, so the same pipeline called twice
    gives identical output. Keep decisions on Python values (the step index, shapes), not on
    tensor values, where the method allows it: the sampling loop then has no host
    synchronisation.
    """

    kind: ClassVar[str] = "speedup"

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def wrap(self, predictor: Predictor, context: GuidanceContext) -> Predictor:
        """Return a predictor with the same signature that runs the denoiser more cheaply;
        called once per run, before any guidance is wrapped (see the class docstring)."""

    def neutral(self) -> bool:
        """Whether this speedup changes nothing (then ``wrap`` returns its predictor)."""
        return False


# -- classifiers ----------------------------------------------------------------------------


class Classifier(Component, nn.Module, ABC):
    """A noise-aware classifier ``(x_t, t) -> logits [B, num_classes]`` (Dhariwal & Nichol 2021),
    on pixels or latents; classifier guidance follows the gradient of its log-probability."""

    kind: ClassVar[str] = "classifier"

    num_classes: int

    @abstractmethod
    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """:param x: ``[B, C, H, W]`` noisy sample. :param t: ``[B]`` timesteps. :returns: logits."""


# -- datasets -------------------------------------------------------------------------------


class Dataset(Component, torch.utils.data.Dataset, ABC):
    """Training examples: each item is a dict with ``image`` (``[3, H, W]`` in [-1, 1]) and any of
    ``caption`` (str), ``label`` (int) and ``attributes`` (dict)."""

    kind: ClassVar[str] = "dataset"

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> dict[str, Any]: ...


# -- tasks ----------------------------------------------------------------------------------


class Task(Component, ABC):
    """A named job over a pipeline's components (``text-to-image``, ``image-to-image``, ...).

    ``required`` names the spec tables the task needs; the pipeline checks them when it is built.
    """

    kind: ClassVar[str] = "task"
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def run(self, pipeline: Pipeline, *args: Any, **kwargs: Any) -> Any:
        """Run the job with the pipeline's components."""


KINDS: dict[str, type[Component]] = {
    cls.kind: cls
    for cls in (Encoder, Denoiser, Autoencoder, Scheduler, Guidance, Classifier, Dataset, Task, SigmaSchedule,
                Formulation, Adapter, Combiner, Speedup)
}
