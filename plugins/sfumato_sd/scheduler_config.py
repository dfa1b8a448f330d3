"""A diffusers ``scheduler_config.json`` as sfumato's ``[diffusion]`` and ``[scheduler]`` tables.

diffusers keeps the training schedule (betas, prediction type) and the sampler's settings in one
config; sfumato splits them: ``[diffusion]`` is how the model was trained, ``[scheduler]`` how to
sample. Entries missing from the file take the diffusers class's defaults, as
``SchedulerMixin.from_config`` does, and sfumato's scheduler defaults equal diffusers' for the
same sampler, so a table holds only what the file states, plus the few fields whose defaults
differ (clip_sample; PNDM's set_alpha_to_one; the last step of LMS and PLMS: ``DIFFUSERS_DEFAULTS``).
"""

from __future__ import annotations

import warnings
from typing import Any

import sfumato

#: diffusers scheduler class -> the sfumato scheduler type of the default ``[scheduler]`` (with
#: ``DPMSolverMultistepScheduler``'s ``solver_order`` and ``algorithm_type`` choosing among four:
#: ``multistep_type``). docs/schedulers.md has the same table, with ComfyUI's and the WebUI's names.
SCHEDULER_TYPES = {
    "DDIMScheduler": "ddim", "PNDMScheduler": "pndm", "DDPMScheduler": "ddpm",
    "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-ancestral",
    "HeunDiscreteScheduler": "heun", "DPMSolverMultistepScheduler": "dpmpp-2m",
    "LMSDiscreteScheduler": "lms", "KDPM2DiscreteScheduler": "dpm2",
    "KDPM2AncestralDiscreteScheduler": "dpm2-ancestral", "UniPCMultistepScheduler": "unipc",
    "DEISMultistepScheduler": "deis", "DPMSolverSDEScheduler": "dpmpp-sde",
    "LCMScheduler": "lcm", "TCDScheduler": "tcd", "SASolverScheduler": "sa-solver",
}
#: Fields whose sfumato default differs from the class's diffusers default, stated always.
DIFFUSERS_DEFAULTS = {
    "pndm": {"set_alpha_to_one": False, "lower_order_final": False},  # diffusers' last PLMS step extrapolates
    "lms": {"lower_order_final": False},
}
#: Config entries that become sfumato fields of these types: diffusers name -> sfumato name.
RENAMED = {
    "pndm": {"skip_prk_steps": "skip_prk_steps", "set_alpha_to_one": "set_alpha_to_one"},
    "unipc": {"solver_order": "order", "solver_type": "variant", "disable_corrector": "disable_corrector"},
    "deis": {"solver_order": "order"},
    "dpmpp-2m-sde": {"solver_type": "solver_type"},
}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample"}
#: Settings a sfumato scheduler cannot express, with the only value it reproduces.
UNSUPPORTED = {
    "interpolation_type": "linear", "use_lu_lambdas": False, "use_flow_sigmas": False,
    "timestep_type": "discrete", "final_sigmas_type": "zero", "sigma_min": None, "sigma_max": None,
    "euler_at_final": False, "predict_x0": True, "solver_p": None, "lower_order_final": True,
}


def diffusion_table(config: dict[str, Any], source: str) -> dict[str, Any]:
    """``[diffusion]`` for a diffusers scheduler config (the training schedule)."""
    problems = []
    if config.get("trained_betas") is not None:
        problems.append("trained_betas (an explicit beta table) is not supported; use a named beta_schedule")
    schedule = config.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES:
        problems.append(f"beta_schedule {schedule!r} is not supported (only {', '.join(BETA_SCHEDULES)})")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        problems.append(f"prediction_type {prediction!r} is not supported (only {', '.join(PREDICTIONS)})")
    if problems:
        raise sfumato.SpecError(problems, source=source)
    heun = config.get("_class_name") == "HeunDiscreteScheduler"  # the one class with SD's betas as defaults
    return {
        "timesteps": config.get("num_train_timesteps", 1000),
        "betas": BETA_SCHEDULES[schedule],
        "beta_start": config.get("beta_start", 0.00085 if heun else 0.0001),
        "beta_end": config.get("beta_end", 0.012 if heun else 0.02),
        "prediction": PREDICTIONS[prediction],
        "zero_terminal_snr": bool(config.get("rescale_betas_zero_snr", False)),
    }


