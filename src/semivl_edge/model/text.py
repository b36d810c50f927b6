"""Class and concept text embeddings with the CLIP text encoder, and reading them back.

A class is described by one or more texts (its definition source) put into one or more prompt templates;
all those prompts are embedded, L2-normalised, averaged and normalised again: one row per class.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import PipelineError

CLASS_FILE = "class_embeddings.safetensors"
CONCEPT_FILE = "concept_embeddings.safetensors"
META_FILE = "meta.json"
_BATCH = 64


def check_templates(templates: list[str]) -> None:
    for template in templates:
        if template.count("{}") != 1:
            raise PipelineError(f"classes.templates: each template needs exactly one {{}} placeholder, got {template!r}")


def prompts_for(texts: list[str], templates: list[str]) -> list[str]:
    """Every text in every template, e.g. "a photo of a cat."."""
    return [template.format(text) for text in texts for template in templates]


@torch.no_grad()
def encode_texts(clip: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings [N, E] (float32)."""
    clip.eval()
    rows = []
    for start in range(0, len(texts), _BATCH):
        tokens = tokenizer(texts[start:start + _BATCH])
        rows.append(clip.encode_text(tokens, normalize=True).float())
    return torch.cat(rows) if rows else torch.zeros(0, 0)


def mean_embeddings(clip: torch.nn.Module, tokenizer, groups: list[list[str]], templates: list[str]) -> torch.Tensor:
    """One normalised row per group: the re-normalised mean of the group's prompt embeddings."""
    check_templates(templates)
    prompts = [prompts_for(texts, templates) for texts in groups]
    flat = encode_texts(clip, tokenizer, [p for group in prompts for p in group])
    rows, start = [], 0
    for group in prompts:
        rows.append(flat[start:start + len(group)].mean(dim=0))
        start += len(group)
    return F.normalize(torch.stack(rows), dim=-1)


@dataclass
class TextEmbeddings:
    """What the `text_embeddings` stage wrote."""

    classes: torch.Tensor  # [C, E] normalised
    concepts: torch.Tensor  # [K, E] normalised
    concept_class: torch.Tensor  # [K] int64: the class of each concept
    meta: dict


def read_text_embeddings(directory: str | os.PathLike = "data/text_embeddings") -> TextEmbeddings:
    from safetensors.torch import load_file

    directory = Path(directory)
    paths = [directory / CLASS_FILE, directory / CONCEPT_FILE, directory / META_FILE]
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"{path}: text embeddings not found (run the text_embeddings stage)")
    try:
        classes = load_file(str(paths[0]))["embeddings"]
        concept_file = load_file(str(paths[1]))
        meta = json.loads(paths[2].read_text())
        return TextEmbeddings(classes, concept_file["embeddings"], concept_file["class_index"], meta)
    except Exception as exc:  # missing keys, bad JSON, corrupt safetensors
        raise PipelineError(f"{directory}: unreadable text embeddings ({type(exc).__name__}: {str(exc)[:100]})") from None
