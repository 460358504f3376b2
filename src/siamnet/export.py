"""Exporting a trained model to ONNX or TorchScript, with a parity check against PyTorch.

(The third format of ``siamnet export``, ``safetensors``, is a folder of the weights and their
description that siamnet and other tools load as they are: `siamnet.sharing`.)

An export writes three files beside each other:

- ``OUT`` (e.g. ``model.onnx``), written under exactly the name given (a name without any
  suffix gets the format's, ``.onnx`` or ``.pt``): the embedding network, input ``images`` float32
  ``[B, C, H, W]`` with raw pixel values 0..255 (the checkpoint's normalisation is inside),
  output ``embeddings`` float32 ``[B, D]``; the batch size is free;
- ``OUT_STEM.head.SUFFIX`` (``model.head.onnx``; ``OUT_STEM`` is ``OUT`` without its last
  suffix, so ``m.v2.onnx`` gives ``m.v2.head.onnx``): the head, inputs ``a`` and ``b`` embeddings
  ``[B, D]``, output ``score`` ``[B]``, the user-facing similarity (probability for ``l1``,
  ``-distance`` for ``euclidean``, cosine for ``cosine``) that the checkpoint's threshold
  applies to: two images are "same" when ``score >= threshold``;
- ``OUT_STEM.json``: what a consumer needs: input channels and size, how an image file is
  brought to that size (``input.resize``: ``crop`` or ``stretch``), embedding size, head kind,
  test-time centring (inside the embedding network, where ``on``), threshold, classes, the two
  file names and the parity figures.

Two files rather than one combined module, so that a gallery or support set is embedded once
and only the cheap head runs per pair. Before anything is written the exported networks are run
in memory (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) on random inputs and must
match PyTorch within ``|x - y| <= 1e-5 + 1e-5·|y|``.

The three files are one output: each is written to a temporary name first (so a full disk or
a failed check leaves the old files as they were), then the old description is removed, the two
networks are renamed into place, and the description, which records the sha256 of both, comes
last. A set whose description is missing is incomplete, and `verify_export` refuses a
description whose recorded sha256 does not match its files.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamnet import __version__
from siamnet.checkpoint import Checkpoint
from siamnet.errors import ArgumentError, SiamnetError
from siamnet.fileio import atomic_write_files
from siamnet.models.siamese import SiameseNet
from siamnet.outpaths import check_output_file
from siamnet.temps import remove_stale_temps

#: How an image file becomes the exported network's input, by the checkpoint's ``resize``
#: (the export's description says it: the network takes images at its size already).
RESIZE_MEANS = {
    "crop": "scale the image so that it covers height x width, keeping its aspect (bilinear), "
    "then cut the centre",
    "stretch": "resize the image to height x width (bilinear), aspect not kept",
}
FORMATS = ("onnx", "torchscript")
#: Every format ``siamnet export`` writes: ``safetensors`` is a folder of weights and their
#: description that every verb loads (`siamnet.sharing.save_pretrained`).
EXPORT_FORMATS = (*FORMATS, "safetensors")
TOLERANCE = 1e-5
ONNX_OPSET = 18


class EmbeddingNetwork(nn.Module):
    """``images [B, C, H, W]`` (float, 0..255) -> ``embeddings [B, D]``."""

    def __init__(self, model: SiameseNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


class ScoreHead(nn.Module):
    """``a [B, D], b [B, D]`` embeddings -> user-facing similarity ``[B]``."""

    def __init__(self, model: SiameseNet) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head.to_score(self.head(a, b))


@dataclass
class ExportResult:
    """The files written and how far the exported outputs are from PyTorch's."""

    format: str
    embedding_file: str
    head_file: str
    info_file: str
    embedding_max_abs_diff: float
    score_max_abs_diff: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The suffix given to an output name that has none.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def export_paths(out: str | os.PathLike[str], fmt: str) -> tuple[Path, Path, Path]:
    """``(embedding file, head file, info file)`` for output `out` in format `fmt`.

    `out` is the embedding file as given (a name without any suffix gets the format's); the
    other two are named after `out` without its last suffix: ``m.v2.onnx`` gives
    ``m.v2.head.onnx`` and ``m.v2.json``.
    """
    p = Path(out)
    if p.name in ("", ".", ".."):
        raise ArgumentError(f"--out {out}: is a folder; expected a file name")
    suffix = p.suffix or SUFFIXES.get(fmt, ".pt")
    stem = p.name[: len(p.name) - len(p.suffix)]
    embed = p if p.suffix else p.with_name(p.name + suffix)
    return embed, p.with_name(f"{stem}.head{suffix}"), p.with_name(f"{stem}.json")


