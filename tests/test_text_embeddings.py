"""Stage `text_embeddings` on the small configuration (semivl-tiny, random init, offline)."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from semivl_edge.data.classes import load_classes
from semivl_edge.errors import PipelineError
from semivl_edge.model.clip import get_tokenizer, load_clip
from semivl_edge.model.text import encode_texts, read_text_embeddings
from semivl_edge.params import Params
from semivl_edge.pipeline import text_embeddings as stage

REPO = Path(__file__).resolve().parents[1]
CLASSES_FILE = REPO / "data" / "classes" / "voc.yaml"
PARAMS = {
    "clip": {"model": "semivl-tiny", "pretrained": "none", "quick_gelu": "auto"},
    "classes": {"file": str(CLASSES_FILE), "definitions": "guidelines", "guidance": "concepts",
                "templates": ["a photo of a {}."]},
}


def params(**classes_changes) -> Params:
    data = copy.deepcopy(PARAMS)
    data["classes"].update(classes_changes)
    return Params(data)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("te") / "text_embeddings"
    stage.run(params(), output_dir=out)
    return out


def test_outputs_are_normalised_with_metadata(written):
    result = read_text_embeddings(written)
    spec = load_classes(CLASSES_FILE)
    assert result.classes.shape == (21, 128) and result.classes.dtype == torch.float32
    torch.testing.assert_close(result.classes.norm(dim=1), torch.ones(21))
    torch.testing.assert_close(result.concepts.norm(dim=1), torch.ones(len(result.concepts)))
    meta = result.meta
    assert meta["clip_model"] == "semivl-tiny" and meta["pretrained"] == "none (random init)"
    assert meta["definitions"] == "guidelines" and meta["guidance"] == "concepts"
    assert meta["templates"] == ["a photo of a {}."]
    assert meta["class_names"] == spec.names and meta["embed_dim"] == 128
    assert len(meta["texts_sha256"]) == 64


def test_concepts_map_to_their_classes(written):
    result = read_text_embeddings(written)
    spec = load_classes(CLASSES_FILE)
    concepts, owners = spec.flat_concepts()
    assert result.concept_class.dtype == torch.int64
    assert result.concept_class.tolist() == owners
    assert result.meta["concepts"] == concepts
    # one row per concept: the concept in the template, embedded on its own
    clip, tokenizer = load_clip("semivl-tiny", "none"), get_tokenizer("semivl-tiny")
    index = 7
    expected = encode_texts(clip, tokenizer, [f"a photo of a {concepts[index]}."])[0]
    torch.testing.assert_close(result.concepts[index], expected, rtol=1e-5, atol=1e-6)


def test_several_texts_per_class_are_averaged(tmp_path):
    out = tmp_path / "te"
    templates = ["a photo of a {}.", "a drawing of a {}."]
    stage.run(params(definitions="oxford", templates=templates), output_dir=out)
    result = read_text_embeddings(out)
    spec = load_classes(CLASSES_FILE)
    texts = spec.texts("oxford")[1]  # aeroplane: name + dictionary definition
    assert len(texts) == 2
    clip, tokenizer = load_clip("semivl-tiny", "none"), get_tokenizer("semivl-tiny")
    prompts = [t.format(x) for x in texts for t in templates]
    expected = torch.nn.functional.normalize(encode_texts(clip, tokenizer, prompts).mean(0), dim=0)
    torch.testing.assert_close(result.classes[1], expected, rtol=1e-5, atol=1e-6)
    assert result.meta["templates"] == templates and result.meta["definitions"] == "oxford"


def test_deterministic_and_definitions_change_the_class_rows(written, tmp_path):
    again = tmp_path / "again"
    stage.run(params(), output_dir=again)
    for name in ("class_embeddings.safetensors", "concept_embeddings.safetensors", "meta.json"):
        assert hashlib.sha256((written / name).read_bytes()).digest() == hashlib.sha256((again / name).read_bytes()).digest()
    names = tmp_path / "names"
    stage.run(params(definitions="names"), output_dir=names)
    a, b = read_text_embeddings(written), read_text_embeddings(names)
    assert not torch.allclose(a.classes[1], b.classes[1])  # "aeroplane" vs its guideline text
    torch.testing.assert_close(a.classes[0], b.classes[0])  # background: same text in both sources
    assert a.meta["texts_sha256"] != b.meta["texts_sha256"]
    torch.testing.assert_close(a.concepts, b.concepts)  # concepts do not depend on the definitions


def test_definitions_file_missing_a_class(tmp_path):
    raw = yaml.safe_load(CLASSES_FILE.read_text())
    del raw["guidelines"]["sheep"]
    broken = tmp_path / "classes.yaml"
    broken.write_text(yaml.safe_dump(raw))
    out = tmp_path / "te"
    with pytest.raises(PipelineError, match="section 'guidelines' has no entry for class 'sheep'"):
        stage.run(params(file=str(broken)), output_dir=out)
    assert not out.exists()


def test_bad_parameters(tmp_path):
    with pytest.raises(PipelineError, match="classes.templates"):
        stage.run(params(templates=["no placeholder"]), output_dir=tmp_path / "a")
    with pytest.raises(PipelineError, match="classes.definitions"):
        stage.run(params(definitions="wikipedia"), output_dir=tmp_path / "b")
    data = copy.deepcopy(PARAMS)
    data["clip"]["model"] = "ViT-Nope"
    with pytest.raises(PipelineError, match="clip.model"):
        stage.run(Params(data), output_dir=tmp_path / "c")


def test_local_checkpoint_is_used_and_recorded(tmp_path):
    from safetensors.torch import save_file

    clip = load_clip("semivl-tiny", "none")
    with torch.no_grad():
        clip.text_projection.mul_(-1.0)  # flips every text embedding
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    data = copy.deepcopy(PARAMS)
    data["clip"]["pretrained"] = str(path)
    stage.run(Params(data), output_dir=tmp_path / "file")
    stage.run(params(), output_dir=tmp_path / "none")
    from_file, random_init = read_text_embeddings(tmp_path / "file"), read_text_embeddings(tmp_path / "none")
    torch.testing.assert_close(from_file.classes, -random_init.classes, rtol=1e-5, atol=1e-6)
    assert from_file.meta["pretrained"] == f"file {path}"
    assert from_file.meta["pretrained_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert random_init.meta["pretrained_sha256"] is None


def test_guidance_by_class_names_is_one_text_per_class_and_leaves_the_decoder_texts(written, tmp_path):
    # The paper's "+ dense CLIP guidance" ablation row: CLIP labels pixels by the class names; "+ class
    # definitions" switches only these guidance texts to the concept lists.
    out = tmp_path / "names"
    stage.run(params(guidance="names"), output_dir=out)
    by_names, by_concepts = read_text_embeddings(out), read_text_embeddings(written)
    spec = load_classes(CLASSES_FILE)
    assert by_names.meta["concepts"] == spec.names and by_names.concept_class.tolist() == list(range(21))
    assert len(by_concepts.concepts) > 21
    torch.testing.assert_close(by_names.classes, by_concepts.classes)
    with pytest.raises(PipelineError, match="classes.guidance"):
        stage.run(params(guidance="captions"), output_dir=tmp_path / "bad")
