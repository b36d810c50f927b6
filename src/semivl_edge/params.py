"""Typed access to params.yaml: a wrong type or value stops with one line naming the parameter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import PipelineError

_MISSING = object()


class Params:
    """Dotted, validated look-ups into a nested parameter mapping (`params.get_int("split.labeled")`)."""

    def __init__(self, data: dict, source: str = "params.yaml"):
        if not isinstance(data, dict):
            raise PipelineError(f"{source}: expected a mapping of parameter sections at the top level")
        self.data = data
        self.source = source

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> "Params":
        path = Path(path)
        if not path.is_file():
            raise PipelineError(f"{path}: parameter file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls(data, str(path))

    # -- raw access -------------------------------------------------------------------------
    def raw(self, key: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not _MISSING:
                    return default
                raise PipelineError(f"{self.source}: missing parameter {key}")
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return self.raw(key, _MISSING_SENTINEL) is not _MISSING_SENTINEL

    def _bad(self, key: str, expected: str, value: Any) -> PipelineError:
        return PipelineError(f"{self.source}: {key} must be {expected}, got {value!r}")

    # -- typed access -----------------------------------------------------------------------
    def get_int(self, key: str, *, min: int | None = None, max: int | None = None, default: Any = _MISSING) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        if min is not None and value < min:
            raise self._bad(key, f"an integer >= {min}", value)
        if max is not None and value > max:
            raise self._bad(key, f"an integer <= {max}", value)
        return value

    def get_float(self, key: str, *, min: float | None = None, max: float | None = None, default: Any = _MISSING) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number", value)
        if min is not None and value < min:
            raise self._bad(key, f"a number >= {min}", value)
        if max is not None and value > max:
            raise self._bad(key, f"a number <= {max}", value)
        return float(value)

    def get_bool(self, key: str, *, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def get_str(self, key: str, *, choices: Sequence[str] | None = None, default: Any = _MISSING) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string", value)
        if choices is not None and value not in choices:
            raise self._bad(key, "one of " + ", ".join(choices), value)
        return value

    def get_optional_str(self, key: str, *, default: Any = None) -> str | None:
        """A string or null/empty (meaning: not set)."""
        value = self.raw(key, default)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._bad(key, "a string or null", value)
        return value

    def get_list(self, key: str, item_type: type, *, min_len: int = 0, default: Any = _MISSING) -> list:
        value = self.raw(key, default)
        ok = isinstance(value, list) and all(
            isinstance(v, item_type) and not (item_type is int and isinstance(v, bool)) for v in value
        )
        if not ok or len(value) < min_len:
            what = f"a list of {item_type.__name__}" + (f" with at least {min_len} item(s)" if min_len else "")
            raise self._bad(key, what, value)
        return list(value)


_MISSING_SENTINEL = object()
