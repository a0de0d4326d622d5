"""Version ranges and the shipped build recipes (data, checked like code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.build.recipe import load_recipe, load_recipes, select_recipe
from verifier.build.versions import in_range, parse_version
from verifier.errors import BadInput
from verifier.resources import recipes_dir


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1.4.5-12-gabcdef0", (1, 4, 5)),
        ("debian/1.6.18-1", (1, 6, 18)),
        ("m4_define([VERSION_NUMBER], [1.6.18])", (1, 6, 18)),
        ("1.5", (1, 5, 0)),
        ("HEAD", None),
    ],
)
def test_parse_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == version


def test_ranges() -> None:
    assert in_range((1, 4, 6), ">=1.4.0, <1.5.0")
    assert not in_range((1, 5, 0), ">=1.4.0, <1.5.0")
    assert in_range((9, 9, 9), "*")
    with pytest.raises(ValueError):
        in_range((1, 0, 0), "~1.4")


@pytest.mark.parametrize(
    ("version", "recipe", "autogen"),
    [
        ((1, 4, 0), "memcached-1.4.toml", "AC_PROG_CC_C99"),
        ((1, 4, 5), "memcached-1.4.toml", "AUTOMAKE=automake"),
        ((1, 4, 7), "memcached-1.4.toml", "AUTOMAKE=automake"),
        ((1, 4, 21), "memcached-1.4.toml", "AUTOMAKE=automake"),
        ((1, 4, 38), "memcached-1.4.toml", "AUTOMAKE=automake"),
        ((1, 5, 7), "memcached-1.5-1.6.toml", "./autogen.sh"),
        ((1, 5, 20), "memcached-1.5-1.6.toml", "./autogen.sh"),
        ((1, 6, 18), "memcached-1.5-1.6.toml", "./autogen.sh"),
        ((1, 6, 45), "memcached-1.5-1.6.toml", "./autogen.sh"),
    ],
)
def test_shipped_recipes_cover_each_version_once(
    version: tuple[int, int, int], recipe: str, autogen: str
) -> None:
    chosen = select_recipe(load_recipes(recipes_dir() / "build"), version, "test")
    assert chosen.path.name == recipe
    assert autogen in " ".join(" ".join(cmd) for cmd in chosen.autogen)
    assert any("-Werror" in " ".join(cmd) for cmd in chosen.post_configure)
    # 1.4.16+ and 1.5.x define globals in headers: gcc >= 10 links them only with -fcommon
    assert any("-fcommon" in " ".join(cmd) for cmd in chosen.post_configure)


def test_every_release_the_known_bugs_touch_has_a_recipe() -> None:
    """First bad and first fixed release of every known bug: one recipe each."""
    from verifier.knownbugs.spec import load_known_bugs

    recipes = load_recipes(recipes_dir() / "build")
    for bug in load_known_bugs():
        for version in (bug.first_bad, bug.first_fixed):
            if version is not None and version >= (1, 4, 0):
                select_recipe(recipes, version, bug.id)


def test_no_recipe_and_overlap_are_clear_errors(tmp_path: Path) -> None:
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('versions = ">=1.0.0, <2.0.0"\n')
    recipes = load_recipes(tmp_path)
    with pytest.raises(BadInput, match="overlap"):
        select_recipe(recipes, (1, 2, 0), "x")
    with pytest.raises(BadInput, match="no build recipe"):
        select_recipe(recipes, (3, 0, 0), "x")


def test_bad_recipe_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('versions = ">=1"\n[build]\nautogen = "not a list"\n')
    with pytest.raises(BadInput, match=r"bad\.toml"):
        load_recipe(tmp_path / "bad.toml")
