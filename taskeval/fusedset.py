"""``FusedSet``: the fused images of one (method, weights, dataset, split), by id.

``fuse_split`` runs a registered method over a split, batched, with a progress bar, and caches the
8-bit images the method writes in an HDF5 file under a key that hashes the method's spec, the weight
file's bytes, the input images' bytes (:mod:`taskeval.fingerprint`: never paths or file times) and, for
methods with an official script, the ``io`` (official 8-bit images and the float pipeline's never
share an entry), so a second run in any process, or in a copy of the folder, recomputes nothing, and a
changed weight file or input image makes a new cache entry.

What is cached and what the task networks read (:mod:`taskeval.fusing`):

* the HDF5 cache holds, per id, the image the method writes: under ``io="official"`` its official
  script's 8-bit output, grey where that script writes grey (MLFuse, IFCNN, DIDFuse, CDDFuse, EMMA,
  FILM); under ``io="float"`` (and for methods without an official script) the harness's float
  pipeline rounded to 8 bits. ``taskeval fuse --out`` exports exactly these (:func:`export_written`),
  so they can be compared with the official code's files;
* the PNGs exported beside it (``FusedSet.paths``; ultralytics reads files) are what the task networks
  read: the written image, with a grey official image recoloured with the visible chroma, its
  luminance kept (:func:`taskeval.fusing.task_image`), a pure function of the cached image and the
  visible file, so the cache holds one copy of each image and the recolouring is one function. The ``FusedSet`` says
  which in ``meta["io"]`` and ``meta["io_note"]``; the runner puts the note on every row of the method.

``precomputed_set`` wraps a folder of fused images made by external code; missing, extra or mis-sized
files are errors listing their names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from fusion_models import create_fusion_model, get_fusion_spec
from fusion_models.weights import weights_digest
from taskeval.data.dataset import PairedDataset
from taskeval.errors import DataError, WeightsError
from taskeval.filelock import file_lock
from taskeval.fingerprint import (
    dataset_fingerprint,
    digest,
    file_digests,
    files_manifest,
    manifest_fingerprint,
)
from taskeval.fusing import image_io, io_note, task_image, written_images
from taskeval.imageio import list_images, read_raw, to_float, write_png

log = logging.getLogger(__name__)
CACHE_VERSION = 2
# the spec fields that decide what a method writes (not its factory, provenance or description)
_KEYED_SPEC_FIELDS = ("vis_input", "output", "normalize", "recolor", "needs_text", "default_kwargs")


@dataclass
class FusedSet:
    """Fused images by id. ``paths[id]`` is an image file (PNG, RGB or grey) the task networks read.

    ``key`` is the digest of ``key_parts`` (what the images were computed from; see :func:`cache_key_parts`),
    the same in every process and after the files are copied elsewhere.
    """

    method: str
    dataset: str
    split: str
    key: str
    paths: dict[str, Path]
    weights_note: str = ""
    meta: dict = field(default_factory=dict)
    key_parts: dict = field(default_factory=dict)

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


def manifest_folder(cache_dir: str | Path, dataset: str) -> Path:
    """Where the dataset manifests behind the cache keys of ``dataset`` are kept (to name changed files)."""
    return Path(cache_dir) / dataset / "manifests"


def cache_key_parts(method: str, weights_id: str, ds: PairedDataset, extra: dict | None = None,
                    manifests: str | Path | None = None, io: str = "official") -> dict:
    """What a method's fused images of ``ds`` depend on: the spec fields that change its output, the
    weights (``file:<sha256>`` / ``model:<sha256>`` / ``none``), the dataset and split names, the input
    images' bytes and size policy (``files:<digest>``), ``extra`` (e.g. text embeddings) and, for methods
    with an official script, the io the images are made with (``"official"`` / ``"float"``; methods
    without one make the same images under either io, so their keys do not name it)."""
    spec = get_fusion_spec(method)
    parts = {"v": CACHE_VERSION, "method": method, "spec": {k: getattr(spec, k) for k in _KEYED_SPEC_FIELDS},
             "weights": weights_id, "dataset": ds.card.name, "split": ds.split,
             "inputs": dataset_fingerprint(ds, labels=False, save_to=manifests), "extra": extra or {}}
    if spec.official_image is not None:
        parts["io"] = image_io(spec, io)
    return parts


def cache_key(method: str, weights_id: str, ds: PairedDataset, extra: dict | None = None,
              io: str = "official") -> str:
    """The 16-hex digest of :func:`cache_key_parts`."""
    return digest(cache_key_parts(method, weights_id, ds, extra, io=io))


def _text_digests(text_dir: str | Path | None, ids: list[str]) -> dict | None:
    if text_dir is None:
        return None
    files = [Path(text_dir) / f"{i}.npy" for i in ids]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"text embeddings missing in {text_dir} for {len(missing)} id(s): {', '.join(missing[:10])}")
    digests = file_digests(files)
    return {i: digests[f][:16] for i, f in zip(ids, files)}


def _open_cache(h5_path: Path) -> h5py.File:
    """Open the HDF5 cache for appending; a file left unreadable by a killed process is moved aside."""
    try:
        return h5py.File(h5_path, "a")
    except OSError as exc:
        k = 1
        while h5_path.with_name(f"{h5_path.name}.corrupt{k}").exists():
            k += 1
        aside = h5_path.with_name(f"{h5_path.name}.corrupt{k}")
        h5_path.rename(aside)
        log.warning("fusion cache %s could not be opened (%s); moved to %s, fusing again", h5_path, exc, aside.name)
        return h5py.File(h5_path, "a")


def _size_groups(ds: PairedDataset, ids: list[str], batch_size: int) -> list[list[int]]:
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in (ds.index(s) for s in ids):
        by_size.setdefault(ds.size(i), []).append(i)
    return [idx[k:k + batch_size] for idx in by_size.values() for k in range(0, len(idx), batch_size)]


def cache_location(ds: PairedDataset, method: str, cache_dir: str | Path, weights: str | None = None, model=None,
                   text_dir: str | Path | None = None, io: str = "official") -> tuple[dict, Path]:
    """The key parts and the HDF5 file of ``method``'s fused images of ``ds`` in ``cache_dir``."""
    spec = get_fusion_spec(method)
    if model is None and spec.trainable and weights is None:
        raise WeightsError(f"{method!r} is a learned method and needs weights: pass weights=PATH (or 'official' "
                           f"with TASKEVAL_WEIGHTS_DIR), or train them with 'taskeval fuse train'")
    if model is not None:
        from fusion_models.weights import state_dict_hash

        weights_id = "model:" + state_dict_hash(model)
    elif weights is not None:
        weights_id = "file:" + weights_digest(spec, weights, 16)
    else:
        weights_id = "none"
    parts = cache_key_parts(method, weights_id, ds, {"text": _text_digests(text_dir, ds.ids)},
                            manifests=manifest_folder(cache_dir, ds.card.name), io=io)
    return parts, Path(cache_dir) / ds.card.name / f"{method}-{digest(parts)}.h5"


