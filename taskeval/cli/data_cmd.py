"""``taskeval data {check,synth,fixture,scene-split,cards}``: validate datasets, generate the synthetic benchmark
and layout fixtures."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskeval.cli.common import add_overrides, print_json
from taskeval.config import load_config, parse_overrides
from taskeval.console import print_table
from taskeval.data.card import FORMATS, builtin_cards, load_card, parse_card
from taskeval.data.fixtures import FIXTURE_FORMATS, write_fixture
from taskeval.data.labels import read_class_names
from taskeval.data.synth import DET_CLASSES, LOST_CUE, ORACLE_DIR, SEG_CLASSES, SynthConfig, generate
from taskeval.errors import ConfigError


def _card_from_args(args):
    if args.card:
        return load_card(args.card, args.root)
    if not args.format:
        raise ConfigError("give --card CARD (name or YAML) or --format FORMAT --root DIR")
    if args.format in builtin_cards():
        return load_card(args.format, args.root)
    if args.root is None:
        raise ConfigError(f"--format {args.format} needs --root DIR")
    root = Path(args.root)
    if (root / "card.yaml").is_file():
        return load_card(root / "card.yaml", root)
    raw = {"name": root.name, "format": args.format, "root": str(root)}
    if (root / "classes.txt").is_file():  # the YOLO convention: one class name per line
        raw["det_classes"] = list(read_class_names(root / "classes.txt"))
    if args.format == "folders" and (root / "labels").is_dir():
        raw["options"] = {"det_labels": "labels"}
    raw["options"] = {**raw.get("options", {}), **parse_overrides(args.option or [])}
    for key, value in (("det_classes", args.det_classes), ("seg_classes", args.seg_classes)):
        if value in builtin_cards():  # take the class list (and palette) of a built-in card
            other = load_card(value)
            raw[key] = list(getattr(other, key))
            if key == "seg_classes" and other.palette:
                raw["palette"] = [list(c) for c in other.palette]
        elif value:
            raw[key] = [c.strip() for c in value.split(",") if c.strip()]
    if raw["options"].get("det_labels") and not raw.get("det_classes"):
        raise ConfigError(f"{root}: detection labels need class names: add classes.txt to the root, pass "
                          "--det-classes, or use a card")
    if raw["options"].get("seg_labels") and not raw.get("seg_classes"):
        raise ConfigError(f"{root}: segmentation labels need class names: pass --seg-classes a,b,c (or a "
                          "built-in card name such as msrs), or use a card")
    return parse_card(raw, None, "--format")


def run_check(args) -> int:
    from taskeval.data.check import check_dataset

    card = _card_from_args(args)
    report = check_dataset(card, args.split or None, progress=not args.json)
    problems = report.problems
    if args.json:
        print_json({"card": card.name, "root": str(card.root), "ok": report.ok, "splits": report.split_sizes,
                    "boxes": {s: dict(c) for s, c in report.box_counts.items()},
                    "errors": len(problems.errors), "warnings": len(problems.warnings),
                    "problems": [asdict(p) for p in problems.items]})
        return 0 if report.ok else 1
    con = Console()
    t = Table(title=escape(f"{card.name} ({card.format}) at {card.root}"))
    t.add_column("split")
    t.add_column("pairs", justify="right")
    t.add_column("boxes per class")
    for split, n in report.split_sizes.items():
        counts = report.box_counts.get(split, {})
        names = card.det_classes
        t.add_row(split, str(n), ", ".join(f"{names[c] if c < len(names) else c}: {k}"
                                           for c, k in sorted(counts.items())) or "-")
    con.print(t)
    for p in problems.items:
        con.print(f"[{'red' if p.severity == 'error' else 'yellow'}]{p.severity}[/] {p.kind}: {p.path}: {p.message}",
                  highlight=False, soft_wrap=True)
    if problems.items:
        summary = Table(title="problems")
        summary.add_column("severity")
        summary.add_column("kind")
        summary.add_column("count", justify="right")
        for (sev, kind), k in sorted(problems.counts().items()):
            summary.add_row(sev, kind, str(k))
        con.print(summary)
    con.print(f"{len(problems.errors)} error(s), {len(problems.warnings)} warning(s)")
    return 0 if report.ok else 1


def run_synth(args) -> int:
    cfg = load_config(SynthConfig, args.config, args.overrides)
    card = generate(args.out, cfg, progress=True)
    variant = "" if cfg.variant == "default" else f", variant {cfg.variant}"
    print(f"synthetic dataset: {card.parent} ({cfg.n_train} train + {cfg.n_test} test pairs, "
          f"{cfg.width}x{cfg.height}{variant}); card: {card}")
    if cfg.variant == LOST_CUE:
        print(f"oracle fusion (keeps the lost cue) for a benchmark: {{name: oracle, folder: "
              f"\"{card.parent}/{{split}}/{ORACLE_DIR}\"}}")
    return 0


def run_fixture(args) -> int:
    root = write_fixture(args.format, args.out, seed=args.seed)
    print(f"{args.format} fixture (fake data in the real layout): {root}\n"
          f"check it: taskeval data check --card {args.format} --root {root}")
    return 0


def run_scene_split(args) -> int:
    from taskeval.data.scene_split import frame_number, scene_cuts, split_scenes

    scenes = scene_cuts(args.vis, args.factor)
    train, test = split_scenes(scenes, args.test_share, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("test", test)):
        path = out / f"{args.prefix}_{name}.txt"
        if path.exists() and not args.overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite or choose another --out")
        path.write_text("\n".join(f"{frame_number(i):05d}" if args.frame_ids else i for i in ids) + "\n")
    print(f"{len(scenes)} scenes; train {len(train)} / test {len(test)} frames -> {out}/{args.prefix}_{{train,test}}.txt"
          f"\nuse them in a card: split_files: {{train: {out}/{args.prefix}_train.txt, test: "
          f"{out}/{args.prefix}_test.txt}}")
    return 0


def run_cards(args) -> int:
    t = Table(title="built-in dataset cards")
    for col in ("card", "format", "tasks", "classes", "root"):
        t.add_column(col)
    for name in builtin_cards():
        try:
            c = load_card(name)
        except ConfigError as exc:
            t.add_row(name, "?", "", "", escape(f"error: {exc}"))
            continue
        classes = f"det {len(c.det_classes)}" if c.det_classes else ""
        if c.seg_classes:
            classes += f"{', ' if classes else ''}seg {len(c.seg_classes)}"
        t.add_row(name, c.format, ",".join(c.tasks), classes, escape(str(c.root or "(set --root)")))
    t.add_row("synth", "folders", "det,seg", f"det {len(DET_CLASSES)}, seg {len(SEG_CLASSES)}", "generated on first use (--root, $TASKEVAL_SYNTH_DIR "
              "or runs/data/synth)")
    print_table(t)
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: check, synth, fixture, scene-split, cards")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    c = dsub.add_parser("check", help="validate a dataset on disk and list every problem",
                        description="Validate a dataset; exit status 1 when it has errors.")
    c.add_argument("--format", choices=FORMATS + tuple(n for n in builtin_cards() if n not in FORMATS),
                   help="dataset layout (or a built-in card name)")
    c.add_argument("--root", help="dataset folder")
    c.add_argument("--card", help="dataset card (built-in name or YAML path) instead of --format")
    c.add_argument("--split", action="append", help="only these splits (repeatable)")
    c.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="reader option for --format, e.g. -o det_labels=labels_fusion -o vis=visible")
    c.add_argument("--det-classes", help="detection class names a,b,c (or a built-in card name)")
    c.add_argument("--seg-classes", help="segmentation class names a,b,c (or a built-in card name: "
                                         "its classes and palette)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_check)

    s = dsub.add_parser("synth", help="generate the synthetic RGB-T benchmark",
                        description="Generate the deterministic synthetic dataset (see README). "
                                    "Overrides: n_train, n_test, height, width, night_fraction, "
                                    "misregistration_px, seed, variant, ... variant=lost-cue adds a class "
                                    "(puddle) seen in IR only, under visible glare, that max fusion and the "
                                    "unsupervised fusion loss discard, plus an oracle fusion that keeps it "
                                    "(<split>/oracle/): the data on which semantic-guided joint training "
                                    "has something to recover.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--config", help="YAML with SynthConfig fields")
    add_overrides(s)
    s.set_defaults(func=run_synth)

    f = dsub.add_parser("fixture", help="write a tiny fake dataset in a built-in dataset's real layout",
                        description="Write a few small, deterministic image pairs with labels of every class in "
                                    "the folder layout, file types and split files of a real dataset, so that "
                                    "its card, 'data check' and 'benchmark CONFIG --plan --root DIR' can be "
                                    "tried without the data.")
    f.add_argument("--format", required=True, choices=FIXTURE_FORMATS, help="the dataset whose layout to copy")
    f.add_argument("--out", required=True, help="output folder (created; reused if it holds the same fixture)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run_fixture)

    sc = dsub.add_parser("scene-split", help="scene-disjoint train/test split files from a frame sequence (M3FD)",
                         description="Cut consecutive frames into scenes where the visible image changes abruptly "
                                     "and assign whole scenes to test (seeded).")
    sc.add_argument("--vis", required=True, help="folder of visible frames (e.g. M3FD's Vis/)")
    sc.add_argument("--out", required=True, help="folder for <prefix>_train.txt and <prefix>_test.txt")
    sc.add_argument("--prefix", default="scene")
    sc.add_argument("--test-share", type=float, default=0.2)
    sc.add_argument("--factor", type=float, default=4.0, help="cut where the frame difference exceeds this x median")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--frame-ids", action="store_true", help="write frame numbers (00042) instead of file stems")
    sc.add_argument("--overwrite", action="store_true")
    sc.set_defaults(func=run_scene_split)

    k = dsub.add_parser("cards", help="list the built-in dataset cards")
    k.set_defaults(func=run_cards)
