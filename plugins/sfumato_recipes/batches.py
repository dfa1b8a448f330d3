"""Reading fields of a training batch, with errors that say which dataset field is missing."""

from __future__ import annotations

from typing import Any

import sfumato


def require_field(batch: dict[str, Any], key: str, task: str) -> Any:
    """``batch[key]``, or a SpecError saying the task needs datasets that yield ``key``."""
    if key not in batch:
        present = sorted(k for k in batch if k not in ("index", "epoch"))
        raise sfumato.SpecError(f"task {task!r} needs a [dataset] whose items have {key!r}; its items have {present}")
    return batch[key]
