"""Reading the command line's values: `-S section.key=value` overrides and `--grid key=v1,v2` sweep grids."""
from __future__ import annotations

import yaml

from tasks.config import ConfigError


def parse_value(text: str):
    """YAML's reading of a command-line value, except that 1e-4 is a number (YAML 1.1 wants 1.0e-4)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        overrides[key.strip()] = parse_value(value)
    return overrides


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid train.learning_rate=1e-4,3e-4` -> {"train.learning_rate": [0.0001, 0.0003]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {item!r} is not of the form section.key=value1,value2")
        grid[key.strip()] = [parse_value(v) for v in values.split(",")]
    return grid
