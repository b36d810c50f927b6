"""The embedded default's CLIP asset: the file its provenance describes, loading strictly into semivl-tiny, and
the command that makes it from a clip_pretrain output."""
from __future__ import annotations

import argparse
import json

import pytest
import yaml
import torch
from safetensors.torch import load_file, save_file

from semivl_edge.errors import PipelineError
from semivl_edge.hashing import file_sha256
from semivl_edge.model.clip import load_clip
from semivl_edge.tools import clip_asset

from conftest import REPO

ASSET = REPO / clip_asset.ASSET


def test_the_committed_asset_is_what_its_provenance_says_and_the_default():
    provenance = json.loads(clip_asset.provenance_path(ASSET).read_text())
    assert file_sha256(ASSET) == provenance["sha256"] and ASSET.stat().st_size == provenance["size_bytes"]
    assert ASSET.stat().st_size < clip_asset.MAX_MB * 1e6
    assert provenance["clip_pretrain"]["trained"] and provenance["clip_model"] == "semivl-tiny"
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["clip"] == {"model": "semivl-tiny", "pretrained": clip_asset.ASSET.as_posix(), "quick_gelu": "auto"}
    made = provenance["clip_pretrain"]
    for key, value in params["clip_pretrain"].items():  # made with today's clip_pretrain parameters
        if key != "device":
            assert made.get(key, made.get(f"captions_{key}")) == value, key


def test_the_asset_loads_strictly_into_semivl_tiny():
    load_clip("semivl-tiny", str(ASSET))  # raises on any missing, unexpected or mis-shaped key


def _args(source, asset):
    parser = argparse.ArgumentParser()
    clip_asset.add_arguments(parser)
    return parser.parse_args(["--source", str(source), "--asset", str(asset)])


def test_clip_asset_copies_a_pretrained_clip_with_provenance(tmp_path):
    source = tmp_path / "models/clip"
    source.mkdir(parents=True)
    save_file(load_clip("semivl-tiny", "none").state_dict(), str(source / "clip.safetensors"))
    (source / "meta.json").write_text(json.dumps({"trained": True, "clip_model": "semivl-tiny", "final_loss": 2.5}))
    asset = tmp_path / "assets/clip.safetensors"
    clip_asset.run(_args(source, asset))
    provenance = json.loads(clip_asset.provenance_path(asset).read_text())
    original, stored = load_file(str(source / "clip.safetensors")), load_file(str(asset))
    assert original.keys() == stored.keys()
    assert all(stored[k].dtype == torch.float16 and torch.equal(stored[k], original[k].half()) for k in original
               if original[k].is_floating_point())
    assert provenance["sha256"] == file_sha256(asset) and provenance["clip_pretrain"]["final_loss"] == 2.5
    assert provenance["source_sha256"] == file_sha256(source / "clip.safetensors")


def test_clip_asset_refuses_a_stage_that_trained_nothing(tmp_path):
    source = tmp_path / "models/clip"
    source.mkdir(parents=True)
    (source / "meta.json").write_text(json.dumps({"trained": False, "clip_pretrained": "none"}))
    with pytest.raises(PipelineError, match="the stage trained nothing"):
        clip_asset.run(_args(source, tmp_path / "asset.safetensors"))
    assert not (tmp_path / "asset.safetensors").exists()
