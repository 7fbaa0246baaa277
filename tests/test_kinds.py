"""The kind seam: every task kind states each method of `Kind` with the seam's own signature."""
from __future__ import annotations

import inspect

import pytest

from tasks.config import KIND_NAMES
from tasks.kinds import get_kind
from tasks.kinds.base import Kind


def seam_methods() -> list[str]:
    return sorted(name for name, member in vars(Kind).items() if getattr(member, "__isabstractmethod__", False))


@pytest.mark.parametrize("name", KIND_NAMES)
def test_every_kind_implements_the_seam_with_its_signatures(name):
    kind = get_kind(name)
    assert not getattr(type(kind), "__abstractmethods__", None)  # nothing left abstract: the class instantiates
    for method in seam_methods():
        seam = inspect.signature(getattr(Kind, method))
        implemented = inspect.signature(getattr(type(kind), method))
        assert [(p.name, p.kind, p.default) for p in implemented.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in seam.parameters.values()], f"{name}.{method}"
