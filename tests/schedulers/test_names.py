"""The name table (``sfumato_schedulers.names``) agrees with the diffusers config mapping of the
SD plugin and with docs/schedulers.md: every diffusers class and flags it lists loads as the
sampler the table names, and every name it lists is in the docs."""

from __future__ import annotations

import warnings
from pathlib import Path

import diffusers
import pytest

import sfumato
import sfumato_schedulers
import sfumato_sd
from sfumato_schedulers.names import SAMPLER_NAMES, SCHEDULE_NAMES

#: diffusers' schedulers call numpy on tensors while they are set up, warning each time.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

DOC = (Path(__file__).parents[2] / "docs" / "schedulers.md").read_text()
REGISTERED = [row for row in SAMPLER_NAMES if row.table["type"] in sfumato_schedulers.SCHEDULERS_BY_TYPE]


@pytest.mark.parametrize("row", [row for row in REGISTERED if row.diffusers], ids=lambda row: str(row.table))
def test_a_diffusers_config_of_the_class_loads_as_the_named_sampler(row):
    config = dict(getattr(diffusers, row.diffusers)(**row.flags).config)  # every setting, as save_pretrained writes
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing of the class's settings is lost
        table = sfumato_sd.scheduler_table({**config, "_class_name": row.diffusers}, "scheduler_config.json")
    assert {name: table.get(name) for name in row.table} == row.table
    sfumato.build("scheduler", table)


@pytest.mark.parametrize("row", [row for row in SCHEDULE_NAMES if row.flags], ids=lambda row: str(row.sigmas))
def test_diffusers_sigma_flags_load_as_the_named_schedule(row):
    config = dict(diffusers.EulerDiscreteScheduler(**row.flags).config)
    table = sfumato_sd.scheduler_table({**config, "_class_name": "EulerDiscreteScheduler"}, "scheduler_config.json")
    assert table["sigmas"] == row.sigmas


def test_the_docs_name_table_lists_every_name():
    section = DOC.split("\n## Names in other tools\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for row in (*SAMPLER_NAMES, *SCHEDULE_NAMES) for name in (*row.comfyui, *row.webui)
               if f"`{name}`" not in section and f'"{name}"' not in section]
    missing += [row.diffusers for row in SAMPLER_NAMES if row.diffusers and row.diffusers not in section]
    missing += [row.table["type"] for row in SAMPLER_NAMES if f"`{row.table['type']}`" not in section]
    assert not missing, f"docs/schedulers.md's name table lacks {missing}"