def check_export_paths(
    paths: tuple[Path, Path, Path], source: str | os.PathLike[str], overwrite: bool
) -> None:
    """Refuse, before any work, outputs that cannot be written, that name one file twice
    (``--out m.json``), that would replace the checkpoint being exported, or that exist
    (without `overwrite`)."""
    for p in paths:
        check_output_file(p, "--out")
    if len(set(paths)) < len(paths):
        raise ArgumentError(
            f"--out {paths[0]}: the embedding network and its description would both be "
            f"{paths[0]}; choose another name"
        )
    sources = _source_files(Path(source))
    for p in paths:
        if any(_same_file(p, f) for f in sources):
            raise ArgumentError(
                f"--out {paths[0]}: would replace {p}, the checkpoint being exported; choose "
                "another name"
            )
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ArgumentError(f"{', '.join(existing)}: already exists; pass --overwrite")


def export_model(
    source: Checkpoint,
    format: str = "onnx",
    out: str | os.PathLike[str] = "model.onnx",
    check_batch: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> ExportResult:
    """Export the embedding network and the head of checkpoint `source` to `out` (see the
    module docstring for the files) and check the exported outputs against PyTorch's.

    Existing output files are refused unless `overwrite`; the checkpoint itself always is.
    """
    if not isinstance(source, Checkpoint):
        raise ArgumentError("export needs a loaded checkpoint (it records the input size)")
    if format == "safetensors":
        raise ArgumentError(
            "--format safetensors writes a folder: use siamnet.save_pretrained(checkpoint, folder)"
        )
    if format not in FORMATS:
        raise ArgumentError(f"--format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if format == "onnx":
        onnxruntime = require_onnx()
    model = copy.deepcopy(source.model).cpu().eval()
    embed_file, head_file, info_file = paths = export_paths(out, format)
    check_export_paths(paths, source.path, overwrite)
    spec = dict(source.metadata["model_spec"])
    channels, (height, width) = spec["in_channels"], spec["image_size"]
    generator = torch.Generator().manual_seed(seed)
    example = torch.rand(2, channels, height, width, generator=generator) * 255.0
    images = torch.rand(check_batch, channels, height, width, generator=generator) * 255.0
    embedder, scorer = EmbeddingNetwork(model).eval(), ScoreHead(model).eval()
    with torch.no_grad():
        reference = embedder(images)
        a, b = reference, reference.roll(1, dims=0)
        reference_score = scorer(a, b)
    if format == "onnx":
        embed_bytes = _onnx_bytes(embedder, (example,), ["images"], ["embeddings"])
        head_bytes = _onnx_bytes(scorer, (a[:2], b[:2]), ["a", "b"], ["score"])
        run_embed = _onnx_runner(onnxruntime, embed_bytes)
        run_head = _onnx_runner(onnxruntime, head_bytes)
    else:
        embed_bytes = _torchscript_bytes(embedder, (example,))
        head_bytes = _torchscript_bytes(scorer, (a[:2], b[:2]))
        run_embed = _torchscript_runner(embed_bytes)
        run_head = _torchscript_runner(head_bytes)
    embed_diff = _check(run_embed(images), reference, "embeddings", embed_file)
    score_diff = _check(run_head(a, b), reference_score, "scores", head_file)
    result = ExportResult(
        format=format,
        embedding_file=str(embed_file),
        head_file=str(head_file),
        info_file=str(info_file),
        embedding_max_abs_diff=embed_diff,
        score_max_abs_diff=score_diff,
        tolerance=TOLERANCE,
    )
    info = _info(source, spec, result, int(reference.shape[1]), model.head.kind)
    info["sha256"] = {
        embed_file.name: hashlib.sha256(embed_bytes).hexdigest(),
        head_file.name: hashlib.sha256(head_bytes).hexdigest(),
    }
    text = json.dumps(info, indent=1) + "\n"
    remove_stale_temps(info_file.parent)
    atomic_write_files(
        [(embed_file, embed_bytes), (head_file, head_bytes), (info_file, text.encode("utf-8"))],
        remove_first=[info_file],
    )
    return result


def verify_export(info_file: str | os.PathLike[str]) -> dict[str, Any]:
    """The description ``OUT_STEM.json`` of an export, after checking that the files it names
    beside it are the ones it was written with (their sha256); `SiamnetError` otherwise."""
    p = Path(info_file)
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SiamnetError(f"{p}: missing; the export is incomplete: export again") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SiamnetError(f"{p}: not an export description (not JSON)") from exc
    digests = info.get("sha256") if isinstance(info, dict) else None
    if not isinstance(digests, dict) or not digests:
        raise SiamnetError(f"{p}: field sha256: expected the sha256 of each exported file")
    for name, want in digests.items():
        f = p.parent / str(name)
        try:
            got = hashlib.sha256(f.read_bytes()).hexdigest()
        except FileNotFoundError as exc:
            raise SiamnetError(f"{f}: missing, though {p.name} lists it; export again") from exc
        if got != want:
            raise SiamnetError(
                f"{f}: does not match {p.name} (sha256 {got[:12]}..., recorded "
                f"{str(want)[:12]}...): the files come from different exports; export again"
            )
    return info


def _source_files(source: Path) -> list[Path]:
    """The files of the checkpoint being exported: the file, or a shared model's two files."""
    if source.is_dir():
        from siamnet.sharing import CONFIG_FILE, WEIGHTS_FILE

        return [source / CONFIG_FILE, source / WEIGHTS_FILE]
    return [source]


def _same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing
        return False


def require_onnx() -> Any:
    """onnxruntime, after checking that ONNX export can work; a clear error if not."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ArgumentError(
            f"ONNX export needs {', '.join(missing)} (not installed): "
            "pip install 'siamnet[onnx]', or use --format torchscript"
        )
    import onnxruntime

    return onnxruntime


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep exporter chatter off stdout (results go there) and silence its warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
) -> bytes:
    """An ONNX model of `module`, in memory, with the batch axis free; `inputs` are also the
    names of forward's arguments."""
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            args,
            None,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes={n: {0: batch} for n in inputs},
            opset_version=ONNX_OPSET,
            external_data=False,
            dynamo=True,
            verbose=False,
        )
    module.eval()
    return program.model_proto.SerializeToString()


def _torchscript_bytes(module: nn.Module, args: tuple[torch.Tensor, ...]) -> bytes:
    """A traced TorchScript archive of `module`, in memory."""
    with _quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(module, args, check_trace=False)
    return traced.save_to_buffer()


def _onnx_runner(onnxruntime: Any, model: bytes) -> Any:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().numpy() for n, t in zip(names, tensors, strict=True)}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def _torchscript_runner(archive: bytes) -> Any:
    with warnings.catch_warnings():  # torch deprecates TorchScript (Deprecation/FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(io.BytesIO(archive), map_location="cpu").eval()

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(*tensors)

    return run


