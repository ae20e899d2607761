"""Which records' raw bytes hold a key: how the columnar checks tell a JSON null from an
absent key, which Arrow's JSON reader reads alike (a null in the column). A key is searched
for as `"name" :`, which a key of the schema can only match as that key; a record that
writes a key with an escape could spell it without matching, so it is left to the
per-record path (`ESCAPED_KEY`).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contract.masks import bool_mask, mask

# A key written with an escape (`"\u0065xcerpts":`, `"A\/B":`): the key search cannot see it.
ESCAPED_KEY = r'\\.[^"\\]*"\s*:'
# A key name JSON writes as it is (printable ASCII but the quote and backslash).
_LITERAL = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")


class Keys:
    """Which records' bytes hold a key (`"name" :`). The keys expected to be absent from
    most records are first searched for together, and one by one only in the records
    where one of them appears.
    """

    def __init__(self, raw: pa.Array, rare: list[str]) -> None:
        self.raw = raw
        self._rare = set(rare)
        self._some = (
            bool_mask(pc.match_substring_regex(raw, _key_pattern(*rare)))
            if rare
            else np.zeros(len(raw), dtype=bool)
        )
        self._some_rows = np.flatnonzero(self._some)

    def holding(self, name: str) -> np.ndarray | None:
        """Records whose bytes hold `name` as a key; None when it cannot be searched for
        as written (a character JSON escapes).
        """
        if not _LITERAL.fullmatch(name):
            return None
        if name not in self._rare:
            return bool_mask(pc.match_substring_regex(self.raw, _key_pattern(name)))
        out = np.zeros(len(self.raw), dtype=bool)
        if len(self._some_rows):
            subset = self.raw.take(self._some_rows)
            found = pc.match_substring_regex(subset, _key_pattern(name)).fill_null(False)
            out[self._some_rows] = mask(found)
        return out

    def mentioning(self, text: str) -> np.ndarray:
        """Records whose bytes may hold the key `text` (written with escapes or not): those
        that hold its longest run of characters JSON writes as they are; all records when
        it has none.
        """
        runs = re.split(r'["\\\x00-\x1f\x7f-\U0010ffff]+', text)
        longest = max(runs, key=len)
        if not longest:
            return np.ones(len(self.raw), dtype=bool)
        return bool_mask(pc.match_substring_regex(self.raw, re.escape(longest)))


def _key_pattern(*names: str) -> str:
    return '"(?:' + "|".join(re.escape(n) for n in names) + ')"\\s*:'
