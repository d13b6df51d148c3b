"""Text every request may carry: no control characters, no lone surrogates.

PostgreSQL refuses NUL in text (a NUL in a job name used to be a 500), other control
characters forge log lines and terminal output, and a lone surrogate (``"\\ud800"`` in JSON)
cannot be encoded as UTF-8 at all. So every string field of every request is refused with a
422 naming the field when it holds one: the spec's fields through ``StrictModel`` (its
base), form fields and query and path parameters through ``refuse_control_characters``.

Refused: Unicode categories Cc (C0 controls including tab and newline, DEL, C1 controls) and
Cs (surrogates). Every other character, any script, emoji, is accepted.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def control_character_error(value: str) -> str | None:
    """What is wrong with ``value`` (its first refused character and where), or None."""
    found = _REFUSED.search(value)
    if found is None:
        return None
    char = found.group()
    kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return (
        f"contains {kind}, U+{ord(char):04X}, at position {found.start()}; "
        "remove control characters (NUL, tab, newline, escape, ...) from the text"
    )


def refuse_control_characters(value: str) -> str:
    """``value`` unchanged, or a ValueError saying which character to remove (pydantic turns
    it into a 422 naming the field)."""
    error = control_character_error(value)
    if error is not None:
        raise ValueError(error)
    return value


# A string field that accepts no control characters, for models outside the spec.
SafeStr = Annotated[str, AfterValidator(refuse_control_characters)]
