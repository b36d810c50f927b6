"""Stage `text_embeddings`: embed the class definitions and the dense-guidance concepts with CLIP's text tower.

Outputs (data/text_embeddings/, written as a whole or not at all):
- class_embeddings.safetensors   {"embeddings": [C, E] float32, L2-normalised rows}
- concept_embeddings.safetensors {"embeddings": [K, E], "class_index": [K] int64}
- meta.json                      model, weights, templates, definition source, text hashes, class names
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic import atomic_dir
from ..data.classes import DEFINITION_SOURCES, GUIDANCE_SOURCES, load_classes
from ..hashing import file_sha256
from ..model.clip import describe_pretrained, get_tokenizer, load_clip, pretrained_kind, uses_quick_gelu
from ..model.text import CLASS_FILE, CONCEPT_FILE, META_FILE, check_templates, mean_embeddings, prompts_for
from ..params import Params

log = logging.getLogger(__name__)

OUTPUT_DIR = Path("data/text_embeddings")


def _sha256(data) -> str:
    return hashlib.sha256(json.dumps(data, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def run(params: Params, output_dir: str | Path = OUTPUT_DIR) -> None:
    model_name = params.get_str("clip.model")
    pretrained = params.get_str("clip.pretrained")
    classes_file = params.get_str("classes.file")
    definitions = params.get_str("classes.definitions", choices=DEFINITION_SOURCES)
    guidance = params.get_str("classes.guidance", choices=GUIDANCE_SOURCES)
    templates = params.get_list("classes.templates", str, min_len=1)
    check_templates(templates)

    spec = load_classes(classes_file)
    class_texts = spec.texts(definitions)
    concepts, concept_class = spec.flat_concepts(guidance)

    started = time.perf_counter()
    quick_gelu = uses_quick_gelu(model_name, pretrained, params.raw("clip.quick_gelu"))
    clip = load_clip(model_name, pretrained, quick_gelu=quick_gelu)
    tokenizer = get_tokenizer(model_name)
    class_embeddings = mean_embeddings(clip, tokenizer, class_texts, templates)
    concept_embeddings = mean_embeddings(clip, tokenizer, [[c] for c in concepts], templates)

    meta = {
        "clip_model": model_name,
        "pretrained": describe_pretrained(pretrained, model_name),
        "quick_gelu": quick_gelu,
        # DVC tracks the parameter, not the file behind it: record which weights were used.
        "pretrained_sha256": file_sha256(pretrained) if pretrained_kind(pretrained, model_name) == "file" else None,
        "classes_file": classes_file,
        "definitions": definitions,
        "guidance": guidance,
        "templates": templates,
        "class_names": spec.names,
        "num_classes": spec.num_classes,
        "num_concepts": len(concepts),
        "embed_dim": int(class_embeddings.shape[1]),
        "texts_sha256": _sha256([prompts_for(texts, templates) for texts in class_texts]),
        "concepts_sha256": _sha256([prompts_for([c], templates) for c in concepts]),
        "concepts": concepts,
    }
    with atomic_dir(output_dir) as tmp:
        save_file({"embeddings": class_embeddings.contiguous()}, str(tmp / CLASS_FILE))
        save_file(
            {
                "embeddings": concept_embeddings.contiguous(),
                "class_index": torch.tensor(concept_class, dtype=torch.int64),
            },
            str(tmp / CONCEPT_FILE),
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "text embeddings: %d classes (%s), %d concepts, dim %d, %s %s, %.1f s -> %s",
        spec.num_classes, definitions, len(concepts), meta["embed_dim"], model_name, meta["pretrained"],
        time.perf_counter() - started, output_dir,
    )
