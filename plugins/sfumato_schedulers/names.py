"""The names other tools give sfumato's samplers and sigma schedules: ComfyUI's ``sampler_name``
and ``scheduler``, the AUTOMATIC1111 WebUI's sampler and schedule type, diffusers' scheduler
class and flags. One public table, registered through the ``register_sampler_aliases`` hook, so
``sfumato.get_registry().resolve_sampler("DPM++ 2M Karras")`` (and ``sfumato generate --sampler``)
give the ``[scheduler]`` table ``{"type": "dpmpp-2m", "sigmas": "karras"}``; docs/schedulers.md
shows the same table.

A sampler name may be followed by a schedule name: ComfyUI's ``"dpmpp_2m karras"``, the WebUI's
``"DPM++ 2M Karras"``. Rows whose type is not registered (samplers not built yet) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class SamplerName:
    """One sfumato sampler configuration and what other tools call it.

    :param table: the ``[scheduler]`` fields (``type`` and any others the names imply).
    :param comfyui: ComfyUI ``sampler_name`` values. :param webui: AUTOMATIC1111 sampler names.
    :param diffusers: the diffusers scheduler class of the same method ("" if none) and
        :param flags: the settings that make it so.
    """

    table: dict[str, Any]
    comfyui: tuple[str, ...] = ()
    webui: tuple[str, ...] = ()
    diffusers: str = ""
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleName:
    """One sigma schedule (``[scheduler] sigmas``) and what other tools call it."""

    sigmas: str | dict[str, Any]
    comfyui: tuple[str, ...] = ()
    webui: tuple[str, ...] = ()
    flags: dict[str, Any] = field(default_factory=dict)  #: diffusers' flag for it, on its sigma-space classes


SAMPLER_NAMES: tuple[SamplerName, ...] = (
    SamplerName({"type": "ddpm"}, ("ddpm",), ("DDPM",), "DDPMScheduler"),
    SamplerName({"type": "ddim"}, (), ("DDIM",), "DDIMScheduler"),
    SamplerName({"type": "euler"}, ("euler",), ("Euler",), "EulerDiscreteScheduler"),
    SamplerName({"type": "euler-ancestral"}, ("euler_ancestral",), ("Euler a",), "EulerAncestralDiscreteScheduler"),
    SamplerName({"type": "heun"}, ("heun",), ("Heun",), "HeunDiscreteScheduler"),
    SamplerName({"type": "dpmpp-2m"}, ("dpmpp_2m",), ("DPM++ 2M",),
                "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    SamplerName({"type": "lms", "lower_order_final": False}, ("lms",), ("LMS",), "LMSDiscreteScheduler"),
    SamplerName({"type": "pndm", "skip_prk_steps": True, "lower_order_final": False}, (), ("PLMS",),
                "PNDMScheduler", {"skip_prk_steps": True}),
    SamplerName({"type": "dpm2"}, ("dpm_2",), ("DPM2",), "KDPM2DiscreteScheduler"),
    SamplerName({"type": "dpmpp-3m"}, (), (),
                "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    SamplerName({"type": "unipc", "variant": "bh1", "order": 3}, ("uni_pc",), ("UniPC",),
                "UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}),
    SamplerName({"type": "unipc", "variant": "bh2", "order": 3}, ("uni_pc_bh2",), (),
                "UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 3}),
    SamplerName({"type": "deis", "order": 3}, ("deis",), (), "DEISMultistepScheduler", {"solver_order": 3}),
    SamplerName({"type": "res-multistep"}, ("res_multistep",), (), ""),
    # The stochastic samplers (issue 18, part B).
    SamplerName({"type": "dpm2-ancestral"}, ("dpm_2_ancestral",), ("DPM2 a",), "KDPM2AncestralDiscreteScheduler"),
    SamplerName({"type": "dpmpp-2s-ancestral"}, ("dpmpp_2s_ancestral",), ("DPM++ 2S a",), ""),
    SamplerName({"type": "dpmpp-sde"}, ("dpmpp_sde", "dpmpp_sde_gpu"), ("DPM++ SDE",), "DPMSolverSDEScheduler"),
    SamplerName({"type": "dpmpp-2m-sde"}, ("dpmpp_2m_sde", "dpmpp_2m_sde_gpu"), ("DPM++ 2M SDE",),
                "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    SamplerName({"type": "dpmpp-2m-sde", "solver_type": "heun"}, ("dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu"),
                ("DPM++ 2M SDE Heun",),
                "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}),
    SamplerName({"type": "dpmpp-3m-sde"}, ("dpmpp_3m_sde", "dpmpp_3m_sde_gpu"), ("DPM++ 3M SDE",),
                "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    SamplerName({"type": "lcm"}, ("lcm",), ("LCM",), "LCMScheduler"),
    SamplerName({"type": "tcd"}, (), (), "TCDScheduler"),
    SamplerName({"type": "restart"}, (), ("Restart",), ""),
    SamplerName({"type": "er-sde"}, ("er_sde",), (), ""),
    SamplerName({"type": "sa-solver"}, ("sa_solver",), (), "SASolverScheduler"),
)

SCHEDULE_NAMES: tuple[ScheduleName, ...] = (
    ScheduleName("default"),
    ScheduleName("simple", ("simple",), ("Simple",)),
    ScheduleName("normal", ("normal",), ("Normal",)),
    ScheduleName("sgm-uniform", ("sgm_uniform",), ("SGM Uniform",)),
    ScheduleName("ddim-uniform", ("ddim_uniform",), ("DDIM",)),
    ScheduleName("karras", ("karras",), ("Karras",), {"use_karras_sigmas": True}),
    ScheduleName("exponential", ("exponential",), ("Exponential",), {"use_exponential_sigmas": True}),
    ScheduleName("polyexponential", (), ("Polyexponential",)),
    ScheduleName("beta", (), (), {"use_beta_sigmas": True}),
    ScheduleName({"type": "beta", "domain": "timestep"}, ("beta",), ("Beta",)),  # on the integer timesteps
    ScheduleName("kl-optimal", ("kl_optimal",), ("KL Optimal",)),
    ScheduleName("linear-quadratic", ("linear_quadratic",), ()),
    ScheduleName("align-your-steps", (), ("Align Your Steps",)),
)


def sampler_aliases(registered: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, [scheduler] table)`` for every ComfyUI and WebUI name of ``SAMPLER_NAMES`` whose
    type is in ``registered`` (the scheduler types), and ``(name, {"sigmas": ...})`` for every
    schedule name. A ComfyUI name spelt like a sfumato type is left out; the WebUI's spellings
    ("DDIM", "Karras") are registered too, so the registry can name a sampler the WebUI's way (the
    ``parameters`` text of an image, ``sfumato.webui_parameters``), but in resolving a name
    sfumato's own names still win and always mean sfumato's defaults (ComfyUI's ``lms`` is
    ``lower_order_final = false``, its ``deis`` order 3, its ``beta`` ``domain = "timestep"``:
    docs/schedulers.md says so beside the names)."""
    own = {name.casefold() for name in registered} | {
        row.sigmas for row in SCHEDULE_NAMES if isinstance(row.sigmas, str)}
    for row in SAMPLER_NAMES:
        if row.table["type"] in registered:
            for name in (*row.comfyui, *row.webui):
                if name.casefold() not in own or name in row.webui:
                    yield name, dict(row.table)
    for row in SCHEDULE_NAMES:
        for name in (*row.comfyui, *row.webui):
            if name.casefold() not in own or name in row.webui:
                yield name, {"sigmas": row.sigmas}
