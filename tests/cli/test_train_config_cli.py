"""`siamnet train --config FILE` and `--print-config`: a run's configuration written, read back
and overridden by flags; files that are not a configuration are one error line."""

from __future__ import annotations

import json

from helpers import refused, siamnet


def printed_config(*args: object) -> dict:
    result = siamnet("train", "--print-config", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_printed_configuration_reads_back_the_same_and_flags_win(tmp_path):
    first = printed_config("--lr", "0.01", "--ways", "30", "--out", tmp_path / "run")
    assert first["lr"] == 0.01 and first["ways"] == 30 and first["model"] == "conv4-map"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(first))
    assert printed_config("--config", path) == first
    again = printed_config("--config", path, "--seed", "7")
    assert again["seed"] == 7 and {**again, "seed": first["seed"]} == first
    assert not (tmp_path / "run").exists()  # --print-config trains nothing


def test_a_yaml_configuration(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: conv4\nloss: triplet\nimage_size: [32, 32]\nlr: 0.002\n")
    got = printed_config("--config", path)
    assert (got["model"], got["loss"], got["image_size"], got["lr"]) == (
        "conv4",
        "triplet",
        [32, 32],
        0.002,
    )


def test_bad_configuration_files_are_one_line(tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"lr": 0.1, "lrr": 1}))
    refused(siamnet("train", "--config", unknown), "unknown key 'lrr'")
    broken = tmp_path / "broken.json"
    broken.write_text("{'lr': 0.1")
    refused(siamnet("train", "--config", broken), "not valid JSON")
    refused(siamnet("train", "--config", tmp_path / "none.json"), "cannot read")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"lr": -1}))
    refused(siamnet("train", "--config", wrong, "--out", tmp_path / "r"), "--lr -1")
    assert not (tmp_path / "r").exists()
