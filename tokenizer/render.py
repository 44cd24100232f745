"""SID token strings for the LLM: ``<a_12><b_201><c_7>`` (format configurable), parsing, special tokens."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_TEMPLATE = "<{level}_{code}>"
DEFAULT_LEVEL_NAMES = string.ascii_lowercase
DEFAULT_ITEM_TEMPLATE = "<item_{code}>"


@dataclass(frozen=True)
class TokenFormat:
    """How one SID entry becomes a token. ``hybrid``: the last entry is an item ordinal token."""

    template: str = DEFAULT_TEMPLATE
    level_names: str = DEFAULT_LEVEL_NAMES
    item_template: str = DEFAULT_ITEM_TEMPLATE
    hybrid: bool = False

    def __post_init__(self):
        for name, tpl in (("template", self.template), ("item_template", self.item_template)):
            if "{code}" not in tpl:
                raise ValueError(f"{name} {tpl!r} must contain {{code}}")
        if "{level}" not in self.template:
            raise ValueError(f"template {self.template!r} must contain {{level}}")
        if len(set(self.level_names)) != len(self.level_names):
            raise ValueError("level_names must be distinct characters")

    def token(self, level: int, code: int, *, length: int | None = None) -> str:
        if self.hybrid and length is not None and level == length - 1:
            return self.item_template.format(code=int(code))
        if level >= len(self.level_names):
            raise ValueError(f"no level name for level {level}: level_names has {len(self.level_names)}")
        return self.template.format(level=self.level_names[level], code=int(code))

    def render(self, sid: Sequence[int]) -> str:
        return "".join(self.token(i, c, length=len(sid)) for i, c in enumerate(sid))

    def item_token(self, sid: Sequence[int]) -> str | None:
        return self.item_template.format(code=int(sid[-1])) if self.hybrid else None

    def parse(self, text: str, *, length: int | None = None) -> list[int]:
        """Inverse of :meth:`render`; raises ``ValueError`` on anything that is not a valid SID string."""
        out: list[int] = []
        pos = 0
        while pos < len(text):
            level = len(out)
            is_item = self.hybrid and length is not None and level == length - 1
            tpl = self.item_template if is_item else self.template
            pattern = re.escape(tpl).replace(re.escape("{code}"), r"(\d+)")
            if not is_item:
                if level >= len(self.level_names):
                    raise ValueError(f"too many levels in SID string {text!r}")
                pattern = pattern.replace(re.escape("{level}"), re.escape(self.level_names[level]))
            m = re.compile(pattern).match(text, pos)
            if not m:
                raise ValueError(f"not a SID string at position {pos}: {text!r}")
            out.append(int(m.group(1)))
            pos = m.end()
        if length is not None and len(out) != length:
            raise ValueError(f"SID string {text!r} has {len(out)} levels, expected {length}")
        return out

    def special_tokens(self, level_sizes: Sequence[int]) -> list[str]:
        """Every token the LLM vocabulary needs: codes 0..size-1 of each level, in level order."""
        length = len(level_sizes)
        return [self.token(level, code, length=length) for level, size in enumerate(level_sizes) for code in range(size)]


def render(sid: Sequence[int], fmt: TokenFormat | None = None) -> str:
    """``[12, 201, 7] -> "<a_12><b_201><c_7>"`` with the default format."""
    return (fmt or TokenFormat()).render(sid)


def render_many(sids: Iterable[Sequence[int]], fmt: TokenFormat | None = None) -> list[str]:
    fmt = fmt or TokenFormat()
    return [fmt.render(s) for s in sids]
