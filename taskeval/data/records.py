"""Building the list of IR/visible pairs of a split: matching partners, attaching labels, applying split files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskeval.data.problems import Problems
from taskeval.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class PairRecord:
    """Where one pair's files are. ``packed``: IR and visible share one 4-channel file (MFNet: RGB + thermal)."""

    id: str
    ir: Path
    vis: Path
    det: Path | None = None
    seg: Path | None = None
    packed: bool = False


def list_stems(folder: Path, problems: Problems, suffixes=IMAGE_SUFFIXES) -> dict[str, Path]:
    """stem -> file for the images of a folder; duplicate stems are an error."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        problems.error("missing-folder", folder, "folder not found")
        return out
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in suffixes:
            continue
        if p.stem in out:
            problems.error("duplicate-id", p, f"id {p.stem!r} also stored as {out[p.stem].name}")
            continue
        out[p.stem] = p
    return out


def pair_folders(ir_dir: Path, vis_dir: Path, problems: Problems) -> tuple[dict[str, tuple[Path, Path]], set[str]]:
    """Match IR and visible files by stem; a file without its partner is an error (never skipped silently).

    Returns the complete pairs and every stem seen in either folder (so that the label of a pair that
    lost one image is reported once, as a missing partner, not again as an orphan label).
    """
    irs, viss = list_stems(ir_dir, problems), list_stems(vis_dir, problems)
    for stem in sorted(set(irs) - set(viss)):
        problems.error("missing-partner", irs[stem], f"no visible image {stem}.* in {vis_dir}")
    for stem in sorted(set(viss) - set(irs)):
        problems.error("missing-partner", viss[stem], f"no IR image {stem}.* in {ir_dir}")
    return {s: (irs[s], viss[s]) for s in sorted(set(irs) & set(viss))}, set(irs) | set(viss)


def attach_labels(ids: list[str], label_dir: Path, suffixes: tuple[str, ...], problems: Problems,
                  what: str, all_ids: set[str] | None = None) -> dict[str, Path]:
    """id -> label file. An image without a label file and a label file without an image are errors.

    ``all_ids`` are the ids of every image on disk (all splits): a label file is an orphan only if no
    image of any split has its id.

    An image that has no objects must have an EMPTY label file: a missing file is more often a lost
    annotation than an empty scene, and guessing would change mAP silently.
    """
    found = list_stems(label_dir, problems, suffixes)
    wanted = set(ids) if all_ids is None else set(all_ids) | set(ids)
    for stem in ids:
        if stem not in found:
            problems.error("missing-label", label_dir / f"{stem}{suffixes[0]}",
                           f"no {what} for image {stem} (an image without objects needs an empty file)")
    for stem in sorted(set(found) - wanted):
        problems.error("orphan-label", found[stem], f"{what} without an image (no image has id {stem})")
    return {s: found[s] for s in ids if s in found}


def read_id_file(path: Path, problems: Problems) -> list[str]:
    """Ids, one per line (blank lines and ``#`` comments ignored; a file extension is dropped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        problems.error("missing-split-file", path, "split file not found")
        return []
    ids = [Path(line.split("#")[0].strip()).stem for line in lines]
    ids = [i for i in ids if i]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        problems.error("duplicate-id", path, f"ids listed twice: {dup[:10]}")
    return list(dict.fromkeys(ids))


def select_ids(available: dict, wanted: list[str], split_file: Path, problems: Problems) -> list[str]:
    """Keep the ids a split file lists; ids listed but not on disk are an error."""
    missing = [i for i in wanted if i not in available]
    if missing:
        problems.error("missing-pair", split_file, f"{len(missing)} id(s) of the split have no images, "
                       f"e.g. {missing[:10]}")
    return [i for i in wanted if i in available]