def thresholding_fields(config: dict[str, Any]) -> dict[str, Any]:
    """DDPM and DDIM x0 clipping: diffusers clips by default (``clip_sample = true``), sfumato
    does not, so the table always states it."""
    if config.get("thresholding", False):
        return {
            "thresholding": "dynamic",
            "dynamic_thresholding_ratio": config.get("dynamic_thresholding_ratio", 0.995),
            "sample_max_value": config.get("sample_max_value", 1.0),
        }
    if config.get("clip_sample", True):
        return {"thresholding": "clip", "clip_sample_range": config.get("clip_sample_range", 1.0)}
    return {"thresholding": "none"}


def multistep_type(config: dict[str, Any], ignored: list[str]) -> str:
    """The sfumato type of a ``DPMSolverMultistepScheduler`` config: DPM-Solver++ of order 2 or 3,
    as an ODE (``dpmsolver++``) or SDE (``sde-dpmsolver++``) solver."""
    algorithm, order = config.get("algorithm_type", "dpmsolver++"), config.get("solver_order", 2)
    if algorithm not in ("dpmsolver++", "sde-dpmsolver++"):
        ignored.append(f"algorithm_type {algorithm!r} (only dpmsolver++ and sde-dpmsolver++)")
    if order not in (2, 3):
        ignored.append(f"solver_order {order!r} (only 2 and 3)")
    if algorithm == "dpmsolver++" and config.get("solver_type", "midpoint") != "midpoint":
        ignored.append(f"solver_type {config['solver_type']!r} (the ODE solvers take the midpoint form)")
    return ("dpmpp-3m" if order == 3 else "dpmpp-2m") + ("-sde" if algorithm == "sde-dpmsolver++" else "")


def scheduler_table(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The default ``[scheduler]`` for a diffusers scheduler config: the same sampler where
    sfumato has it (DDIM otherwise), with its timestep spacing, ``steps_offset``, sigma schedule
    and the class's own settings. Settings sfumato cannot express are named in a warning."""
    class_name = config.get("_class_name", "DDIMScheduler")
    ignored: list[str] = []
    kind = SCHEDULER_TYPES.get(class_name, "ddim")
    if kind == "dpmpp-2m":
        kind = multistep_type(config, ignored)
    if class_name not in SCHEDULER_TYPES or kind not in sfumato.get_registry().types("scheduler"):
        ignored.append(f"_class_name {class_name!r} (no such sfumato scheduler; sampling with ddim)")
        kind = "ddim"
    table: dict[str, Any] = {"type": kind, **DIFFUSERS_DEFAULTS.get(kind, {})}
    if "timestep_spacing" in config:
        table["spacing"] = config["timestep_spacing"]
    if "steps_offset" in config:
        table["steps_offset"] = config["steps_offset"]
    table.update({field: config[name] for name, field in RENAMED.get(kind, {}).items()
                  if config.get(name) not in (None, [])})
    if kind in ("ddim", "ddpm"):
        table.update(thresholding_fields(config))
    if kind == "ddim":
        table["set_alpha_to_one"] = config.get("set_alpha_to_one", class_name != "PNDMScheduler")
    if kind == "ddpm":
        variance = config.get("variance_type", "fixed_small")
        if variance in ("fixed_small", "fixed_large"):
            table["variance"] = variance
        else:
            ignored.append(f"variance_type {variance!r}")
    if kind not in ("ddim", "ddpm", "pndm"):
        if config.get("use_karras_sigmas"):
            table["sigmas"] = "karras"
        elif config.get("use_exponential_sigmas"):
            table["sigmas"] = "exponential"
        elif config.get("use_beta_sigmas"):
            table["sigmas"] = "beta"  # diffusers fixes alpha = beta = 0.6, the defaults of `beta`
    if kind not in ("ddim", "ddpm") and (config.get("thresholding") or config.get("clip_sample")):
        ignored.append("thresholding / clip_sample (only ddpm and ddim clip x0)")
    ignored += [f"{name} {config[name]!r}" for name, accepted in UNSUPPORTED.items()
                if name in config and config[name] != accepted]
    fields = sfumato.get_registry().get("scheduler", kind).Spec.model_fields
    table = {name: value for name, value in table.items() if name in fields}  # a sampler planning its own way
    if ignored:
        warnings.warn(f"{source}: the default [scheduler] cannot reproduce: {'; '.join(ignored)}", stacklevel=3)
    return table
