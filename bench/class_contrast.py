"""Per class, how much a joint run's fused test images show each object: its luminance contrast against
the background ring around it, per fusion network (fusion loss only, segmentation-guided, detection-guided)
and seed, beside IR, the visible luminance and the oracle. The "why" behind a joint run's numbers.

    python bench/class_contrast.py runs/joint-synth-lost-cue [--ring 5]

Reads the run's data (``data/synth``: masks) and its fusion weights (``fusion-only-s<k>/fusion.pth``,
``joint-<task>-s<k>/fusion.pth``); fuses the test split with the float pipeline (``apply_fusion``; the
official 8-bit step moves a luminance by at most a grey level). Contrast: mean luminance on the object
minus the mean on a ``--ring`` px background ring around it (pixels of no class), averaged over the test
images that hold the class; signed (a dark puddle is negative).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np
import torch


def contrasts(y: np.ndarray, mask: np.ndarray, classes: list[str], ring: int) -> dict[str, float]:
    """class -> mean(y on the class) - mean(y on the background ring around it), in one image."""
    out = {}
    kernel = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    for c, name in enumerate(classes):
        if c == 0:
            continue
        m = mask == c
        if m.sum() < 4:
            continue
        around = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & (mask == 0)
        if around.sum() < 4:
            continue
        out[name] = float(y[m].mean() - y[around].mean())
    return out


def main() -> None:
    from fusion_models import create_fusion_model
    from taskeval.color import luminance
    from taskeval.data import PairedDataset, load_card
    from taskeval.fusing import apply_fusion

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--ring", type=int, default=5)
    ap.add_argument("--fusion", default="seafusion")
    args = ap.parse_args()
    run = Path(args.run)
    torch.set_grad_enabled(False)
    card = load_card(run / "data" / "synth" / "card.yaml")
    ds = PairedDataset(card, "test")
    classes = list(card.seg_classes)
    nets = {}
    for w in sorted(run.glob("*-s*/fusion.pth")):
        arm, seed = re.fullmatch(r"(.+)-s(\d+)", w.parent.name).groups()
        nets.setdefault(arm, {})[int(seed)] = w
    rows: dict[str, list[dict]] = {"ir": [], "vis (Y)": [], "oracle": []}
    models = {(arm, s): create_fusion_model(args.fusion, weights=str(w)).eval()
              for arm, ws in nets.items() for s, w in ws.items()}
    for i in range(len(ds)):
        ir, vis = ds.read_pair(i)
        mask = ds.mask(i)
        t_ir = torch.from_numpy(ir)[None, None]
        t_vis = torch.from_numpy(vis).permute(2, 0, 1)[None].contiguous()
        rows["ir"].append(contrasts(ir, mask, classes, args.ring))
        rows["vis (Y)"].append(contrasts(luminance(t_vis)[0, 0].numpy(), mask, classes, args.ring))
        oracle = Path(card.root) / "test" / "oracle" / f"{ds.ids[i]}.png"
        if oracle.is_file():
            o = cv2.cvtColor(cv2.imread(str(oracle)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
            y = luminance(torch.from_numpy(o).permute(2, 0, 1)[None])[0, 0].numpy()
            rows["oracle"].append(contrasts(y, mask, classes, args.ring))
        for (arm, s), model in models.items():
            fused = apply_fusion(model, t_ir, t_vis)
            fused = fused.expand(-1, 3, -1, -1) if fused.shape[1] == 1 else fused
            rows.setdefault(f"{arm} s{s}", []).append(
                contrasts(luminance(fused)[0, 0].numpy(), mask, classes, args.ring))
    names = classes[1:]
    print(f"luminance contrast against a {args.ring} px background ring, mean over the test images holding the "
          f"class ({run})")
    print(f"{'':24s}" + "".join(f"{n:>9s}" for n in names))
    for key, per_image in rows.items():
        if not per_image:
            continue
        vals = [np.mean([r[n] for r in per_image if n in r]) if any(n in r for r in per_image) else float("nan")
                for n in names]
        print(f"{key:24s}" + "".join(f"{v:+9.3f}" for v in vals))


if __name__ == "__main__":
    main()
