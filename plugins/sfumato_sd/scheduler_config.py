"""A diffusers ``scheduler_config.json`` as sfumato's ``[diffusion]`` and ``[scheduler]`` tables.

diffusers keeps the training schedule (betas, prediction type) and the sampler's settings in one
config; sfumato splits them: ``[diffusion]`` is how the model was trained, ``[scheduler]`` how to
sample. Entries missing from the file take the diffusers class's defaults, as
``SchedulerMixin.from_config`` does, and sfumato's scheduler defaults equal diffusers' for the
same sampler, so a table holds only what the file states (plus clip_sample, whose defaults
differ).
"""

from __future__ import annotations

import warnings
from typing import Any

import sfumato

#: diffusers scheduler class -> the sfumato scheduler type of the default ``[scheduler]``.
#: PNDM, SD 1.x's released choice, has no sfumato implementation: DDIM visits the same timesteps
#: with the same spacing settings (a documented substitution, not warned about).
SCHEDULER_TYPES = {
    "DDIMScheduler": "ddim", "PNDMScheduler": "ddim", "DDPMScheduler": "ddpm",
    "EulerDiscreteScheduler": "euler", "EulerAncestralDiscreteScheduler": "euler-ancestral",
    "HeunDiscreteScheduler": "heun", "DPMSolverMultistepScheduler": "dpmpp-2m",
}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "sample"}
#: Settings a sfumato scheduler cannot express, with the only value it reproduces.
UNSUPPORTED = {
    "interpolation_type": "linear", "use_lu_lambdas": False, "use_flow_sigmas": False,
    "timestep_type": "discrete", "final_sigmas_type": "zero", "sigma_min": None, "sigma_max": None,
    "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint", "euler_at_final": False,
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


def scheduler_table(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The default ``[scheduler]`` for a diffusers scheduler config: the same sampler where
    sfumato has it (DDIM otherwise), with its timestep spacing, ``steps_offset`` and sigma
    spacing. Settings sfumato cannot express are named in a warning."""
    class_name = config.get("_class_name", "DDIMScheduler")
    kind = SCHEDULER_TYPES.get(class_name, "ddim")
    ignored = [f"_class_name {class_name!r} (no such sfumato scheduler; sampling with ddim)"] \
        if class_name not in SCHEDULER_TYPES else []
    table: dict[str, Any] = {"type": kind}
    if "timestep_spacing" in config:
        table["spacing"] = config["timestep_spacing"]
    if "steps_offset" in config:
        table["steps_offset"] = config["steps_offset"]
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
    if kind not in ("ddim", "ddpm"):
        if config.get("use_karras_sigmas"):
            table["sigmas"] = "karras"
        elif config.get("use_exponential_sigmas"):
            table["sigmas"] = "exponential"
        elif config.get("use_beta_sigmas"):
            table["sigmas"] = "beta"  # diffusers fixes alpha = beta = 0.6, the defaults of `beta`
        if config.get("thresholding") or config.get("clip_sample"):
            ignored.append("thresholding / clip_sample (only ddpm and ddim clip x0)")
    ignored += [f"{name} {config[name]!r}" for name, accepted in UNSUPPORTED.items()
                if name in config and config[name] != accepted]
    if ignored:
        warnings.warn(f"{source}: the default [scheduler] cannot reproduce: {'; '.join(ignored)}", stacklevel=3)
    return table
