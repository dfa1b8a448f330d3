"""The exceptions sfumato raises. Each message says what was wrong, where, and what would be right."""

from __future__ import annotations


class SfumatoError(Exception):
    """Base class of every error sfumato raises on purpose."""


class SpecError(SfumatoError, ValueError):
    """A spec file or spec dict is invalid.

    :param problems: one line per problem, each naming the table path and the field.
    :param source: the file the spec came from, when there is one.
    """

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = where + self.problems[0]
        else:
            message = f"{where}{len(self.problems)} problems:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(message)


class PluginError(SfumatoError):
    """A plugin could not be loaded or registered something invalid."""


class WeightsError(SfumatoError, ValueError):
    """A weights file does not match the model: missing, unexpected or mis-shaped keys, or a
    refused format."""


class SamplingError(SfumatoError, RuntimeError):
    """Sampling produced something unusable (for example NaN), named with the step and component."""


class Interrupted(SfumatoError):
    """Raised by a step callback to stop sampling early; the pipeline returns what it has."""
