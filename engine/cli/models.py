"""`iqart list`: the zoo at a glance (pyiqa's `-ls`): name, task, input policy, score range, weights."""

from __future__ import annotations

import argparse

from iqart.train.models.prompts import QUALITY_ADJECTIVES, attribute_names
from iqart.train.models.zoo import MODELS, ModelCard, weights_status


def add_list_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "list",
        help="list the models: task, input policy, score range, weights available, attributes",
        description="List the zoo's models, one a line: task (no- or full-reference), input "
        "size policy, score range and direction, where its weights come from, and the attributes "
        "`iqart score --explain` writes for it.",
    )
    p.set_defaults(run=run_list)


def describe(card: ModelCard) -> dict[str, str]:
    low, high = card.score_range
    policy = card.resize.to_json()
    return {
        "model": card.name,
        "task": {"nr": "no-reference", "fr": "full-reference"}[card.task],
        "input": "native resolution"
        if card.resize.kind == "native"
        else f"{card.resize.kind} {policy[card.resize.kind]}",
        "score range": f"{low:g}..{high:g} ({'higher' if card.higher_better else 'lower'} is better)",
        "weights": weights_status(card),
        "attributes (--explain)": _attributes(card),
    }


def _attributes(card: ModelCard) -> str:
    names = attribute_names(card.family)
    if card.family == "bpclip":
        dimensions = names[: len(QUALITY_ADJECTIVES)]
        return f"{', '.join(dimensions)} (+{len(names) - len(dimensions)} adjectives with --explain all)"
    return ", ".join(names)


def run_list(args: argparse.Namespace) -> int:
    rows = [describe(card) for card in MODELS.values()]
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    print("  ".join(key.ljust(widths[key]) for key in widths).rstrip())
    for row in rows:
        print("  ".join(row[key].ljust(widths[key]) for key in widths).rstrip())
    return 0
