"""Reading typed keys of a driver's network configuration, for every driver's
``parse_config`` (pure: no kernel access). Errors are :class:`ConfigError` naming the key
and showing the value (:func:`fmt`: its repr, cut at 80 characters)."""

from __future__ import annotations

from typing import Any

from splice.plugins.errors import ConfigError


def fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def boolean(conf: dict, key: str, default: bool = False) -> bool:
    """``conf[key]`` as a boolean; absent or null: ``default``."""
    value = conf.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be a boolean, got {fmt(value)}")
    return value


def integer(conf: dict, key: str, default: Any, lo: int | None = None, hi: int | None = None) -> Any:
    """``conf[key]`` as an integer (not a boolean), within ``lo``..``hi`` when given;
    absent or null: ``default``."""
    value = conf.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {fmt(value)}")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise ConfigError(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def choice(conf: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    """``conf[key]``, one of ``choices``; absent, null or empty: ``default``."""
    value = conf.get(key)
    if value in (None, ""):
        return default
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {fmt(value)}")
    return value
