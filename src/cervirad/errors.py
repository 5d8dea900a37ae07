"""Error family. Every error a user can fix is a :class:`CerviradError`.

The CLI turns a ``CerviradError`` into one line on stderr and exit code 2; any other
exception is an internal error (exit code 1). Messages follow one pattern:
what failed, for which case, what was found, and how to fix it.
"""
from __future__ import annotations


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with the length said (a 1,000,000-character id is never echoed)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class CerviradError(Exception):
    """Base class: bad input or configuration the user can fix (exit code 2)."""

    exit_code = 2


class ConfigError(CerviradError):
    """The configuration file or a ``--set`` override is invalid."""


class InputError(CerviradError):
    """An input file, table or volume is missing, unreadable or inconsistent."""


class CohortValidationError(InputError):
    """One or more cohort problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "cohort validation failed"
        more = (f" (+{len(self.problems) - 1} more problem(s), listed above and in run.json)"
                if len(self.problems) > 1 else "")
        super().__init__(head + more)
