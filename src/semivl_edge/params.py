"""Typed access to params.yaml: a wrong type or value, a missing or an unknown key stops with one line naming it.

params.yaml is the one place that holds the parameters' values (and says what they mean): the library reads
them from there and keeps no defaults of its own. PARAMETERS below names every key, so that a misspelled one
(`train.iteration`) is an error naming the nearest valid key instead of a setting that is silently ignored.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from .errors import PipelineError

_SECTIONS = {
    "data": "source root synthetic.seed synthetic.train synthetic.train_aug synthetic.val synthetic.long_side",
    "split": "labeled seed cover_classes labeled_file",
    "clip": "model pretrained quick_gelu",
    "clip_pretrain": "steps batch_size lr weight_decay warmup_steps images close_up min_fraction seed device",
    "classes": "file definitions guidance templates",
    "model": "encoder imagenet_weights clip_init spatial_finetune decoder decoder_dim skip_blocks align_corners",
    "train": "method iterations batch_size crop_size base_size scale_range seed device gpus amp workers eval_every "
             "checkpoint_every save optim.lr optim.weight_decay optim.encoder_lr_mult optim.decoder_lr_mult optim.decoder_norm_decay "
             "optim.poly_power optim.warmup_iterations unimatch.conf_threshold unimatch.fp_dropout unimatch.cutmix_prob "
             "guidance.lambda guidance.zeta guidance.temperature",
    "distill": "iterations batch_size lr weight_decay poly_power weights.pixel weights.region weights.image temperature "
               "cutmix_prob head_channels init imagenet_weights seed device",
    "eval": "mode short_side crop_size stride device amp warmup repeats qualitative",
    "eval_cpu": "threads",
    "export": "parity_images max_abs_diff min_argmax_agreement workers",
    "mobile": "input_size device threads calibration_images warmup repeats adb adb_serial adb_runner_dir remote_dir",
}
# Every key params.yaml may hold, dotted.
PARAMETERS = frozenset(f"{section}.{name}" for section, names in _SECTIONS.items() for name in names.split())


def _leaves(node: dict, prefix: str = "") -> Iterator[str]:
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def check_known_keys(data: dict, source: str) -> None:
    """Stop on the first key that is not a parameter, naming the nearest one."""
    for key in _leaves(data):
        if key in PARAMETERS:
            continue
        if any(name.startswith(key + ".") for name in PARAMETERS):
            raise PipelineError(f"{source}: {key} must be a section of parameters, got a single value")
        nearest = difflib.get_close_matches(key, sorted(PARAMETERS), n=1, cutoff=0.6)
        hint = f" (did you mean {nearest[0]}?)" if nearest else ""
        raise PipelineError(f"{source}: unknown parameter {key}{hint}")


class Params:
    """Dotted, validated look-ups into a nested parameter mapping (`params.get_int("split.labeled")`)."""

    def __init__(self, data: dict, source: str = "params.yaml"):
        if not isinstance(data, dict):
            raise PipelineError(f"{source}: expected a mapping of parameter sections at the top level")
        check_known_keys(data, source)
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
    def raw(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise PipelineError(f"{self.source}: missing parameter {key}")
            node = node[part]
        return node

    def _bad(self, key: str, expected: str, value: Any) -> PipelineError:
        return PipelineError(f"{self.source}: {key} must be {expected}, got {value!r}")

    # -- typed access -----------------------------------------------------------------------
    def get_int(self, key: str, *, min: int | None = None, max: int | None = None) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer", value)
        if min is not None and value < min:
            raise self._bad(key, f"an integer >= {min}", value)
        if max is not None and value > max:
            raise self._bad(key, f"an integer <= {max}", value)
        return value

    def get_float(self, key: str, *, min: float | None = None, max: float | None = None,
                  above: float | None = None) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number", value)
        if above is not None and not value > above:
            raise self._bad(key, f"a number > {above}", value)
        if min is not None and value < min:
            raise self._bad(key, f"a number >= {min}", value)
        if max is not None and value > max:
            raise self._bad(key, f"a number <= {max}", value)
        return float(value)

    def get_bool(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def get_str(self, key: str, *, choices: Sequence[str] | None = None) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string", value)
        if choices is not None and value not in choices:
            raise self._bad(key, "one of " + ", ".join(choices), value)
        return value

    def get_optional_str(self, key: str) -> str | None:
        """A string or null/empty (meaning: not set)."""
        value = self.raw(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._bad(key, "a string or null", value)
        return value

    def get_list(self, key: str, item_type: type, *, min_len: int = 0) -> list:
        value = self.raw(key)
        ok = isinstance(value, list) and all(
            isinstance(v, item_type) and not (item_type is int and isinstance(v, bool)) for v in value
        )
        if not ok or len(value) < min_len:
            what = f"a list of {item_type.__name__}" + (f" with at least {min_len} item(s)" if min_len else "")
            raise self._bad(key, what, value)
        return list(value)

