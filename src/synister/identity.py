"""What determines a run's numbers, and whether a stored run is the same: :class:`RunIdentity`.

Every resumable front-end stores the identity of what it is computing (a prediction run's meta
in the database, ``run.json`` of ``predict-positions``, ``plan.json`` of ``predict-volume``, a
prediction setup's config) and goes on with a stored run only where :meth:`RunIdentity.diff`
finds no difference; otherwise the message names each value that differs, stored and now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synister.files import jsonable

#: reprs longer than this are cut in messages (checksums, long lists)
_SHOWN = 100


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


@dataclass(frozen=True)
class RunIdentity:
    """The values (JSON) that determine a run's numbers.

    ``sections`` name the keys whose values are themselves identities (dicts) compared key by
    key, so that a difference is named ``section.key``; other values compare whole.
    """

    values: dict[str, Any]
    sections: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # as JSON gives it back: what a stored identity is compared with
        object.__setattr__(self, "values", json.loads(json.dumps(jsonable(dict(self.values)))))

    def to_json(self) -> dict[str, Any]:
        """The values as stored."""
        return json.loads(json.dumps(self.values))

    def differences(self, stored: Mapping[str, Any] | None) -> list[tuple[str, bool, Any, Any]]:
        """``(key, was stored, stored value, value now)`` for each key of this identity whose
        stored value differs (keys stored beside them are not compared)."""
        stored = jsonable(dict(stored or {}))
        found = []
        for key, now in self.values.items():
            old = stored.get(key)
            if key in self.sections and isinstance(now, dict) and isinstance(old, dict):
                for sub in now:
                    if sub not in old or old[sub] != now[sub]:
                        found.append((f"{key}.{sub}", sub in old, old.get(sub), now[sub]))
            elif key not in stored or old != now:
                found.append((key, key in stored, old, now))
        return found

    def diff(self, stored: Mapping[str, Any] | None) -> list[str]:
        """``key=stored (now new)`` for each value that differs, then ``key (not stored; now
        new)`` for each the stored run lacks; empty when the stored run is this one."""
        differences = self.differences(stored)
        changed = [
            f"{key}={_shown(old)} (now {_shown(now)})"
            for key, was_stored, old, now in differences
            if was_stored
        ]
        missing = [
            f"{key} (not stored; now {_shown(now)})"
            for key, was_stored, _, now in differences
            if not was_stored
        ]
        return changed + missing
