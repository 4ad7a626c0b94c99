"""The package ships its type information (PEP 561)."""

from __future__ import annotations

from importlib import resources


def test_the_package_carries_a_py_typed_marker() -> None:
    """``runtime/py.typed`` sits beside the code, so the wheel (which takes the
    whole package directory) carries it and type checkers read our annotations."""
    marker = resources.files("runtime").joinpath("py.typed")
    assert marker.is_file()
    assert marker.read_text() == ""
