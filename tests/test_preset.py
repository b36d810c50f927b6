"""`semivl-edge preset`: the paper's setting written into params.yaml with its comments, and back."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from semivl_edge.cli import main
from semivl_edge.errors import PipelineError
from semivl_edge.params import Params
from semivl_edge.tools.preset import EMBEDDED, apply_preset
from semivl_edge.train.config import TrainConfig, parse_iterations

REPO = Path(__file__).resolve().parents[1]


def value(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def test_the_embedded_preset_is_the_committed_default():
    text = (REPO / "params.yaml").read_text()
    assert apply_preset(text, EMBEDDED) == (text, [])


def test_voc_paper_writes_the_official_values_and_keeps_the_comments(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    committed = (REPO / "params.yaml").read_text()
    params.write_text(committed)
    main(["preset", "voc-paper", "--params", str(params)])
    out = capsys.readouterr().out
    assert "set data.root yourself" in out and "set clip.pretrained yourself" in out and "split.labeled_file" in out
    text = params.read_text()
    data = yaml.safe_load(text)
    # The list of differences the paper's setting has from the embedded default (issue 16).
    expected = {"train.optim.encoder_lr_mult": 0.01, "train.base_size": 512, "train.crop_size": 512,
                "model.decoder_dim": 128, "model.skip_blocks": [0, 4], "train.iterations": "80 epochs",
                "eval.short_side": 512, "eval.crop_size": 512, "eval.stride": 426, "train.amp": "none",
                "classes.definitions": "names", "classes.templates": ["a photo of a {}"], "data.source": "voc",
                "clip.model": "ViT-B-16", "classes.guidance": "concepts", "train.method": "semivl",
                "model.align_corners": True, "train.optim.decoder_norm_decay": True}
    for key, want in expected.items():
        assert value(data, key) == want, key
    # What the user must give stays as it was; every comment line survives.
    before = yaml.safe_load(committed)
    for key in ("data.root", "clip.pretrained", "split.labeled_file"):
        assert value(data, key) == value(before, key)
    comments = [line.split("#", 1)[1] for line in committed.splitlines() if "#" in line]
    assert all(comment in text for comment in comments)
    # And back: the embedded preset restores the committed file's values.
    main(["preset", "embedded", "--params", str(params)])
    assert yaml.safe_load(params.read_text()) == before


def test_iterations_in_epochs_follow_the_official_rule():
    assert parse_iterations(300, "p") == (300, None)
    assert parse_iterations("80 epochs", "p") == (0, 80)
    for bad in ("80", "80 epoch", "0 epochs", 0, True, 1.5):
        with pytest.raises(PipelineError, match="train.iterations must be an integer >= 1"):
            parse_iterations(bad, "p")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["train"]["iterations"] = "80 epochs"
    cfg = TrainConfig.from_params(Params(data))
    assert cfg.epochs == 80 and cfg.iterations == 0
    assert cfg.for_split(labeled=92, unlabeled=10490).iterations == 104_880  # VOC, 92 labels, batch 8
    supervised = cfg.replace(method="supervised")
    assert supervised.for_split(labeled=92, unlabeled=10490).iterations == 80 * 11  # epochs over the labeled set
    fixed = TrainConfig.from_params(Params(yaml.safe_load((REPO / "params.yaml").read_text())))
    assert fixed.for_split(92, 1372) is fixed and fixed.iterations == 300
