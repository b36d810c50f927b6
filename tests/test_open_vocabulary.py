"""Open vocabulary on the device: new class names embedded by text_encoder.pte and segmented by
model_segment_fp32.pte give what PyTorch gives for the same names."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from semivl_edge.data.classes import load_classes
from semivl_edge.export.open_vocabulary import ExecuTorchMethod, SegmentWindowModel
from semivl_edge.model.clip import get_tokenizer, load_clip
from semivl_edge.model.io import load_model
from semivl_edge.model.text import mean_embeddings, prompts_for

pytestmark = pytest.mark.slow
TEMPLATES = ["a photo of a {}.", "a picture of a {}."]


def test_a_class_renamed_by_a_synonym_segments_on_the_device_as_in_pytorch(reproduced_project):
    """On the files the tiny project's export_torchscript stage wrote."""
    root = reproduced_project.root
    classes = load_classes(root / "data/classes/voc.yaml")
    sofa = classes.names.index("sofa")
    synonym = classes.definitions["gpt_concepts"][sofa][1]
    assert synonym == "couch"  # from the class file's concept lists, never a training text
    names = [[synonym] if i == sofa else [name] for i, name in enumerate(classes.names)]

    network, cfg, trained_set = load_model(root / "models/model.safetensors")
    clip = load_clip(cfg.clip_model, str(root / cfg.clip_pretrained))
    tokenizer = get_tokenizer(cfg.clip_model)
    manifest = json.loads((root / "models/mobile/manifest.json").read_text())  # what an app reads
    size = manifest["input_size"]
    segmenter = SegmentWindowModel(network.eval(), trained_set, cfg.pixel_mean, cfg.pixel_std, size,
                                   manifest["training_crop"])

    # The app's way: tokens -> text_encoder.pte -> mean of each class's prompts, normalised -> segmenter.
    text_pte = ExecuTorchMethod(root / "models/mobile/text_encoder.pte")
    segment_pte = ExecuTorchMethod(root / "models/mobile/model_segment_fp32.pte")
    prompts = [prompts_for(group, TEMPLATES) for group in names]
    rows = text_pte(tokenizer([p for group in prompts for p in group]).to(torch.int64))
    on_device = F.normalize(rows.reshape(len(names), len(TEMPLATES), -1).mean(dim=1), dim=-1)
    in_pytorch = mean_embeddings(clip, tokenizer, names, TEMPLATES)
    torch.testing.assert_close(on_device, in_pytorch, atol=1e-5, rtol=1e-5)
    assert (in_pytorch[sofa] - trained_set[sofa]).abs().max() > 1e-3  # the class set really changed

    windows = torch.randint(0, 256, (3, 1, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for window in windows:
        expected = segmenter(window, in_pytorch)
        got = segment_pte(window, on_device)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(got.argmax(1), expected.argmax(1))
    # Fewer classes through the same file: a class set of another size.
    subset = on_device[[0, sofa, 8]]
    torch.testing.assert_close(segment_pte(windows[0], subset), segmenter(windows[0], subset), atol=1e-4, rtol=1e-4)
