"""``taskeval fuse``: fuse a dataset split or two folders; ``taskeval fuse train``: train a fusion network."""

from __future__ import annotations

import os
from pathlib import Path

from taskeval.cli.common import DEVICE_HELP, add_overrides
from taskeval.cli.run_common import add_io_option
from taskeval.config import load_config, to_dict
from taskeval.data.card import load_card, parse_card
from taskeval.data.dataset import PairedDataset
from taskeval.devices import resolve_device
from taskeval.errors import ConfigError
from taskeval.rundir import RunDir


def default_cache() -> Path:
    return Path(os.environ.get("TASKEVAL_CACHE", "runs/cache"))


def _dataset(args) -> PairedDataset:
    if args.data:
        card = load_card(args.data, args.root)
        return PairedDataset(card, args.split, size_policy=args.size_policy)
    if not (args.ir and args.vis):
        raise ConfigError("give --data CARD (with --split) or both --ir DIR and --vis DIR")
    ir, vis = Path(args.ir).resolve(), Path(args.vis).resolve()
    card = parse_card({"name": ir.parent.name or "folders", "format": "folders", "root": str(ir.parent),
                       "options": {"ir": ir.name, "vis": os.path.relpath(vis, ir.parent)}}, None, "--ir/--vis")
    return PairedDataset(card, "all", size_policy=args.size_policy)


def run_fuse(args) -> int:
    args.device = str(resolve_device(args.device))
    from taskeval.fusedset import export_written, fuse_split

    ds = _dataset(args)
    fused = fuse_split(ds, args.method, args.cache or default_cache(), weights=args.weights, device=args.device,
                       batch_size=args.batch_size, text_dir=args.text_dir, io=args.io)
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        clashes = [i for i in fused.ids if (out / f"{i}.png").exists()]
        if clashes and not args.overwrite:
            raise ConfigError(f"{out} already holds {len(clashes)} of these files (e.g. {clashes[0]}.png); "
                              "pass --overwrite or choose another --out")
        export_written(fused, out)
    task_dir = Path(next(iter(fused.paths.values()))).parent if fused.paths else None
    where = out if out is not None else task_dir
    computed = fused.meta["computed"]
    cached = len(fused.ids) - computed
    how = (f"fused {computed} pair(s)" + (f", {cached} from the cache" if cached else "") if computed
           else f"all {cached} pairs from the cache, nothing fused")
    print(f"{args.method} on {ds.card.name}/{ds.split}: {how} -> {where} (cache {fused.meta['h5']}, key {fused.key})")
    if fused.meta["io_note"]:
        print(f"images: {fused.meta['io_note']}" + (f"; the task networks' copies: {task_dir}"
                                                    if out is not None and "recoloured" in fused.meta["io_note"]
                                                    else ""))
    return 0


def run_train(args) -> int:
    args.device = str(resolve_device(args.device))
    from taskeval.fusion_train import FusionTrainConfig, train_fusion

    cfg = load_config(FusionTrainConfig, args.config, args.overrides)
    card = load_card(args.data, args.root)
    ds = PairedDataset(card, args.split, size_policy=args.size_policy)
    run = RunDir.create(args.out, f"fuse-train-{args.method}", resume=args.resume)
    run.write_provenance({"method": args.method, "data": card.name, "split": args.split,
                          "init_weights": args.weights, **to_dict(cfg)}, seeds=[cfg.seed])
    run.attach_log()
    path = train_fusion(args.method, ds, run.path, cfg, device=args.device, init_weights=args.weights)
    print(f"trained {args.method} on {card.name}/{args.split}: {path}\n"
          f"use it with: taskeval fuse --method {args.method} --weights {path} ...")
    return 0


def _common(p) -> None:
    p.add_argument("--method", required=True, help="registered fusion method (see 'taskeval models')")
    p.add_argument("--weights", help="checkpoint path, or 'official' (looked up in $TASKEVAL_WEIGHTS_DIR)")
    p.add_argument("--data", help="dataset card (built-in name or YAML)")
    p.add_argument("--root", help="dataset root (overrides the card's)")
    p.add_argument("--split", default="test", help="split to use (default test)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--size-policy", default=None, choices=("error", "resize-ir"),
                   help="IR/visible size mismatch: error or resize IR to the visible size (logged); default: the "
                        "card's size_policy (error)")


def register(sub) -> None:
    register_train(sub)
    p = sub.add_parser("fuse", help="fuse a dataset split or two folders; 'fuse train' trains a fusion network",
                       description="Fuse with a registered method (batched, cached in HDF5 keyed by method, "
                                   "weights and inputs). Use 'taskeval fuse train ...' to train a learned method "
                                   "with the unsupervised fusion loss.")
    _common(p)
    p.add_argument("--ir", help="folder of IR images (instead of --data)")
    p.add_argument("--vis", help="folder of visible images (instead of --data)")
    p.add_argument("--out", help="write the fused PNGs here (default: only the cache): the images the method "
                   "writes (with --io official a port's official 8-bit images, grey where its code writes grey)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    p.add_argument("--cache", help="cache folder (default $TASKEVAL_CACHE or runs/cache)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--text-dir", help="per-image text embeddings <id>.npy for methods that take text (FILM)")
    add_io_option(p)
    p.set_defaults(func=run_fuse)


def register_train(sub) -> None:
    t = sub.add_parser("fuse-train", help="train a fusion network with the unsupervised fusion loss",
                       description="Train a learned fusion method on a dataset split with intensity + gradient + "
                                   "SSIM losses. Overrides: epochs, batch, crop, lr, seed, loss.w_int, "
                                   "loss.w_grad, loss.w_ssim, max_pairs.")
    _common(t)
    t.set_defaults(split="train")
    t.add_argument("--out", help="run directory")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    t.add_argument("--config", help="YAML with FusionTrainConfig fields")
    add_overrides(t)
    t.set_defaults(func=run_train)
