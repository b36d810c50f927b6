"""Parity with the official SemiVL model at the paper setting (ViT-B-16, 512x512, 21 classes, d = 128)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from semivl_edge.model.config import ModelConfig, paper_model_config
from semivl_edge.model.segmenter import build_decoder, build_model
from semivl_edge.tools import summary

PAPER_DECODER_PARAMS = 2_217_185
PAPER_TRAINABLE_ENCODER_PARAMS = 29_135_616


@pytest.fixture(scope="module")
def paper_cfg() -> ModelConfig:
    return paper_model_config()


@pytest.fixture(scope="module")
def paper_model(paper_cfg):
    torch.manual_seed(0)
    return build_model(paper_cfg, load_pretrained=False)


def count(params) -> int:
    return sum(p.numel() for p in params)


def test_decoder_parameters_match_the_paper(paper_model):
    assert count(paper_model.decoder_parameters()) == PAPER_DECODER_PARAMS


def test_trainable_encoder_parameters_match_the_paper(paper_model):
    assert count(paper_model.encoder_parameters()) == PAPER_TRAINABLE_ENCODER_PARAMS
    assert paper_model.encoder.grid == (32, 32)
    assert count(paper_model.encoder.parameters()) == 86_828_544  # ViT-B/16 image tower, 32x32 position grid


def test_decoder_size_does_not_depend_on_the_classes(paper_cfg):
    for num_classes in (2, 60):
        cfg = ModelConfig(**{**paper_cfg.to_dict(), "num_classes": num_classes})
        decoder = build_decoder(cfg, encoder_width=768)
        assert count(decoder.parameters()) == PAPER_DECODER_PARAMS


def test_summary_command_reports_counts_and_flops(capsys):
    """The CLI on the small configuration (the paper setting takes tens of seconds to count FLOPs)."""
    parser = argparse.ArgumentParser()
    summary.add_arguments(parser)
    args = parser.parse_args(["--clip-model", "semivl-tiny", "--image-size", "64", "--classes", "5",
                              "--decoder-dim", "32", "--skip-blocks", "0", "2", "--json"])
    summary.run(args)
    result = json.loads(capsys.readouterr().out)
    assert result["params_total"] > result["params_encoder_trainable"] > 0
    assert result["params_decoder"] > 0
    assert result["gflops"] == pytest.approx(result["gflops_encoder"] + result["gflops_decoder"], abs=2e-3)
    assert result["gflops_encoder"] > 0 and result["gflops_decoder"] > 0
