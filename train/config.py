"""Training configurations: dataclasses with documented defaults, overridden by a TOML file and
by `--set key=value` on the command line. Unknown keys are errors, not silently ignored."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import tomllib

T = TypeVar("T")


def _coerce(value: str, example: Any) -> Any:
    """A command-line string as the type of the field's default."""
    if isinstance(example, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(example, (list, tuple)):
        return [item.strip() for item in value.split(",") if item.strip()]
    if example is None:
        return value
    return type(example)(value)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = (), base: T | None = None) -> T:
    """`base` (default: cls's defaults), then the TOML file at `path`, then `key=value` overrides."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            try:
                values.update(tomllib.load(f))
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML: {exc}") from None
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    defaults = base if base is not None else cls()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"bad override {item!r}: expected key=value with key one of {', '.join(fields)}")
        try:
            values[key] = _coerce(raw, values.get(key, getattr(defaults, key)))
        except ValueError as exc:
            raise ValueError(f"bad override {item!r}: {exc}") from None
    return dataclasses.replace(defaults, **values)


def config_dict(config: Any) -> dict:
    """A JSON-ready dict of a config (tuples become lists, as they come back from JSON)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
