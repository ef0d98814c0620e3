"""How a split's neurons fall into its parts: the split balances synapse shares, not neurons.

A transmitter with a few neurons of many synapses and many neurons of few can meet every synapse
target with most of its neurons in one part (male-VNC glutamate: 11 train, 7 validation and 47
test bodies), and neuron-level accuracy then rests on other neurons than synapse-level accuracy.
Nothing is wrong with such a split, but it must not pass unmentioned.
"""

from __future__ import annotations

from collections.abc import Mapping

#: a part holds a lopsided share of a transmitter's neurons when it holds fewer than
#: 1 / FACTOR or more than FACTOR times its target count, and more than SLACK neurons off
FACTOR = 2.0
SLACK = 2


def lopsided_warnings(summary: Mapping, targets: Mapping[str, float]) -> list[str]:
    """One warning per transmitter whose neurons fall lopsidedly into the parts; ``summary``
    is a split's per transmitter and part counts with ``neurons`` (see
    :func:`synister.splits.make.summarize`), ``targets`` the parts' target shares."""
    warnings = []
    for nt, per_part in summary.items():
        counts = {part: per_part[part]["neurons"] for part in targets}
        total = sum(counts.values())
        expected = {part: total * share for part, share in targets.items()}
        off = [
            part
            for part, held in counts.items()
            if abs(held - expected[part]) > SLACK
            and not expected[part] / FACTOR <= held <= expected[part] * FACTOR
        ]
        if off:
            warnings.append(
                f"{nt}: its {total} neurons fall {' / '.join(map(str, counts.values()))} into "
                f"{' / '.join(targets)} (targets "
                f"{' / '.join(f'{n:.0f}' for n in expected.values())}; lopsided in "
                f"{', '.join(off)}): the split balances synapse shares, not neurons"
            )
    return warnings


__all__ = ["FACTOR", "SLACK", "lopsided_warnings"]
