"""NoiseSchedule on other devices."""

from __future__ import annotations

import torch

from sfumato import NoiseSchedule


def test_alpha_bar_on_another_device_copies_its_table_once():
    """The sampling loop calls ``alpha_bar`` every step with timesteps on the model's device: the
    table moves there once (a host-to-device copy per step made a CUDA run wait every step)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CrossDeviceCopies(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and "device" in kwargs and kwargs["device"] != args[0].device:
                CrossDeviceCopies.count += 1
            return func(*args, **kwargs)

    schedule = NoiseSchedule()
    t = torch.tensor([10.0, 500.5], device="meta")  # a device every machine has
    with CrossDeviceCopies():
        for _ in range(5):
            assert schedule.alpha_bar(t).device.type == "meta"
    assert CrossDeviceCopies.count == 1
