"""``taskeval models [PATTERN]``: list registered fusion methods with their metadata.

``verified against`` is each port's ``FusionSpec.verified``: "official weights" (its outputs reproduce the
official outputs made with the official weights), "official code, random weights" (they reproduce the
official code's outputs on a random checkpoint in the official layout), or "—" (no official code).
``official image`` says whether ``taskeval fuse`` writes the official script's 8-bit image by default.
"""

from __future__ import annotations

from rich.table import Table

from fusion_models import get_fusion_spec, list_fusion_models
from taskeval.console import print_table


def run(args) -> int:
    t = Table(title="fusion methods")
    for col in ("name", "vis input", "output", "trainable", "official weights", "official image", "verified against",
                "paper"):
        t.add_column(col)
    for name in list_fusion_models(args.pattern):
        s = get_fusion_spec(name)
        t.add_row(name, s.vis_input, s.output + ("" if s.recolor or s.output == "rgb" else " (grey)"),
                  "yes" if s.trainable else "no", s.weights_file or "-", "yes" if s.official_image else "-",
                  s.verified or "—", s.paper or s.description)
    print_table(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list fusion methods (built-in and plug-ins)")
    p.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. '*fusion*'")
    p.set_defaults(func=run)