def cached_ids(ds: PairedDataset, method: str, cache_dir: str | Path, weights: str | None = None,
               text_dir: str | Path | None = None, io: str = "official") -> set[str]:
    """The ids of ``ds`` whose fused image is already in the cache (nothing is computed)."""
    _, h5_path = cache_location(ds, method, cache_dir, weights, None, text_dir, io)
    if not h5_path.is_file():
        return set()
    try:
        with h5py.File(h5_path, "r") as h5:
            grp = h5.get(ds.split)
            return {i for i in ds.ids if grp is not None and i in grp}
    except OSError:
        return set()


def fuse_split(ds: PairedDataset, method: str, cache_dir: str | Path, weights: str | None = None,
               device: str = "cpu", batch_size: int = 4, progress: bool = True, model=None,
               text_dir: str | Path | None = None, io: str = "official") -> FusedSet:
    """Fuse every pair of ``ds`` with ``method`` (cached) and return the :class:`FusedSet`.

    Args:
        ds: the split to fuse.
        method: registered fusion method name.
        cache_dir: folder for ``<dataset>/<method>-<key>.h5`` and the exported PNGs.
        weights: checkpoint path / ``"official"``; required for learned methods.
        model: an already built model (joint training); its state is hashed into the key.
        text_dir: per-image text embeddings ``<id>.npy`` for methods with ``needs_text``.
        io: ``"official"`` (default): a method with an official script writes that script's 8-bit image
            (``spec.official_image``; a grey one is recoloured with the visible chroma for the task
            networks, its luminance kept, see the module docstring); ``"float"``: the harness's float pipeline
            (:func:`taskeval.fusing.apply_fusion`, rounded). Methods without an official script use the
            float pipeline under either.

    Returns:
        The set; ``paths`` are the task networks' images, ``meta`` has ``h5`` (the written images),
        ``computed`` (pairs fused now), ``io`` (``"official"``/``"float"``, what was used) and ``io_note``.
    """
    spec = get_fusion_spec(method)
    mode = image_io(spec, io)
    parts, h5_path = cache_location(ds, method, cache_dir, weights, model, text_dir, io)
    key = digest(parts)
    folder = h5_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    png_dir = folder / f"{method}-{key}" / ds.split
    with file_lock(h5_path.with_suffix(".lock")), _open_cache(h5_path) as h5:
        h5.attrs.update({"method": method, "key": key, "weights": parts["weights"], "dataset": ds.card.name,
                         "io": mode})
        grp = h5.require_group(ds.split)
        todo = [s for s in ds.ids if s not in grp]
        computed = len(todo)
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
                try:
                    with torch.no_grad():
                        images = written_images(model, ir, vis, text=text, spec=spec, io=mode)
                except DataError as exc:
                    raise DataError(f"{exc} (pairs {[ds.ids[i] for i in batch]})") from None
                for i, img in zip(batch, images):
                    grp.create_dataset(ds.ids[i], data=img, compression="gzip", compression_opts=1)
                h5.flush()
                bar.update(len(batch))
            bar.close()
        paths = {}
        for sid in ds.ids:
            png = png_dir / f"{sid}.png"
            if not png.is_file():
                img = grp[sid][()]
                if img.ndim == 2 and mode == "official":
                    img = task_image(img, _vis_8bit(ds, sid), spec, mode)
                write_png(png, img)
            paths[sid] = png
        grey = bool(ds.ids) and grp[ds.ids[0]].ndim == 2
    note = ""
    if weights is not None and spec.trainable:
        from taskeval.fusion_train import weights_note

        # "trained by taskeval (fusion loss)" / joint-training notes travel with the weights into every table
        note = weights_note(weights) or f"weights {Path(str(weights)).name}"
    return FusedSet(method, ds.card.name, ds.split, key, paths, note,
                    {"h5": str(h5_path), "computed": computed,
                     "manifests": str(manifest_folder(cache_dir, ds.card.name)),
                     "io": mode, "io_note": io_note(spec, mode, grey)}, parts)


