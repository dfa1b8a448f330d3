"""Per-step overhead of each sfumato scheduler against its diffusers counterpart.

A trivial model (a multiply) and a small sample isolate the scheduler's own cost. Each run is
``--steps`` steps; the figure is the median over ``--repeats`` runs, divided by the steps.
Prints a markdown table and writes JSON::

    python benchmarks/bench_schedulers.py --steps 200 --repeats 7 --out benchmarks/schedulers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import diffusers
import torch

import sfumato

PAIRS = {
    "ddpm": (diffusers.DDPMScheduler, {"clip_sample": False}),
    "ddim": (diffusers.DDIMScheduler, {"clip_sample": False}),
    "euler": (diffusers.EulerDiscreteScheduler, {}),
    "euler-ancestral": (diffusers.EulerAncestralDiscreteScheduler, {}),
    "heun": (diffusers.HeunDiscreteScheduler, {}),
    "dpmpp-2m": (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
SHAPE = (1, 4, 8, 8)


def time_sfumato(kind: str, steps: int, schedule: sfumato.NoiseSchedule) -> float:
    scheduler = sfumato.build("scheduler", {"type": kind})

    def model(x, t):
        return schedule.to_prediction(0.5 * x, x, t)

    plan = scheduler.plan(schedule, steps)
    x, carry = torch.randn(SHAPE), {}
    noise = torch.randn(SHAPE)
    start = time.perf_counter()
    for i in range(len(plan)):
        x, _, carry = scheduler.step(model, x, plan, i, carry, noise if scheduler.stochastic else None)
    return time.perf_counter() - start


def time_diffusers(kind: str, steps: int) -> float:
    cls, config = PAIRS[kind]
    scheduler = cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **config)
    scheduler.set_timesteps(steps)
    x = torch.randn(SHAPE) * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for t in scheduler.timesteps:
        output = 0.5 * scheduler.scale_model_input(x, t)
        kwargs = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/schedulers.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    schedule = sfumato.NoiseSchedule()
    rows = []
    for kind in PAIRS:
        ours = statistics.median(time_sfumato(kind, args.steps, schedule) for _ in range(args.repeats))
        theirs = statistics.median(time_diffusers(kind, args.steps) for _ in range(args.repeats))
        rows.append({"scheduler": kind, "diffusers": PAIRS[kind][0].__name__,
                     "sfumato_us_per_step": ours / args.steps * 1e6,
                     "diffusers_us_per_step": theirs / args.steps * 1e6})
    print(f"| scheduler | sfumato (us/step) | diffusers class | diffusers (us/step) | ratio |")
    print("|---|---:|---|---:|---:|")
    for row in rows:
        ratio = row["sfumato_us_per_step"] / row["diffusers_us_per_step"]
        print(f"| {row['scheduler']} | {row['sfumato_us_per_step']:.0f} | {row['diffusers']} | "
              f"{row['diffusers_us_per_step']:.0f} | {ratio:.2f} |")
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "diffusers": diffusers.__version__, "threads": 1, "steps": args.steps, "repeats": args.repeats}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"machine": machine, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
