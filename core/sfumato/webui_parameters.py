"""The AUTOMATIC1111 WebUI's ``parameters`` text, written beside the lock in a PNG so that tools
that read WebUI images (image browsers, civitai, ComfyUI's loaders) show a sfumato image's
settings::

    a red circle above a blue square
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: sd15

The sampler and schedule names come from the names plugins register for them
(``register_sampler_aliases``: the WebUI's own spellings), through the registry. The lock stays
the record that replays a run; this text is for other tools to read.
"""

from __future__ import annotations

from typing import Any

from .registry import Registry


def webui_parameters(lock: dict[str, Any], registry: Registry, model: str | None = None) -> str:
    """The ``parameters`` text of the run ``lock`` records (``sfumato.outputs.make_lock``).

    :param model: the model's name for the ``Model`` field (default: the denoiser's weights file).
    """
    arguments, spec = lock["arguments"], lock["spec"]
    prompt = arguments.get("prompt")
    negative = arguments.get("negative_prompt")
    lines = [first(prompt) or ""]
    if first(negative):
        lines.append(f"Negative prompt: {first(negative)}")
    scheduler = dict(spec.get("scheduler") or {})
    sampler, schedule = webui_sampler(scheduler, registry)
    fields: list[tuple[str, Any]] = [("Steps", arguments.get("steps") or scheduler.get("steps")),
                                     ("Sampler", sampler), ("Schedule type", schedule)]
    scales = [g.get("scale") for g in spec.get("guidance") or [] if g.get("type") == "cfg"]
    fields.append(("CFG scale", f"{scales[0]:g}" if scales and scales[0] is not None else None))
    fields += [("Seed", arguments.get("seed")), ("Size", f"{arguments.get('width')}x{arguments.get('height')}")]
    weights = lock.get("weights", {}).get("denoiser.weights")
    fields.append(("Model hash", weights[:10] if isinstance(weights, str) else None))
    path = (spec.get("denoiser") or {}).get("weights")
    fields.append(("Model", model or (str(path).replace("\\", "/").rstrip("/").split("/")[-1] if path else None)))
    if arguments.get("image"):
        fields.append(("Denoising strength", arguments.get("strength")))
    if first(arguments.get("labels")) is not None:
        fields.append(("Class label", first(arguments.get("labels"))))
    lines.append(", ".join(f"{name}: {value}" for name, value in fields if value is not None))
    return "\n".join(lines)


def first(value: Any) -> Any:
    """The first of a list (a call of several prompts is one image per prompt; a grid names the first)."""
    return value[0] if isinstance(value, list) and value else value


def webui_sampler(scheduler: dict[str, Any], registry: Registry) -> tuple[str | None, str | None]:
    """``(sampler, schedule type)`` as the WebUI names them for a ``[scheduler]`` table: the most
    specific registered sampler name whose fields the table has, preferring the WebUI's spellings
    (they have capitals: "DPM++ 2M", "Euler a"; ComfyUI's are lower case), else the scheduler's
    type; the schedule's registered name, or "Automatic" for the sampler's default sigmas."""
    kind = scheduler.get("type")
    if kind is None:
        return None, None
    full = dict(scheduler)
    try:  # the fields the table leaves at their defaults
        full = {**registry.get("scheduler", kind).Spec.model_validate(scheduler).model_dump(mode="json"), **scheduler}
    except Exception:  # an invalid table still gets its type
        pass
    matches = [alias for alias in registry.sampler_aliases.values()
               if all(full.get(key) == value for key, value in alias.table.items())]
    sampler = best_name(matches) or kind
    sigmas = full.get("sigmas", "default")
    name = sigmas.get("type") if isinstance(sigmas, dict) else sigmas
    if name in (None, "default"):
        return sampler, "Automatic"
    schedules = [alias for alias in registry.schedule_aliases.values()
                 if alias.table.get("sigmas") in (sigmas, name)]
    return sampler, best_name(schedules) or str(name)


def best_name(aliases: list[Any]) -> str | None:
    """The most specific alias (the largest table), a capitalised (WebUI) spelling first."""
    if not aliases:
        return None
    return max(aliases, key=lambda a: (len(a.table), any(c.isupper() for c in a.name))).name