def _vis_8bit(ds: PairedDataset, sample_id: str) -> np.ndarray:
    """(H,W,3) uint8 visible image of a pair (8-bit: the official path has checked it)."""
    vis = ds.read_pair(ds.index(sample_id))[1]
    return np.rint(vis * 255.0).astype(np.uint8)


def export_written(fused: FusedSet, out: str | Path) -> list[Path]:
    """Write the cached images the method wrote (not the task networks' recoloured copies) as
    ``out/<id>.png``, replacing files of those names. Under ``io="official"`` these are the official
    script's images, grey where it writes grey.

    Raises:
        DataError: ``fused`` has no fusion cache (a precomputed folder or source images).
    """
    if "h5" not in fused.meta:
        raise DataError(f"fused set {fused.method!r} has no fusion cache to export from")
    out = Path(out)
    written = []
    h5_path = Path(fused.meta["h5"])
    with file_lock(h5_path.with_suffix(".lock")), h5py.File(h5_path, "r") as h5:
        grp = h5[fused.split]
        for sid in fused.ids:
            write_png(out / f"{sid}.png", grp[sid][()])
            written.append(out / f"{sid}.png")
    return written


def source_set(ds: PairedDataset, modality: str = "vis") -> FusedSet:
    """The dataset's own images of one modality (``"ir"`` or ``"vis"``) as a :class:`FusedSet`, without
    fusing or caching (their files as they are; not for packed 4-channel datasets such as MFNet)."""
    if modality not in ("ir", "vis"):
        raise ValueError(f"modality must be 'ir' or 'vis', got {modality!r}")
    if any(r.packed for r in ds.records):
        raise DataError(f"{ds.card.name} packs IR and visible into one file: fuse it with the '{modality}' method")
    files = {r.id: getattr(r, modality) for r in ds.records}
    parts = {"v": CACHE_VERSION, "source": manifest_fingerprint(files_manifest(
        {i: {modality: f} for i, f in files.items()}, ds.card.name, ds.split))}
    return FusedSet(modality, ds.card.name, ds.split, digest(parts), files, "", {}, parts)


def precomputed_set(folder: str | Path, ds: PairedDataset, name: str | None = None,
                    check_sizes: bool = True, allow_extra: bool = False,
                    manifests: str | Path | None = None) -> FusedSet:
    """Wrap a folder of fused images (matched to ``ds`` ids by file stem).

    Its key hashes the files' bytes (not their names' folder, sizes or times); with ``manifests`` the
    per-file digests are kept there so that a refusal can name the images that changed.

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
    manifest = files_manifest({s: {"fused": found[s]} for s in ds.ids}, ds.card.name, ds.split)
    parts = {"v": CACHE_VERSION, "precomputed": manifest_fingerprint(manifest, manifests)}
    meta = {"folder": str(folder), **({"manifests": str(manifests)} if manifests else {})}
    return FusedSet(name or folder.name, ds.card.name, ds.split, digest(parts), {s: found[s] for s in ds.ids},
                    "precomputed folder", meta, parts)
