"""The class list, palette and text definitions of a dataset (data/classes/voc.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import PipelineError

DEFINITION_SOURCES = ("names", "guidelines", "gpt_concepts", "oxford")
GUIDANCE_SOURCES = ("concepts", "names")  # dense CLIP guidance texts: the class file's concept lists, or the names
IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassSpec:
    names: list[str]
    palette: list[tuple[int, int, int]]
    definitions: dict[str, list[list[str]]]  # source -> per class, one or more texts
    guidance_concepts: list[list[str]]  # per class, the concepts for dense CLIP guidance
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def texts(self, definitions: str) -> list[list[str]]:
        """Per class, the texts that describe it under one definition source."""
        if definitions not in self.definitions:
            raise PipelineError(
                f"classes.definitions must be one of {', '.join(DEFINITION_SOURCES)}, got {definitions!r}"
            )
        return self.definitions[definitions]

    def flat_concepts(self, guidance: str = "concepts") -> tuple[list[str], list[int]]:
        """All guidance texts in one list, with the index of the class each belongs to: the concept lists
        (SemiVL's class definitions) or one text per class, its name (the paper's "+ dense CLIP guidance" row)."""
        if guidance not in GUIDANCE_SOURCES:
            raise PipelineError(f"classes.guidance must be one of {', '.join(GUIDANCE_SOURCES)}, got {guidance!r}")
        per_class = self.guidance_concepts if guidance == "concepts" else [[name] for name in self.names]
        concepts, owners = [], []
        for index, items in enumerate(per_class):
            concepts += items
            owners += [index] * len(items)
        return concepts, owners


def _as_text_list(value, file: str, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise PipelineError(f"{file}: {where} must be a non-empty string or list of strings, got {value!r}")
    return list(items)


def load_classes(path: str | Path) -> ClassSpec:
    """Read and validate a class file: every definition source must describe every class."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: class definition file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list) or not raw["classes"]:
        raise PipelineError(f"{path}: expected a non-empty 'classes' list")
    names = [str(n) for n in raw["classes"]]
    if len(set(names)) != len(names):
        raise PipelineError(f"{path}: duplicate class names in 'classes'")

    palette = raw.get("palette") or []
    if len(palette) < len(names):
        raise PipelineError(f"{path}: 'palette' has {len(palette)} colours for {len(names)} classes")

    definitions = {"names": [[n] for n in names]}
    for source in DEFINITION_SOURCES[1:] + ("guidance_concepts",):
        section = raw.get(source)
        if not isinstance(section, dict):
            raise PipelineError(f"{path}: missing section '{source}'")
        per_class = []
        for name in names:
            if name not in section:
                raise PipelineError(f"{path}: section '{source}' has no entry for class '{name}'")
            per_class.append(_as_text_list(section[name], str(path), f"{source}.{name}"))
        definitions[source] = per_class
    concepts = definitions.pop("guidance_concepts")
    return ClassSpec(
        names=names,
        palette=[tuple(int(c) for c in rgb) for rgb in palette[: len(names)]],
        definitions=definitions,
        guidance_concepts=concepts,
        source=str(path),
    )
