"""sfumato's benchmark suite: sfumato against diffusers and transformers on the same weights.

Run by hand, never as timed assertions in tests (see docs/benchmarks.md)::

    python -m benchmarks.run --out benchmarks/results/cpu.json --doc docs/benchmarks.md
"""
