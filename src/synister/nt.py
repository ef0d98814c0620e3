"""The one vocabulary of neurotransmitter names.

Every name that enters synister (from a file, a config, the command line) goes through
:func:`canonical`, so the rest of the code only ever sees the canonical lower-case names below.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The six transmitters of the original work, in the original's default class order.
TRANSMITTERS: tuple[str, ...] = (
    "gaba",
    "acetylcholine",
    "glutamate",
    "serotonin",
    "octopamine",
    "dopamine",
)

#: Labels some datasets use for "none of the above" (the male-VNC tables have "others",
#: the original training had an optional "neither" class of non-synaptic locations).
EXTRA_LABELS: tuple[str, ...] = ("others", "neither")

CANONICAL: tuple[str, ...] = TRANSMITTERS + EXTRA_LABELS

#: Entries of a transmitter list that mean "not known" (the original database wrote
#: ``["none"]`` or ``["unknown"]`` for a neuron without a known transmitter).
UNKNOWN_LABELS: frozenset[str] = frozenset({"none", "unknown"})

_ALIASES: dict[str, str] = {
    "gaba": "gaba",
    "ach": "acetylcholine",
    "acetylcholine": "acetylcholine",
    "cholinergic": "acetylcholine",
    "glu": "glutamate",
    "glut": "glutamate",
    "glutamate": "glutamate",
    "5-ht": "serotonin",
    "5ht": "serotonin",
    "ser": "serotonin",
    "sero": "serotonin",
    "serotonin": "serotonin",
    "oa": "octopamine",
    "oct": "octopamine",
    "octopamine": "octopamine",
    "da": "dopamine",
    "dop": "dopamine",
    "dopamine": "dopamine",
    "other": "others",
    "others": "others",
    "neither": "neither",
}


class UnknownTransmitter(ValueError):
    """A transmitter name that is neither canonical nor a known abbreviation."""


def canonical(name: str) -> str:
    """The canonical name of a transmitter, accepting abbreviations in any case (ACh, 5-HT, DA)."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "")
    try:
        return _ALIASES[key]
    except KeyError:
        raise UnknownTransmitter(
            f"unknown transmitter {name!r}; known: {', '.join(CANONICAL)} "
            "(abbreviations GABA, ACh, Glu, 5-HT/ser, OA/oct, DA are accepted)"
        ) from None


def is_unknown_label(name) -> bool:
    """True for an entry of a transmitter list that means "not known" (``none``, ``unknown``)."""
    return name is None or str(name).strip().lower() in UNKNOWN_LABELS


def canonical_set(names: Iterable[str] | None) -> frozenset[str]:
    """Canonical names of a transmitter set; ``None``, empty, ``["none"]`` or ``["unknown"]``
    mean unknown (the empty set). Every reader of transmitter lists goes through here."""
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    return frozenset(canonical(n) for n in names if not is_unknown_label(n))


def set_key(names: Iterable[str]) -> str:
    """Order-free text key of a transmitter set, e.g. ``"gaba,octopamine"``; ``""`` for unknown."""
    return ",".join(sorted(canonical_set(names)))


#: Column names of the field's per-synapse tables (FlyWire's synapse table: gaba, ach, glut,
#: oct, ser, da), by canonical name.
SHORT_NAMES: dict[str, str] = {
    "gaba": "gaba",
    "acetylcholine": "ach",
    "glutamate": "glut",
    "octopamine": "oct",
    "serotonin": "ser",
    "dopamine": "da",
}


def short_name(name: str) -> str:
    """The field's short column name of a class (``acetylcholine`` -> ``ach``); a class
    without one (``others``, ``neither``, anything else) keeps its own name."""
    try:
        return SHORT_NAMES.get(canonical(name), canonical(name))
    except UnknownTransmitter:
        return str(name)
