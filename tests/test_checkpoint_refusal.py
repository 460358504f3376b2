"""Any file that is not a whole siamnet checkpoint is refused with CheckpointError, not a crash:
one line naming the file and, for metadata of the wrong type, the field. Writes survive a full
disk and follow the umask."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import stat

import pytest
import torch

from siamnet.checkpoint import load_checkpoint, read_checkpoint_payload, update_metadata
from siamnet.errors import CheckpointError

from helpers import limit_file_size, one_error_line, siamnet
from shapes_model import shape_png, write_checkpoint


def test_random_bytes_of_many_kinds_are_refused(tmp_path):
    """Arbitrary bytes fail the unpickler in many ways (IndexError, KeyError, ...): all refused."""
    rng = random.Random(0)
    path = tmp_path / "noise.pt"
    starts = [b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04"]  # raw, pickle 2, pickle 4, zip
    for i in range(400):
        size = rng.choice([1, 7, 64, 4096])
        path.write_bytes(starts[i % len(starts)] + rng.randbytes(size))
        with pytest.raises(CheckpointError, match="noise.pt"):
            read_checkpoint_payload(path)


def test_truncated_checkpoints_are_refused(tmp_path):
    whole = write_checkpoint(tmp_path / "whole.pt", "contrastive").read_bytes()
    cut = tmp_path / "cut.pt"
    for fraction in (0.01, 0.1, 0.5, 0.9, 0.999):
        cut.write_bytes(whole[: int(len(whole) * fraction)])
        with pytest.raises(CheckpointError, match="cut.pt"):
            read_checkpoint_payload(cut)


def test_a_plain_pickle_is_unreadable(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=2))
    with pytest.raises(CheckpointError, match="plain.pt: not a siamnet checkpoint .unreadable"):
        read_checkpoint_payload(path)


def test_a_torch_file_of_other_weights_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="state.pt: not a siamnet checkpoint .no 'siamnet"):
        read_checkpoint_payload(path)


def test_a_pickle_the_weights_unpickler_cannot_read_says_why_in_one_line(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({"model": [1, 2, 3]}, path, pickle_protocol=5, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_payload(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400
    assert "PyTorch 2.6" not in message  # torch's long advice is cut down to its detail


# --- metadata of the wrong type ----------------------------------------------------------------


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("refusal") / "whole.pt", "contrastive")


def spec_change(**changes):
    def change(payload):
        meta = json.loads(payload["metadata"])
        meta["model_spec"].update(changes)
        payload["metadata"] = json.dumps(meta)

    return change


def meta_change(**changes):
    def change(payload):
        meta = json.loads(payload["metadata"])
        meta.update(changes)
        payload["metadata"] = json.dumps(meta)

    return change


def payload_change(**changes):
    return lambda payload: payload.update(changes)


def drop_weight(payload):
    payload["model"].pop(sorted(payload["model"])[-1])


BAD_CHECKPOINTS = {
    "normalization {}": (
        spec_change(normalization={}),
        "field metadata.model_spec.normalization.scale is missing (expected a positive number)",
    ),
    "normalization a string": (
        spec_change(normalization="imagenet"),
        "field metadata.model_spec.normalization: expected an object with scale, mean and std, "
        'found a string "imagenet"',
    ),
    "mean of 3 for 1 channel": (
        spec_change(normalization={"scale": 255.0, "mean": [0.1, 0.2, 0.3], "std": [1.0]}),
        "field metadata.model_spec.normalization.mean: expected 1 value (in_channels is 1), "
        "found a list [0.1, 0.2, 0.3]",
    ),
    "image_size ab": (
        spec_change(image_size="ab"),
        "field metadata.model_spec.image_size: expected [height, width], two whole numbers from "
        '1 to 4096, found a string "ab"',
    ),
    "in_channels 0": (
        spec_change(in_channels=0),
        "field metadata.model_spec.in_channels: expected 1 or 3 (image channels), found a number 0",
    ),
    "in_channels huge": (
        spec_change(in_channels=10**30),
        "field metadata.model_spec.in_channels: expected 1 or 3 (image channels), found a number",
    ),
    "image_size huge": (
        spec_change(image_size=[2**31, 2**31]),
        "field metadata.model_spec.image_size: expected [height, width], two whole numbers from "
        "1 to 4096, found a list [2147483648, 2147483648]",
    ),
    "image_size too large for the weights": (
        spec_change(image_size=[4096, 4096]),
        "weights do not fit the model it describes: 1 of another shape (e.g. backbone.fc1.weight: "
        "[120, 1600] in the file, [120, 66846976] in the model)",
    ),
    "model a list": (
        spec_change(model=["conv4"]),
        'field metadata.model_spec.model: expected the name of a backbone, found a list ["conv4"]',
    ),
    "unknown model": (
        spec_change(model="vgg"),
        "field metadata.model_spec.model: expected one of seed-cnn, koch, conv4, conv4-map, "
        "conv4-pool, resnet18, resnet18-imagenet or a timm:NAME or package.module:Class name, "
        'found a string "vgg"',
    ),
    "unknown spec field": (
        spec_change(depth=3),
        "field metadata.model_spec.depth: not a field this siamnet knows",
    ),
    "image too small for the backbone": (
        spec_change(image_size=[5, 5]),
        "field metadata.model_spec: cannot build the 'seed-cnn' model it describes: seed-cnn "
        "needs inputs of at least 10×10",
    ),
    "threshold high": (
        meta_change(threshold="high"),
        'field metadata.threshold: expected a number or null, found a string "high"',
    ),
    "threshold true": (
        meta_change(threshold=True),
        "field metadata.threshold: expected a number or null, found true/false true",
    ),
    "threshold too large for a float": (
        meta_change(threshold=10**400),
        "field metadata.threshold: expected a number or null, found a number 1000",
    ),
    "classes a string": (
        meta_change(classes="bar,cross"),
        "field metadata.classes: expected a list of class names or null",
    ),
    "training_args.data a number": (
        meta_change(training_args={"data": 5}),
        "field metadata.training_args.data: expected a data spec (a string) or null, found a "
        "number 5",
    ),
    "training_args a list": (
        meta_change(training_args=["digits"]),
        'field metadata.training_args: expected an object, found a list ["digits"]',
    ),
    "metadata a JSON string": (
        payload_change(metadata=json.dumps("hello")),
        'field metadata: expected a JSON object, found a string "hello"',
    ),
    "metadata an int": (
        payload_change(metadata=5),
        "field metadata: expected a JSON object written as a string, found a number 5",
    ),
    "metadata not JSON": (
        payload_change(metadata="{oops"),
        "field metadata: expected a JSON object written as a string, found text that is not JSON",
    ),
    "format_version abc": (
        payload_change(format_version="abc"),
        'field format_version: expected a whole number from 1 to 1, found a string "abc"',
    ),
    "format_version newer": (
        payload_change(format_version=9),
        "checkpoint format 9 is newer than this siamnet understands (1); upgrade siamnet",
    ),
    "weights a list": (
        payload_change(model=[1, 2]),
        "field model: expected a state_dict (parameter names mapped to tensors), found a list",
    ),
    "a weight missing": (
        drop_weight,
        "weights do not fit the model it describes: 1 missing (e.g. normalizer.std)",
    ),
}


def bad_checkpoint(whole, folder, change):
    payload = torch.load(whole, weights_only=True)
    change(payload)
    path = folder / "bad.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_field_of_the_wrong_type_is_one_line_naming_file_and_field(whole, tmp_path, case):
    change, message = BAD_CHECKPOINTS[case]
    path = bad_checkpoint(whole, tmp_path, change)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text and "--model" not in text


@pytest.mark.slow
@pytest.mark.parametrize("case", ["threshold high", "unknown model", "metadata an int"])
def test_the_command_line_refuses_a_bad_field_in_one_line(whole, tmp_path, case):
    change, message = BAD_CHECKPOINTS[case]
    path = bad_checkpoint(whole, tmp_path, change)
    image = shape_png(tmp_path / "a.png", "bar", seed=1)
    result = siamnet("compare", path, image, image)
    assert one_error_line(result) == f"siamnet: error: {path}: {message}"


def test_a_weight_changed_on_disk_is_refused_by_its_checksum(whole, tmp_path):
    """torch.load does not check the CRC-32 that each member of the archive records; a flipped
    byte in a weight would silently change every answer."""
    data = bytearray(whole.read_bytes())
    weight = torch.load(whole, weights_only=True)["model"]["backbone.fc1.weight"]
    at = bytes(data).find(weight.numpy().tobytes()[:64])
    assert at > 0
    data[at + 1000] ^= 0x40
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: damaged checkpoint: archive/data/\d+ does not match the "
        r"checksum recorded when it was written \(the file changed on disk\); use another copy",
        str(caught.value),
    )


class RunsCode:
    """A pickle that would run a command if it were ever unpickled."""

    def __reduce__(self):
        return (os.system, ("true",))


def test_a_pickle_with_code_is_refused_in_a_whole_sentence(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "siamnet-checkpoint", "model": RunsCode()}, path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_payload(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: refused to load: it holds a Python object \(\w+\.system\) "
        r"besides plain weights, and loading that could run code; siamnet only loads "
        r"checkpoints of plain weights\.",
        str(caught.value),
    )


def test_an_unreadable_pickle_is_refused_in_a_whole_sentence(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({"model": [1, 2, 3]}, path, pickle_protocol=5, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_payload(path)
    assert str(caught.value) == (
        f"{path}: refused to load: it holds more than plain weights (the weights-only reader "
        "stopped at: Unsupported operand 149), and loading that could run code; siamnet only "
        "loads checkpoints of plain weights."
    )


# --- writing -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_while_rewriting_a_checkpoint_is_one_line_and_keeps_it(whole, tmp_path):
    ckpt = tmp_path / "model.pt"
    shutil.copy(whole, ckpt)
    before = ckpt.read_bytes()
    result = siamnet(
        "calibrate",
        ckpt,
        "--data",
        "digits",
        "--best-accuracy",
        "--pairs",
        "200",
        "--quiet",
        preexec_fn=limit_file_size(len(before) // 4),
    )
    assert one_error_line(result) == (
        f"siamnet: error: no space left writing {ckpt} (the file size limit was reached); "
        "nothing was replaced: free some space and run again"
    )
    assert "PytorchStreamWriter" not in result.stderr
    assert ckpt.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_checkpoint_is_written_with_the_umask_and_no_temporary_left(whole, tmp_path):
    old = os.umask(0o027)
    try:
        update_metadata(shutil.copy(whole, tmp_path / "model.pt"), {"threshold": 0.25})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == 0o640
    assert load_checkpoint(tmp_path / "model.pt").threshold == 0.25
    assert os.listdir(tmp_path) == ["model.pt"]
