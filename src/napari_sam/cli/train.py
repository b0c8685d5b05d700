"""``napari-sam train``: finetune a SAM model, or train one from scratch, on labelled images.

Data: ``--images DIR --labels DIR`` (TIFF / PNG matched by name), ``--zarr PATH`` (a group
with ``images`` and ``labels`` arrays) or ``--synthetic N`` (an endless stream of synthetic
nuclei from a pool of N images, easy to hard). Checkpoints go to ``--run-dir`` every
``--checkpoint-every`` steps (resumed from automatically), the loss log to
``RUN_DIR/log.tsv``, and the weights (official state-dict format) to ``--out`` at every
checkpoint and at the end.

``--decoder`` trains an instance decoder (automatic instance segmentation) on the frozen
image encoder of ``--model`` instead: ``--out`` then receives the decoder's weights (the
model is not changed), loadable beside the model with ``--decoder FILE`` elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import get_args

from napari_sam.training.augment import AugmentConfig
from napari_sam.training.rounds import RoundsConfig
from napari_sam.training.trainer import Freeze, TrainConfig

DECODER_LOG_HEADER = "step\tloss\tlr\tseconds\twall_time\n"
LOG_HEADER = "step\tloss\tfocal\tdice\tiou\tlr\tseconds\tobjects\twall_time\n"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="finetune or train a SAM model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data (one source)")
    data.add_argument("--images", type=Path, help="folder of images (TIFF / PNG)")
    data.add_argument("--labels", type=Path, help="folder of instance label images, same names")
    data.add_argument("--zarr", type=Path, help="zarr group with 'images' and 'labels' arrays")
    data.add_argument("--synthetic", type=int, metavar="N",
                      help="synthetic nuclei, a pool of N images refreshed as training goes")
    data.add_argument("--refresh-every", type=int, default=2, metavar="K",
                      help="synthetic: one new image (or stack) in the pool every K steps")
    data.add_argument("--curriculum-steps", type=int, default=3000,
                      help="synthetic data goes from easy to the full range over these steps")
    data.add_argument("--volume-share", type=float, default=0.0,
                      help="synthetic: share of new pool images that are slices of 3D stacks "
                           "(nuclei cut near their poles)")
    data.add_argument("--style", default="broad", choices=("broad", "wide"),
                      help="synthetic: the full-difficulty style (wide: lobed, pressed together, "
                           "dim beside bright, haze, nucleoli, smaller nuclei)")
    data.add_argument("--broad-share", type=float, default=0.0, metavar="P",
                      help="synthetic: share of new pool images drawn from the broad style "
                           "instead of --style (keeps what a broad-style model learned)")
    data.add_argument("--anisotropy", type=float, nargs=2, default=(1.5, 3.0),
                      metavar=("LOW", "HIGH"),
                      help="synthetic stacks: z voxel size / xy, drawn in this range")
    data.add_argument("--axial-blur", type=float, nargs=2, default=(1.0, 1.0),
                      metavar=("LOW", "HIGH"),
                      help="synthetic stacks: the blur's extent along z / across, drawn in "
                           "this range (microscopes: 2-4; default 1 1)")
    p.add_argument("--model", required=True,
                   help="weights to start from (a name or a file), or with --from-scratch an "
                        "architecture name (e.g. vit_nano)")
    p.add_argument("--from-scratch", action="store_true", help="random initialisation")
    dec = p.add_argument_group("instance decoder (--decoder)")
    dec.add_argument("--decoder", action="store_true",
                     help="train an instance decoder on the model's frozen image encoder")
    dec.add_argument("--decoder-features", type=int, default=16,
                     help="channels of the decoder's finest level (micro-sam's: 64)")
    dec.add_argument("--image-skip", action="store_true",
                     help="the decoder also reads the image at full resolution (finer maps "
                          "for small objects; not in micro-sam's decoders)")
    dec.add_argument("--init-decoder", type=Path, metavar="FILE",
                     help="start from this decoder's weights (its layout replaces "
                          "--decoder-features / --image-skip); a run dir's checkpoint wins")
    dec.add_argument("--batch", type=int, default=4, help="images per step")
    dec.add_argument("--crop", type=int, default=16,
                     help="embedding cells per side of a training window (0: whole image)")
    p.add_argument("--out", type=Path, required=True, help="output weights file (.pt)")
    p.add_argument("--half", action="store_true", help="store --out in float16 (half the size)")
    p.add_argument("--run-dir", type=Path, help="checkpoints and loss log (default: next to --out)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 1e-4, with --decoder 1e-3)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW weight decay (default 0.05, with --decoder 1e-4)")
    p.add_argument("--objects", type=int, default=16, help="objects per image and step")
    p.add_argument("--freeze", choices=get_args(Freeze), default="none",
                   help="parts that do not train: image_encoder; all_but_decoder (the mask "
                        "decoder trains); all_but_decoder_heads (its output heads train)")
    p.add_argument("--corrective-rounds", type=int, default=8)
    p.add_argument("--refine-rounds", type=int, default=2)
    p.add_argument("--neighbour-negatives", type=float, default=0.0, metavar="P",
                   help="share of clicked objects touching a neighbour that also get a "
                        "negative click on it (default 0)")
    p.add_argument("--carried", type=float, default=0.0, metavar="P",
                   help="share of objects on a slice of a stack, at least as large on a "
                        "slice next to it (same ids along z), prompted as a propagation step "
                        "away from their middle prompts them: that slice's mask and a click "
                        "at its centre (default 0)")
    p.add_argument("--random-depth", type=float, default=None, metavar="P0",
                   help="cheap steps: stop after a random round (round 0 with probability P0), "
                        "loss on the first and last round only")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _sampler(args: argparse.Namespace, start_step: int):
    from napari_sam.training import data

    sources = [args.images is not None, args.zarr is not None, args.synthetic is not None]
    if sum(sources) != 1:
        raise ValueError("give exactly one data source: --images/--labels, --zarr or --synthetic")
    if args.synthetic is not None:
        config = data.SyntheticConfig(pool_size=args.synthetic, seed=args.seed,
                                      curriculum_steps=args.curriculum_steps,
                                      refresh_every=args.refresh_every,
                                      volume_share=args.volume_share, style=args.style,
                                      broad_share=args.broad_share,
                                      anisotropy=tuple(args.anisotropy),
                                      axial_blur=tuple(args.axial_blur))
        return data.SyntheticSampler(config, start_step)
    if args.zarr is not None:
        return data.SliceSampler(data.ZarrPairs(args.zarr))
    if args.labels is None:
        raise ValueError("--images needs --labels")
    return data.SliceSampler(data.FolderPairs(args.images, args.labels))


def _model(args: argparse.Namespace):
    from napari_sam.model.checkpoints import load_model
    from napari_sam.model.sam import build_sam

    if args.from_scratch:
        return build_sam(args.model)
    return load_model(args.model).model


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the command line asks for."""
    depth = {} if args.random_depth is None else {
        "random_depth": True, "depth_zero_prob": args.random_depth, "loss_rounds": "first_last"}
    rounds = RoundsConfig(corrective=args.corrective_rounds, refine=args.refine_rounds,
                          neighbour_negative_prob=args.neighbour_negatives,
                          carried_prob=args.carried, **depth)
    return TrainConfig(
        steps=args.steps, lr=_or(args.lr, 1e-4), warmup_steps=args.warmup,
        weight_decay=_or(args.weight_decay, 0.05),
        objects_per_image=args.objects, freeze=args.freeze, rounds=rounds, seed=args.seed,
        augment=AugmentConfig.none() if args.no_augment else AugmentConfig(),
    )


