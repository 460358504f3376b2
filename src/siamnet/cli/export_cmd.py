"""`siamnet export`: the embedding network and the head as ONNX or TorchScript files, or the
weights and their description as a safetensors folder that every verb accepts."""

from __future__ import annotations

import argparse
from typing import Any

from siamnet.cli.common import CHECKPOINT_HELP, add_verb, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(
        subparsers,
        "export",
        "Export a trained model's embedding network and head to ONNX or TorchScript, or its "
        "weights to a safetensors folder.",
        "siamnet export runs/digits --format onnx --out model.onnx\n"
        "  siamnet export runs/digits --format torchscript --out model.pt\n"
        "  siamnet export runs/digits --format safetensors --out shared/digits",
    )
    p.epilog = (
        "files (onnx, torchscript):\n"
        "  OUT                  the embedding network: float images [B, C, H, W] with raw pixel\n"
        "                       values 0..255 -> embeddings [B, D]\n"
        "  OUT_STEM.head.EXT    the head: embeddings a, b [B, D] -> similarity score [B], the\n"
        "                       score the checkpoint's threshold applies to (same if >= it)\n"
        "  OUT_STEM.json        input size and channels, head, threshold, classes, parity,\n"
        "                       and the sha256 of the two files above\n"
        "OUT is written under exactly the name given (a name without any suffix gets .onnx or\n"
        ".pt); OUT_STEM is OUT without its last suffix: --out m.v2.onnx writes m.v2.onnx,\n"
        "m.v2.head.onnx and m.v2.json. The checkpoint being exported is never replaced.\n"
        "The exported networks are run on random inputs and must match PyTorch within\n"
        "1e-5 + 1e-5*|value| before anything is written. Every file is written to a temporary\n"
        "name first; OUT_STEM.json is removed, then the two networks and a new OUT_STEM.json\n"
        "(last) are renamed into place, so an export that is stopped never leaves a\n"
        "description of files that are not its own.\n"
        "\n"
        "files (safetensors; OUT is a folder):\n"
        "  OUT/model.safetensors  the weights (state_dict), read with no pickle\n"
        "  OUT/config.json        model, input size, normalisation, head, threshold, classes,\n"
        "                         training arguments and figures, the sha256 of the weights\n"
        "  OUT/README.md          a model card\n"
        "Every verb (compare, classify, index, evaluate, calibrate, serve, export) takes OUT\n"
        "where it takes a run folder; calibrate rewrites OUT/config.json. An OUT with files in\n"
        "it needs --overwrite; the folder is written beside OUT and swapped into place, keeping\n"
        "other files already in OUT (a clone's .git). In Python: siamnet.from_pretrained(OUT),\n"
        "and siamnet.push_to_hub(CKPT, 'owner/name') to upload it (the hub extra)."
    )
    p.add_argument("checkpoint", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript", "safetensors"],
        default="onnx",
        help="onnx needs the onnx extra (onnx, onnxscript, onnxruntime)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="the embedding network's file (onnx, torchscript) or the folder (safetensors)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from siamnet.checkpoint import load_checkpoint
    from siamnet.export import export_model

    ckpt = load_checkpoint(args.checkpoint, "cpu")
    if args.format == "safetensors":
        return run_safetensors(args, ckpt)
    result = export_model(ckpt, args.format, args.out, overwrite=args.overwrite)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"embedding network: {result.embedding_file}")
    print(f"head:              {result.head_file}")
    print(f"description:       {result.info_file}")
    print(
        f"parity with PyTorch: max |difference| {result.embedding_max_abs_diff:.2g} "
        f"(embeddings), {result.score_max_abs_diff:.2g} (scores); tolerance {result.tolerance:g}"
    )
    return 0


def run_safetensors(args: argparse.Namespace, ckpt: Any) -> int:
    from siamnet.sharing import write_shared

    shared = write_shared(ckpt, args.out, args.overwrite, "--out")
    if args.json:
        print_json(shared.to_dict())
        return 0
    print(
        f"weights:     {shared.weights_file} ({shared.tensors} tensors, {shared.parameters:,} "
        "parameters)"
    )
    print(f"config:      {shared.config_file}")
    print(f"model card:  {shared.card_file}")
    print(f"use it as a run folder: siamnet compare {shared.folder} A.png B.png")
    return 0