def _check(got: torch.Tensor, want: torch.Tensor, what: str, target: Path) -> float:
    """Max absolute difference, after requiring ``|got - want| <= tol + tol·|want|``."""
    if got.shape != want.shape:
        raise SiamnetError(
            f"{target}: exported model gives {what} of shape {list(got.shape)}, "
            f"PyTorch {list(want.shape)}; nothing was written"
        )
    diff = (got.float() - want.float()).abs()
    limit = TOLERANCE + TOLERANCE * want.float().abs()
    if not bool((diff <= limit).all()):
        raise SiamnetError(
            f"{target}: exported {what} differ from PyTorch's by up to {float(diff.max()):.3g} "
            f"(tolerance {TOLERANCE:g} + {TOLERANCE:g}·|value|); nothing was written"
        )
    return float(diff.max()) if diff.numel() else 0.0


def _info(
    source: Checkpoint, spec: dict[str, Any], result: ExportResult, dim: int, head: str
) -> dict[str, Any]:
    meta = source.metadata
    return {
        "format": result.format,
        "siamnet_version": __version__,
        "checkpoint": str(source.path),
        "embedding_file": Path(result.embedding_file).name,
        "head_file": Path(result.head_file).name,
        "input": {
            "name": "images",
            "dtype": "float32",
            "shape": ["batch", spec["in_channels"], *spec["image_size"]],
            "range": "raw pixel values 0..255; normalisation is inside the model",
            "resize": spec.get("resize", "stretch"),
            "resize_means": RESIZE_MEANS[spec.get("resize", "stretch")],
        },
        "centring": spec.get("centring", "none"),
        "embedding_dim": dim,
        "head": head,
        "score": "higher is more similar; 'same' when score >= threshold",
        "threshold": meta.get("threshold"),
        "classes": meta.get("classes"),
        "model_spec": spec,
        "parity": {
            "embedding_max_abs_diff": result.embedding_max_abs_diff,
            "score_max_abs_diff": result.score_max_abs_diff,
            "tolerance": result.tolerance,
        },
    }