def _or(value, default):
    return default if value is None else value


def decoder_train_config(args: argparse.Namespace):
    """The :class:`~napari_sam.training.decoder_trainer.DecoderTrainConfig` asked for."""
    from napari_sam.training.decoder_trainer import DecoderTrainConfig

    return DecoderTrainConfig(
        steps=args.steps, batch=args.batch, crop=args.crop, lr=_or(args.lr, 1e-3),
        warmup_steps=args.warmup, weight_decay=_or(args.weight_decay, 1e-4), seed=args.seed,
        augment=AugmentConfig.none() if args.no_augment else AugmentConfig(),
    )


def run_decoder(args: argparse.Namespace, device, run_dir: Path) -> int:
    """``train --decoder``: an instance decoder on the frozen encoder of ``--model``."""
    import torch
    from tqdm import tqdm

    from napari_sam.model.instance_decoder import (
        InstanceDecoder,
        InstanceDecoderConfig,
        load_instance_decoder,
    )
    from napari_sam.training.decoder_trainer import DecoderTrainer
    from napari_sam.training.trainer import export_weights, read_checkpoint

    if args.from_scratch:
        raise ValueError("--decoder trains on a trained encoder: drop --from-scratch")
    model = _model(args)
    if args.init_decoder is not None:
        decoder = load_instance_decoder(args.init_decoder, model.config).float()
    else:
        decoder = InstanceDecoder(InstanceDecoderConfig.for_sam(
            model.config, initial_features=args.decoder_features, image_skip=args.image_skip))  # fmt: skip
    config = decoder_train_config(args)
    checkpoint = run_dir / "checkpoint.pt"
    start = int(read_checkpoint(checkpoint)["step"]) if checkpoint.exists() else 0
    trainer = DecoderTrainer(model, decoder, config, _sampler(args, start), device)
    if checkpoint.exists():
        trainer.load_checkpoint(checkpoint)
        print(f"resumed from {checkpoint} at step {trainer.step}", file=sys.stderr)
    log = run_dir / "log.tsv"
    if not log.exists():
        log.write_text(DECODER_LOG_HEADER)
    dtype = torch.float16 if args.half else torch.float32
    with log.open("a") as f, tqdm(total=config.steps, initial=trainer.step,
                                   desc="train decoder", unit="step") as bar:
        for r in trainer.run():
            f.write(f"{r.step}\t{r.loss:.5f}\t{r.lr:.3g}\t{r.seconds:.2f}\t{time.time():.0f}\n")
            f.flush()
            bar.set_postfix(loss=f"{r.loss:.3f}", lr=f"{r.lr:.2g}")
            bar.update(1)
            if r.step % args.checkpoint_every == 0 or r.step == config.steps:
                trainer.save_checkpoint(checkpoint)
                export_weights(trainer.decoder.eval(), args.out, dtype)
                trainer.decoder.train()
    export_weights(trainer.decoder.eval(), args.out, dtype)
    print(f"wrote {args.out} (decoder, step {trainer.step})", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from napari_sam.device import resolve_device
    from napari_sam.training.trainer import Trainer, export_weights, read_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    run_dir = args.run_dir or args.out.with_suffix("")
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.decoder:
        return run_decoder(args, device, run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    model = _model(args)
    config = train_config(args)
    start = 0
    if checkpoint.exists():
        start = int(read_checkpoint(checkpoint)["step"])
    trainer = Trainer(model, config, _sampler(args, start), device)
    if checkpoint.exists():
        trainer.load_checkpoint(checkpoint)
        print(f"resumed from {checkpoint} at step {trainer.step}", file=sys.stderr)
    log = run_dir / "log.tsv"
    if not log.exists():
        log.write_text(LOG_HEADER)
    dtype = torch.float16 if args.half else torch.float32
    with log.open("a") as f, tqdm(total=config.steps, initial=trainer.step,
                                   desc="train", unit="step") as bar:
        for r in trainer.run():
            f.write(f"{r.step}\t{r.loss:.5f}\t{r.focal:.5f}\t{r.dice:.5f}\t{r.iou:.5f}\t"
                    f"{r.lr:.3g}\t{r.seconds:.2f}\t{r.objects}\t{time.time():.0f}\n")
            f.flush()
            bar.set_postfix(loss=f"{r.loss:.3f}", lr=f"{r.lr:.2g}")
            bar.update(1)
            if r.step % args.checkpoint_every == 0 or r.step == config.steps:
                trainer.save_checkpoint(checkpoint)
                export_weights(trainer.model, args.out, dtype)
    export_weights(trainer.model, args.out, dtype)
    print(f"wrote {args.out} (step {trainer.step})", file=sys.stderr)
    return 0
