"""The package ships its type information (PEP 561)."""

from __future__ import annotations

from importlib import resources


def test_the_package_carries_a_py_typed_marker() -> None:
    """``runtime/py.typed`` sits beside the code, so the wheel (which takes the
    whole package directory) carries it and type checkers read our annotations."""
    marker = resources.files("runtime").joinpath("py.typed")
    assert marker.is_file()
    assert marker.read_text() == ""


def test_the_console_assets_ship_in_the_package_and_load_nothing_from_the_network() -> None:
    """The console's page, script and style are files of the package (the
    wheel takes the whole directory), and none of them loads anything from
    another host: no URL with a scheme at all."""
    assets = resources.files("runtime").joinpath("_ui")
    names = sorted(entry.name for entry in assets.iterdir())
    assert names == ["console.css", "console.js", "index.html"]
    for name in names:
        text = assets.joinpath(name).read_text(encoding="utf-8")
        assert "://" not in text, name
    page = assets.joinpath("index.html").read_text(encoding="utf-8")
    assert 'src="/ui/console.js"' in page and 'href="/ui/console.css"' in page
