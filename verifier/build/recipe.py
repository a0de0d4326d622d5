"""Build recipes: data files in ``recipes/build/*.toml``, one per version range.

The code that runs them is generic; everything version-specific lives in the data:
how to generate ``configure`` for a git checkout, what to fix after configure, which
targets to make (or, rarely, the make step itself: ``build.make``, whose words may say
``{make}`` and ``{jobs}``), and which server options a build of that range needs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from verifier.build.versions import Version, in_range
from verifier.errors import BadInput, NoRecipe
from verifier.util.hashing import digest
from verifier.vocabulary import Sanitizer

Command = tuple[str, ...]


@dataclass(frozen=True)
class ServerOption:
    """Extra server arguments, added when ``memcached -h`` mentions ``when_help_mentions``."""

    args: tuple[str, ...]
    when_help_mentions: str = ""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    summary: str
    versions: str
    autogen: tuple[Command, ...]  # run only when the tree has no ./configure
    configure: Command
    post_configure: tuple[Command, ...]
    targets: tuple[str, ...]
    touch_generated: tuple[str, ...]  # generated files to date after their inputs
    make: tuple[Command, ...] = ()  # empty: `make -j<jobs> <targets>`
    server_options: tuple[ServerOption, ...] = field(default_factory=tuple)
    content_hash: str = ""
    sanitizers: tuple[Sanitizer, ...] = ()  # the sanitizers this range is known to build with

    def matches(self, version: Version) -> bool:
        return in_range(version, self.versions)

    def make_commands(self, make: str, jobs: int) -> tuple[Command, ...]:
        """The make step: the recipe's own commands with ``{make}``/``{jobs}`` filled in,
        else ``make -j<jobs> <targets>``."""
        if not self.make:
            return ((make, f"-j{jobs}", *self.targets),)
        return tuple(
            tuple(w.replace("{make}", make).replace("{jobs}", str(jobs)) for w in cmd)
            for cmd in self.make
        )


def _commands(value: object, where: str) -> tuple[Command, ...]:
    if not isinstance(value, list) or not all(
        isinstance(cmd, list) and cmd and all(isinstance(w, str) for w in cmd) for cmd in value
    ):
        raise BadInput(f"{where}: expected a list of commands (lists of strings)")
    return tuple(tuple(cmd) for cmd in value)


def load_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"cannot read recipe {path}: {exc}") from None
    build = data.get("build", {})
    server = data.get("server", {})
    try:
        recipe = Recipe(
            name=data.get("name", path.stem),
            path=path,
            summary=data.get("summary", ""),
            versions=data["versions"],
            autogen=_commands(build.get("autogen", []), f"{path.name} build.autogen"),
            configure=tuple(build.get("configure", ["./configure"])),
            post_configure=_commands(
                build.get("post_configure", []), f"{path.name} post_configure"
            ),
            targets=tuple(build.get("targets", ["memcached"])),
            touch_generated=tuple(build.get("touch_generated", [])),
            make=_commands(build.get("make", []), f"{path.name} build.make"),
            server_options=tuple(
                ServerOption(tuple(opt["args"]), opt.get("when_help_mentions", ""))
                for opt in server.get("options", [])
            ),
            content_hash=digest(path.read_text(encoding="utf-8")),
            sanitizers=tuple(Sanitizer(name) for name in data.get("sanitizers", [])),
        )
        in_range((0, 0, 0), recipe.versions)  # validates the range syntax
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"bad recipe {path.name}: {exc}") from None
    return recipe


def load_recipes(directory: Path) -> list[Recipe]:
    return [load_recipe(path) for path in sorted(directory.glob("*.toml"))]


def select_recipe(recipes: list[Recipe], version: Version, label: str) -> Recipe:
    """The one recipe whose range holds ``version``; overlapping ranges are a data error."""
    found = [recipe for recipe in recipes if recipe.matches(version)]
    if not found:
        shown = ".".join(map(str, version))
        raise NoRecipe(
            f"no build recipe covers version {shown} ({label}); add one to recipes/build/"
        )
    if len(found) > 1:
        names = ", ".join(r.path.name for r in found)
        raise BadInput(f"build recipes overlap for {label}: {names}")
    return found[0]
