"""A deterministic synthetic RGB-T benchmark in which fusion provably matters.

Every scene has a cool IR background and a textured visible background (day) or a dark, noisy one
(night), with four kinds of labelled objects:

=========  ============================  ==========================================  ==================
class      IR                            visible                                      who can see it
=========  ============================  ==========================================  ==================
person     warm: bright ellipse          camouflaged: background colour, faint edge  IR only
car        warm engine, medium bright    coloured body by day, almost black at night  vis (day), IR
cone       background temperature        orange/red triangle (lit, also at night)    visible only
sign       background temperature        blue triangle, same shape and luminance     visible only
=========  ============================  ==========================================  ==================

plus unlabelled distractors (round warm blobs in IR, coloured squares in the visible image). People and cars
are warm and large enough (``design=2``, the default; :data:`DESIGNS`) that averaging IR with the visible
image, which halves their contrast, still leaves them plain: every class is either plainly visible in an input
or absent from it, so the quick protocols train every row to its ceiling and the benchmark's gaps come from
the classes each input carries. ``design=1`` reproduces the fainter scenes of earlier datasets. Cones
and signs differ only in hue, which a grey IR image cannot carry; people are invisible in the visible
image. So IR-only loses cones and signs, visible-only loses people (and cars at night), and a fusion
that keeps the IR intensity and the visible chroma can find all four. Optional misregistration
shifts the IR image against the visible one (labels follow the visible image).

The ``lost-cue`` variant (``variant=lost-cue``) adds what the default scenes lack: a class that the
unsupervised fusion loss discards. One or two patches of visible glare per scene (overexposed, bright,
finely textured, colourless; as bright at night) hide, in 75% of them, a ``puddle``:

=========  ============================================  ==========================  ==================
class      IR                                            visible                     who can see it
=========  ============================================  ==========================  ==================
puddle     cold: 0.14-0.22 darker than the road, soft    nothing: the glare goes on  IR only
           edges (a weaker gradient than the glare's)    over it
=========  ============================================  ==========================  ==================

Inside the glare the visible luminance is above the IR everywhere and its texture has the stronger
gradients, so ``max(IR, Y)`` (the intensity target of the fusion loss), the larger gradient (its texture
target), the image that minimises the fusion loss and a fusion network trained with it all keep the
glare and drop the puddle; IR alone shows it (``average`` keeps half its contrast). An oracle fusion that
keeps the cue (``max(IR, Y)``, but the IR where a puddle is, recoloured with the visible chroma) is
written beside the data in ``<split>/oracle/``, a precomputed fused folder for a benchmark: the proof
that the headroom exists. Glare patches without a puddle keep the glare itself from giving the class
away. The lost-cue property holds at the default size (at 64 px high the fusion loss keeps part of the
cue); tests/test_synth_lost_cue.py measures it. The variant's code leaves the default dataset's bytes
unchanged.

Written in the generic ``folders`` layout with ``split_dirs``: ``<out>/<split>/{ir,vi,labels,masks}``
plus ``<out>/card.yaml``, so every reader path of the project is exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from taskeval.data.labels import yolo_label_text
from taskeval.errors import ConfigError, DataError
from taskeval.imageio import write_png

DET_CLASSES = ("person", "car", "cone", "sign")
SEG_CLASSES = ("background",) + DET_CLASSES
PALETTE = ((0, 0, 0), (220, 20, 60), (60, 180, 75), (250, 170, 30), (70, 130, 180))  # bright on black
LOST_CUE = "lost-cue"
VARIANTS = ("default", LOST_CUE)
LOST_CUE_CLASS = "puddle"
LOST_CUE_COLOUR = (145, 30, 180)
ORACLE_DIR = "oracle"  # <split>/oracle/<id>.png: the lost-cue variant's oracle fusion
# Object designs. Sizes: ((h_min, h_max), (w_min, w_max)) in px at 128 px high; IR: (low, high) grey level,
# against an IR background of 0.30-0.44. Design 1 (before issue 18) made warm objects faint enough that a
# naive fusion, which halves their contrast, learned them at a speed that varied between seeds and CPUs
# (person AP 8-80 for `average`): its ranking was set by training noise. Design 2 makes every class either
# plainly visible in a modality or absent from it, so each row converges to its ceiling within the quick
# protocols and the gaps between rows are set by which classes each input carries.
DESIGNS = {
    1: {"person_size": ((16, 28), (6, 11)), "person_ir": (0.82, 0.95), "car_ir": (0.55, 0.68)},
    2: {"person_size": ((22, 32), (9, 14)), "person_ir": (0.90, 0.98), "car_ir": (0.74, 0.86)},
}


@dataclass(frozen=True)
class SynthConfig:
    """Size and difficulty of the synthetic dataset (defaults: the README's 2-core benchmark)."""

    n_train: int = 120
    n_test: int = 48
    height: int = 128
    width: int = 160
    night_fraction: float = 0.5
    objects_min: int = 2
    objects_max: int = 5
    ir_noise: float = 0.015
    vis_noise: float = 0.01
    night_vis_noise: float = 0.025
    misregistration_px: int = 0
    seed: int = 0
    variant: str = "default"  # "lost-cue": glare patches hiding IR-only puddles (module docstring)
    design: int = 2  # 1: the scenes before issue 18 (smaller, cooler people and cooler cars); see DESIGNS

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise ConfigError(f"synth design must be one of {', '.join(map(str, DESIGNS))}, got {self.design!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"synth variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == LOST_CUE and (self.height < 64 or self.width <= 83 * self.height // 128):
            raise ConfigError(f"synth variant {LOST_CUE} needs height >= 64 and width > 0.65 x height (its glare "
                              f"patches scale with the height), got {self.width}x{self.height}")

    @property
    def det_classes(self) -> tuple[str, ...]:
        return DET_CLASSES + ((LOST_CUE_CLASS,) if self.variant == LOST_CUE else ())

    @property
    def seg_classes(self) -> tuple[str, ...]:
        return ("background",) + self.det_classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return PALETTE + ((LOST_CUE_COLOUR,) if self.variant == LOST_CUE else ())


# fields added after datasets were first generated: written to synth.json only when set away from their
# default, so that a default dataset keeps its bytes and earlier folders are recognised as the same
_ADDED_LATER = {"variant": "default", "design": 1}


def settings(cfg: SynthConfig) -> dict:
    """The generator settings as ``synth.json`` records them."""
    return {k: v for k, v in asdict(cfg).items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((cells, max(2, int(cells * w / h))), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng, h, w, night):
    ir = 0.30 + 0.10 * _smooth_noise(rng, h, w, 4) + 0.04 * _smooth_noise(rng, h, w, 12)
    base = rng.uniform(0.35, 0.65, size=3).astype(np.float32)
    tex = np.stack([_smooth_noise(rng, h, w, 10) for _ in range(3)], axis=-1)
    vis = np.clip(base + 0.25 * (tex - 0.5), 0, 1)
    return ir.astype(np.float32), vis.astype(np.float32)


def _place(rng, h, w, bh, bw, taken):
    for _ in range(30):
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        box = (x, y, x + bw, y + bh)
        if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
            taken.append(box)
            return box
    return None


def _shape_mask(kind: str, bh: int, bw: int) -> np.ndarray:
    m = np.zeros((bh, bw), np.uint8)
    if kind == "person":
        cv2.ellipse(m, (bw // 2, bh // 2), (max(1, bw // 2 - 1), max(1, bh // 2 - 1)), 0, 0, 360, 1, -1)
    elif kind == "car":
        cv2.rectangle(m, (0, bh // 3), (bw - 1, bh - 1), 1, -1)
        cv2.rectangle(m, (bw // 5, 0), (4 * bw // 5, bh // 3), 1, -1)
    elif kind in ("cone", "sign"):
        pts = np.array([[bw // 2, 0], [0, bh - 1], [bw - 1, bh - 1]], np.int32)
        cv2.fillPoly(m, [pts], 1)
    else:  # square distractor
        m[:] = 1
    return m.astype(bool)


def _glare_and_puddles(cfg: SynthConfig, rng: np.random.Generator, ir, vis, mask, boxes, taken):
    """The lost-cue variant's glare patches (in ``vis``) and puddles (in ``ir``, ``mask``, ``boxes``), placed
    before the other objects so that those avoid the glare.

    Returns:
        glare: HxW bool, where the visible image is overexposed.
        alpha: HxW float32 in [0,1], the puddles' soft footprint (1 inside, soft edges), label-aligned.
    """
    h, w = cfg.height, cfg.width
    s = h / 128.0
    glare, alpha = np.zeros((h, w), bool), np.zeros((h, w), np.float32)
    cls = len(DET_CLASSES)
    for _ in range(int(rng.integers(1, 3))):
        gh, gw = int(rng.integers(40, 60) * s), int(rng.integers(56, 84) * s)
        box = _place(rng, h, w, gh, gw, taken)
        if box is None:
            continue
        x1, y1, x2, y2 = box
        glare[y1:y2, x1:x2] = True
        # overexposed and finely textured (~4 px grain): brighter than any IR pixel around, and steeper
        tex = _smooth_noise(rng, gh, gw, max(2, gh // 4))
        lum = rng.uniform(0.76, 0.84) + 0.3 * (tex - 0.5)
        vis[y1:y2, x1:x2] = lum[..., None]
        if rng.random() >= 0.75:
            continue
        ph, pw = int(rng.integers(14, 21) * s), int(rng.integers(24, 37) * s)
        py, px = y1 + int(rng.integers(5, gh - ph - 4)), x1 + int(rng.integers(5, gw - pw - 4))
        m = _shape_mask("person", ph, pw)  # an ellipse, wider than tall
        soft = np.zeros((h, w), np.float32)
        soft[py:py + ph, px:px + pw][m] = 1.0
        soft = cv2.GaussianBlur(soft, (0, 0), 1.5)  # soft edges (px): a weaker gradient than the glare's
        ir -= float(rng.uniform(0.14, 0.22)) * soft
        alpha = np.maximum(alpha, soft)
        mask[py:py + ph, px:px + pw][m] = cls + 1
        boxes.append([cls, px, py, px + pw, py + ph])
    return glare, alpha


def make_scene(cfg: SynthConfig, rng: np.random.Generator, night: bool):
    """One pair: (ir HxW, vis HxWx3 float32 in [0,1], boxes (K,5) [cls,x1,y1,x2,y2], mask HxW uint8)."""
    return _scene(cfg, rng, night)[:4]


def _scene(cfg: SynthConfig, rng: np.random.Generator, night: bool):
    """:func:`make_scene` plus the lost-cue variant's puddle footprint ``alpha`` (HxW float32 in [0,1],
    aligned with the labels; None for the default variant)."""
    h, w = cfg.height, cfg.width
    ir, vis = _background(rng, h, w, night)
    mask = np.zeros((h, w), np.uint8)
    boxes, taken = [], []
    glare, alpha = np.zeros((h, w), bool), None
    if cfg.variant == LOST_CUE:
        glare, alpha = _glare_and_puddles(cfg, rng, ir, vis, mask, boxes, taken)
    s = h / 128.0
    d = DESIGNS[cfg.design]
    sizes = {"person": d["person_size"], "car": ((14, 22), (24, 40)), "cone": ((12, 18), (12, 18)),
             "sign": ((12, 18), (12, 18))}
    n = int(rng.integers(cfg.objects_min, cfg.objects_max + 1))
    kinds = list(rng.choice(DET_CLASSES, size=n))
    for kind in kinds:
        (h0, h1), (w0, w1) = sizes[kind]
        bh, bw = int(rng.integers(h0, h1 + 1) * s), int(rng.integers(w0, w1 + 1) * s)
        box = _place(rng, h, w, bh, bw, taken)
        if box is None:
            continue
        x1, y1, x2, y2 = box
        m = _shape_mask(kind, bh, bw)
        cls = DET_CLASSES.index(kind)
        reg_ir, reg_vis = ir[y1:y2, x1:x2], vis[y1:y2, x1:x2]
        if kind == "person":
            reg_ir[m] = rng.uniform(*d["person_ir"])
            reg_vis[m] = reg_vis[m] * 0.97 + 0.01  # camouflage: a faint 3% change
        elif kind == "car":
            reg_ir[m] = rng.uniform(*d["car_ir"])
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            colour[rng.integers(0, 3)] = rng.uniform(0.75, 1.0)
            reg_vis[m] = colour
        else:
            lum = rng.uniform(0.45, 0.6)
            rgb = np.array([1.0, 0.35, 0.05] if kind == "cone" else [0.05, 0.35, 1.0], np.float32)
            rgb = rgb * lum / float(rgb @ np.array([0.299, 0.587, 0.114], np.float32))
            reg_vis[m] = np.clip(rgb, 0, 1)
        mask[y1:y2, x1:x2][m] = cls + 1
        boxes.append([cls, x1, y1, x2, y2])
    for _ in range(int(rng.integers(1, 4))):  # unlabelled distractors
        r = int(rng.integers(4, 8) * s)
        cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
        if mask[cy, cx] == 0 and not glare[cy - r:cy + r + 1, cx - r:cx + r + 1].any():
            cv2.circle(ir, (cx, cy), r, float(rng.uniform(0.6, 0.9)), -1)
        box = _place(rng, h, w, int(10 * s), int(10 * s), taken)
        if box is not None:
            vis[box[1]:box[3], box[0]:box[2]] = rng.uniform(0, 1, size=3).astype(np.float32)
    ir = cv2.GaussianBlur(ir, (3, 3), 0.8)
    if night:
        lit = (mask == 3) | (mask == 4)  # cones and signs are lit / retro-reflective
        dark = vis * 0.08
        dark[lit] = vis[lit] * 0.8
        dark[glare] = vis[glare]  # glare (headlights) is as bright at night
        vis = dark + rng.normal(0, cfg.night_vis_noise, vis.shape).astype(np.float32)
    else:
        vis = vis + rng.normal(0, cfg.vis_noise, vis.shape).astype(np.float32)
    ir = ir + rng.normal(0, cfg.ir_noise, ir.shape).astype(np.float32)
    if cfg.misregistration_px:
        d = cfg.misregistration_px
        shift = np.float32([[1, 0, rng.integers(-d, d + 1)], [0, 1, rng.integers(-d, d + 1)]])
        ir = cv2.warpAffine(ir, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
    return (np.clip(ir, 0, 1).astype(np.float32), np.clip(vis, 0, 1).astype(np.float32),
            np.asarray(boxes, np.float32).reshape(-1, 5), mask, alpha)


def oracle_fusion(ir: np.ndarray, vis: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The lost-cue variant's oracle: ``max(IR, Y)``, but the IR itself where a puddle is (``alpha``, its
    soft footprint), recoloured with the visible chroma. ir, alpha: HxW; vis: HxWx3 (float32 in [0,1]) ->
    HxWx3 float32 in [0,1]."""
    import torch

    from taskeval.color import luminance, recolor

    v = torch.from_numpy(vis).permute(2, 0, 1)[None]
    t, a = torch.from_numpy(ir)[None, None], torch.from_numpy(alpha)[None, None]
    return recolor((1 - a) * torch.maximum(t, luminance(v)) + a * t, v)[0].permute(1, 2, 0).numpy()

def card_dict(cfg: SynthConfig) -> dict:
    lost = cfg.variant == LOST_CUE
    extra = (f"; variant {cfg.variant}: puddles seen in IR only, under visible glare, lost by max and by the "
             f"fusion loss; oracle fusion in <split>/{ORACLE_DIR}/") if lost else ""
    return {
        "name": f"synth-{cfg.variant}" if lost else "synth",
        "format": "folders",
        "description": "taskeval's synthetic RGB-T benchmark (taskeval.data.synth); generator settings in "
                       f"synth.json{extra}",
        "root": ".",
        "tasks": ["detection", "segmentation"],
        "det_classes": list(cfg.det_classes),
        "seg_classes": list(cfg.seg_classes),
        "palette": [list(c) for c in cfg.palette],
        "options": {"ir": "ir", "vis": "vi", "det_labels": "labels", "seg_labels": "masks", "split_dirs": True},
        "expected_counts": {"train": cfg.n_train, "test": cfg.n_test},
    }


class SynthExistsError(DataError, FileExistsError):
    """The output folder holds something else than this synthetic dataset."""


def _existing(out: Path, cfg: SynthConfig) -> Path | None:
    existing = out / "synth.json"
    if existing.is_file():
        if json.loads(existing.read_text()) == settings(cfg):
            return out / "card.yaml"
        raise SynthExistsError(f"{out} holds a synthetic dataset made with other settings; choose another folder")
    if out.exists() and any(out.iterdir()):
        raise SynthExistsError(f"{out} exists and is not empty; choose another folder")
    return None


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write the dataset to ``out`` and return the path of its card. Same config -> same bytes.

    The dataset is written into a temporary sibling folder and renamed into place when complete, so an
    interrupted generation leaves nothing half-written behind and concurrent processes (benchmark shards)
    end up with one complete copy. An existing ``out`` made with the same settings is reused.
    """
    out = Path(out)
    found = _existing(out, cfg)
    if found is not None:
        return found
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split, n, offset in (("train", cfg.n_train, 0), ("test", cfg.n_test, 1_000_000)):
            subs = ("ir", "vi", "labels", "masks") + ((ORACLE_DIR,) if cfg.variant == LOST_CUE else ())
            for sub in subs:
                (tmp / split / sub).mkdir(parents=True, exist_ok=True)
            for i in tqdm(range(n), desc=f"synth {split}", disable=not progress, unit="pair"):
                rng = np.random.default_rng([cfg.seed, offset + i])
                night = bool(rng.random() < cfg.night_fraction)
                ir, vis, boxes, mask, alpha = _scene(cfg, rng, night)
                sid = f"{split}{i:05d}{'N' if night else 'D'}"
                ir8, vis8 = np.rint(ir * 255).astype(np.uint8), np.rint(vis * 255).astype(np.uint8)
                write_png(tmp / split / "ir" / f"{sid}.png", ir8)
                write_png(tmp / split / "vi" / f"{sid}.png", vis8)
                if alpha is not None:  # from the 8-bit images, as every fusion method sees them
                    oracle = oracle_fusion(ir8 / np.float32(255), vis8 / np.float32(255), alpha)
                    write_png(tmp / split / ORACLE_DIR / f"{sid}.png", np.rint(oracle * 255).astype(np.uint8))
                write_png(tmp / split / "masks" / f"{sid}.png", mask)
                (tmp / split / "labels" / f"{sid}.txt").write_text(yolo_label_text(boxes, (cfg.height, cfg.width)))
        (tmp / "card.yaml").write_text(yaml.safe_dump(card_dict(cfg), sort_keys=False))
        (tmp / "synth.json").write_text(json.dumps(settings(cfg), indent=1))
        tmp.chmod(0o755)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first: use its copy if it is the same dataset
            found = _existing(out, cfg)
            if found is None:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "card.yaml"
