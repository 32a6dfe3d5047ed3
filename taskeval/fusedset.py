"""``FusedSet``: the fused images of one (method, weights, dataset, split), by id.

``fuse_split`` runs a registered method over a split, batched, with a progress bar, and caches the
8-bit results in an HDF5 file keyed by dataset id under a key that hashes the method's spec, the weight
file's bytes and the input files (size + mtime), so a second run recomputes nothing and a changed
weight file or input image invalidates the cache. PNGs are exported beside it for the task networks
(ultralytics reads files). ``precomputed_set`` wraps a folder of fused images made by external code;
missing, extra or mis-sized files are errors listing their names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from fusion_models import create_fusion_model, get_fusion_spec
from fusion_models.weights import file_hash, resolve_weights
from taskeval.data.dataset import PairedDataset
from taskeval.errors import DataError, WeightsError
from taskeval.filelock import file_lock
from taskeval.fusing import apply_fusion
from taskeval.imageio import list_images, read_raw, tensor_to_uint8, to_float, write_png

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class FusedSet:
    """Fused images by id. ``paths[id]`` is an image file (PNG, RGB or grey) the task networks read."""

    method: str
    dataset: str
    split: str
    key: str
    paths: dict[str, Path]
    weights_note: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.paths)

    def read(self, sample_id: str) -> np.ndarray:
        """(H,W,3) float32 RGB in [0,1] (grey images get three equal channels)."""
        raw = read_raw(self.paths[sample_id])
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        return to_float(np.ascontiguousarray(raw[..., :3]))

    def require(self, ids: list[str]) -> None:
        """Error listing every id of ``ids`` this set lacks (a smaller test set would change the metric)."""
        missing = [i for i in ids if i not in self.paths]
        if missing:
            raise DataError(f"fused set {self.method!r} ({self.dataset}/{self.split}) lacks {len(missing)} of "
                            f"{len(ids)} images: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")


def _inputs_fingerprint(ds: PairedDataset) -> str:
    h = hashlib.sha256()
    for rec in ds.records:
        for p in {rec.ir, rec.vis}:
            st = os.stat(p)
            h.update(f"{rec.id}|{p.name}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def cache_key(method: str, weights_id: str, ds: PairedDataset, extra: dict | None = None) -> str:
    spec = get_fusion_spec(method)
    spec_fields = {k: v for k, v in asdict(spec).items() if k not in ("factory", "paper", "licence", "url",
                                                                      "description")}
    payload = json.dumps({"v": CACHE_VERSION, "method": method, "spec": spec_fields, "weights": weights_id,
                          "dataset": ds.card.name, "split": ds.split, "size_policy": ds.size_policy,
                          "inputs": _inputs_fingerprint(ds), "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _size_groups(ds: PairedDataset, ids: list[str], batch_size: int) -> list[list[int]]:
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in (ds.index(s) for s in ids):
        by_size.setdefault(ds.size(i), []).append(i)
    return [idx[k:k + batch_size] for idx in by_size.values() for k in range(0, len(idx), batch_size)]


def fuse_split(ds: PairedDataset, method: str, cache_dir: str | Path, weights: str | None = None,
               device: str = "cpu", batch_size: int = 4, progress: bool = True, model=None,
               text_dir: str | Path | None = None) -> FusedSet:
    """Fuse every pair of ``ds`` with ``method`` (cached) and return the :class:`FusedSet`.

    Args:
        ds: the split to fuse.
        method: registered fusion method name.
        cache_dir: folder for ``<dataset>/<method>-<key>.h5`` and the exported PNGs.
        weights: checkpoint path / ``"official"``; required for learned methods.
        model: an already built model (joint training); its state is hashed into the key.
        text_dir: per-image text embeddings ``<id>.npy`` for methods with ``needs_text``.
    """
    spec = get_fusion_spec(method)
    if model is None and spec.trainable and weights is None:
        raise WeightsError(f"{method!r} is a learned method and needs weights: pass weights=PATH (or 'official' "
                           f"with TASKEVAL_WEIGHTS_DIR), or train them with 'taskeval fuse train'")
    if model is not None:
        from fusion_models.weights import state_dict_hash

        weights_id = "model:" + state_dict_hash(model)
    elif weights is not None:
        wpath = resolve_weights(spec, weights)
        weights_id = "file:" + file_hash(wpath)
    else:
        weights_id = "none"
    key = cache_key(method, weights_id, ds, {"text_dir": str(text_dir) if text_dir else None})
    folder = Path(cache_dir) / ds.card.name
    folder.mkdir(parents=True, exist_ok=True)
    h5_path = folder / f"{method}-{key}.h5"
    png_dir = folder / f"{method}-{key}" / ds.split
    with file_lock(h5_path.with_suffix(".lock")), h5py.File(h5_path, "a") as h5:
        h5.attrs.update({"method": method, "key": key, "weights": weights_id, "dataset": ds.card.name})
        grp = h5.require_group(ds.split)
        todo = [s for s in ds.ids if s not in grp]
        if todo:
            if model is None:
                model = create_fusion_model(method, weights=weights, device=device)
            model.eval()
            bar = tqdm(total=len(todo), desc=f"fuse {method} {ds.card.name}/{ds.split}", unit="pair",
                       disable=not progress)
            for batch in _size_groups(ds, todo, batch_size):
                pairs = [ds.read_pair(i) for i in batch]
                ir = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None].to(device)
                vis = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).to(device)
                text = None
                if spec.needs_text and text_dir is not None:
                    from fusion_models.film import load_text_embeddings

                    text = load_text_embeddings(text_dir, [ds.ids[i] for i in batch]).to(device)
                with torch.no_grad():
                    out = apply_fusion(model, ir, vis, text=text)
                if not torch.isfinite(out).all():
                    raise DataError(f"{method}: non-finite fused output for {[ds.ids[i] for i in batch]}")
                for i, img in zip(batch, out):
                    grp.create_dataset(ds.ids[i], data=tensor_to_uint8(img), compression="gzip", compression_opts=1)
                h5.flush()
                bar.update(len(batch))
            bar.close()
        paths = {}
        for sid in ds.ids:
            png = png_dir / f"{sid}.png"
            if not png.is_file():
                write_png(png, grp[sid][()])
            paths[sid] = png
    note = ""
    if weights is not None and spec.trainable:
        from taskeval.fusion_train import weights_note

        # "trained by taskeval (fusion loss)" / joint-training notes travel with the weights into every table
        note = weights_note(weights) or f"weights {Path(str(weights)).name}"
    return FusedSet(method, ds.card.name, ds.split, key, paths, note, {"h5": str(h5_path)})


def precomputed_set(folder: str | Path, ds: PairedDataset, name: str | None = None,
                    check_sizes: bool = True, allow_extra: bool = False) -> FusedSet:
    """Wrap a folder of fused images (matched to ``ds`` ids by file stem).

    Raises:
        DataError: listing missing ids, extra files (unless ``allow_extra``) and images whose size
            differs from the source pair.
    """
    folder = Path(folder)
    found = list_images(folder)
    problems = []
    missing = [s for s in ds.ids if s not in found]
    if missing:
        problems.append(f"missing {len(missing)} of {len(ds)} fused images: {', '.join(missing[:20])}"
                        f"{' ...' if len(missing) > 20 else ''}")
    extra = sorted(set(found) - set(ds.ids))
    if extra and not allow_extra:
        problems.append(f"{len(extra)} file(s) match no id of {ds.card.name}/{ds.split}: {', '.join(extra[:20])}"
                        f"{' ...' if len(extra) > 20 else ''}")
    if check_sizes and not missing:
        from taskeval.imageio import image_size

        bad = [f"{found[s].name} is {image_size(found[s])[1]}x{image_size(found[s])[0]}, source "
               f"{ds.size(ds.index(s))[1]}x{ds.size(ds.index(s))[0]}"
               for s in ds.ids if image_size(found[s]) != ds.size(ds.index(s))]
        if bad:
            problems.append(f"{len(bad)} mis-sized image(s): " + "; ".join(bad[:10]))
    if problems:
        raise DataError(f"precomputed fused folder {folder}: " + " | ".join(problems))
    h = hashlib.sha256()
    for s in ds.ids:
        st = os.stat(found[s])
        h.update(f"{s}|{st.st_size}|{st.st_mtime_ns};".encode())
    return FusedSet(name or folder.name, ds.card.name, ds.split, h.hexdigest()[:16],
                    {s: found[s] for s in ds.ids}, "precomputed folder", {"folder": str(folder)})
