"""The matrix file: which sources, refs, patch sets and scenarios, and what each cell expects.

```toml
name = "memcached 1.6.18 release gate"      # optional: the JUnit suite name
sources = ["debian"]                        # "debian[:VERSION]", a git URL or a path
refs = ["debian/1.6.18-1"]                  # optional: each source's default ref
scenarios = ["maxconns-deadlock", "listener-lost-wakeup"]
trials = 3
soak = 20
confidence = 0.95                           # optional
amplify = "interpose"                       # optional: default, each scenario's own
reference = "as-shipped"                    # optional: default "as-shipped", else the first
[patch_sets]
as-shipped = []
with-fix = ["patches/listener-lost-wakeup-fix.diff"]
[expect]                                    # "PATCHSET/SCENARIO" ("*" matches any); default pass
"as-shipped/listener-lost-wakeup" = "hang:listener-lost-wakeup"
```

Paths are relative to the file. Everything is checked before anything runs; a mistake is
one line naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput, VerifierError
from verifier.scenario import AMPLIFIERS, Scenario, load_scenario
from verifier.stress.workload_file import Workload, load_workload
from verifier.verdict.verdict import Expectation
from verifier.vocabulary import HangClass, Sanitizer

DEFAULT_REFERENCE = "as-shipped"
DEFAULT_EXPECTATION = "pass"
NOT_APPLICABLE_EXPECTATION = "n/a"
KNOWN_KEYS = frozenset(
    {
        "name",
        "sources",
        "refs",
        "scenarios",
        "trials",
        "soak",
        "confidence",
        "amplify",
        "sanitize",
        "tls",
        "workload",
        "reference",
        "patch_sets",
        "expect",
    }
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_expectation(text: str) -> str:
    """``n/a``, or what ``verify --expect`` takes (``pass``, ``hang``, ``hang:CLASS``,
    ``crash``: parsed by the one parser); else BadInput."""
    if text == NOT_APPLICABLE_EXPECTATION:
        return text
    try:
        return str(Expectation.parse(text))
    except BadInput:
        classes = ", ".join(c.value for c in HangClass)
        raise BadInput(
            f"bad expectation {text!r} (pass, hang, hang:CLASS with CLASS one of {classes}, "
            "crash or n/a)"
        ) from None


def is_remote(source: str) -> bool:
    return "://" in source or source.startswith("git@")


def is_debian(source: str) -> bool:
    return source == "debian" or source.startswith("debian:")


@dataclass(frozen=True)
class PatchSet:
    name: str
    patches: tuple[Path, ...]  # absolute, in order


@dataclass(frozen=True)
class MatrixSpec:
    path: Path
    name: str
    sources: tuple[str, ...]  # "debian[:VERSION]", a URL, or an absolute path
    refs: tuple[str, ...]  # empty: each source's default ref
    scenarios: tuple[Scenario, ...]
    patch_sets: tuple[PatchSet, ...]
    trials: int
    soak_s: float
    confidence: float = 0.95
    amplify: str | None = None
    sanitize: str | None = None  # every cell's build carries this sanitizer
    tls: bool = False  # every cell's build is configured with --enable-tls
    workload: Workload | None = None  # replaces every scenario's own (``--workload``)
    reference: str = DEFAULT_REFERENCE
    expect: dict[str, str] = field(default_factory=dict)  # "SET/SCENARIO" -> expectation

    def expectation(self, patch_set: str, scenario: str) -> str:
        """The most specific match: exact, then ``SET/*``, ``*/SCENARIO``, ``*/*``, pass."""
        for key in (
            f"{patch_set}/{scenario}",
            f"{patch_set}/*",
            f"*/{scenario}",
            "*/*",
        ):
            if key in self.expect:
                return self.expect[key]
        return DEFAULT_EXPECTATION


class _Reader:
    """Typed access to the parsed TOML with one-line errors that name the file and key."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, message: str) -> BadInput:
        return BadInput(f"matrix {self.path.name}: {message}")

    def strings(self, key: str, *, required: bool) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(f"missing {key} (a list of strings)")
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{key} must be a list of non-empty strings")
        if required and not value:
            raise self.fail(f"{key} is empty")
        if len(set(value)) != len(value):
            raise self.fail(f"{key} lists the same entry twice")
        return tuple(value)

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{key} must be a number")
        if not low <= value <= high:
            raise self.fail(f"{key} = {value} is out of range ({low:g} to {high:g})")
        return float(value)

    def relative(self, text: str) -> Path:
        given = Path(text).expanduser()
        return given if given.is_absolute() else (self.path.parent / given).resolve()


def _source(reader: _Reader, text: str) -> str:
    if is_debian(text) or is_remote(text):
        return text
    path = reader.relative(text)
    if not path.exists():
        raise reader.fail(f"source {text!r}: no such repository path ({path})")
    return str(path)


def _scenario(reader: _Reader, text: str) -> Scenario:
    target = str(reader.relative(text)) if text.endswith(".toml") else text
    try:
        return load_scenario(target)
    except VerifierError as error:
        raise reader.fail(error.message) from None


def _patch_sets(reader: _Reader) -> tuple[PatchSet, ...]:
    table = reader.data.get("patch_sets", {DEFAULT_REFERENCE: []})
    if not isinstance(table, dict) or not table:
        raise reader.fail("[patch_sets] must map names to lists of patch files")
    sets = []
    for name, files in table.items():
        if not _NAME_RE.match(name):
            raise reader.fail(f"patch set name {name!r}: use letters, digits, . _ + -")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise reader.fail(f"patch set {name}: must be a list of patch file paths")
        paths = []
        for text in files:
            path = reader.relative(text)
            if not path.is_file():
                raise reader.fail(f"patch set {name}: patch file not found: {text}")
            paths.append(path)
        sets.append(PatchSet(name, tuple(paths)))
    return tuple(sets)


def _expectations(
    reader: _Reader, sets: tuple[PatchSet, ...], scenarios: tuple[Scenario, ...]
) -> dict[str, str]:
    table = reader.data.get("expect", {})
    if not isinstance(table, dict):
        raise reader.fail('[expect] must map "PATCHSET/SCENARIO" to an expectation')
    set_names = {s.name for s in sets} | {"*"}
    scenario_names = {s.name for s in scenarios} | {"*"}
    checked = {}
    for key, value in table.items():
        patch_set, slash, scenario = key.partition("/")
        if not slash:
            raise reader.fail(f'expect key {key!r}: write "PATCHSET/SCENARIO"')
        if patch_set not in set_names:
            raise reader.fail(f"expect key {key!r}: no patch set {patch_set!r}")
        if scenario not in scenario_names:
            raise reader.fail(f"expect key {key!r}: scenario {scenario!r} is not in scenarios")
        if not isinstance(value, str):
            raise reader.fail(f"expect {key!r}: must be a string")
        try:
            checked[key] = check_expectation(value)
        except BadInput as error:
            raise reader.fail(f"expect {key!r}: {error.message}") from None
    return checked


def parse_matrix(path: Path, text: str) -> MatrixSpec:
    """Parse and validate a matrix file's text (``path`` anchors its relative paths)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"matrix {path.name}: not valid TOML: {error}") from None
    reader = _Reader(path, data)
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise reader.fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    sources = tuple(_source(reader, s) for s in reader.strings("sources", required=True))
    refs = reader.strings("refs", required=False)
    scenarios = tuple(_scenario(reader, s) for s in reader.strings("scenarios", required=True))
    if len({s.name for s in scenarios}) != len(scenarios):
        raise reader.fail("scenarios name the same scenario twice")
    sets = _patch_sets(reader)
    amplify = data.get("amplify")
    if amplify is not None and amplify not in AMPLIFIERS:
        raise reader.fail(f"amplify {amplify!r}: one of {', '.join(AMPLIFIERS)}")
    for scenario in scenarios:
        if amplify is not None and amplify not in scenario.amplifiers():
            raise reader.fail(
                f"amplify {amplify!r}: scenario {scenario.name} defines only "
                f"{', '.join(scenario.amplifiers())}"
            )
    workload = None
    if data.get("workload") is not None:
        given = str(data["workload"])
        beside = path.parent / given  # a file path is relative to the matrix file
        try:
            workload = load_workload(str(beside) if beside.is_file() else given)
        except BadInput as error:
            raise reader.fail(error.message) from None
    sanitize = data.get("sanitize")
    if sanitize is not None and sanitize not in {s.value for s in Sanitizer}:
        raise reader.fail(f"sanitize {sanitize!r}: one of {', '.join(Sanitizer)}")
    tls = data.get("tls", False)
    if not isinstance(tls, bool):
        raise reader.fail(f"tls must be true or false, not {tls!r}")
    names = [s.name for s in sets]
    reference = data.get("reference", DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else None)
    reference = reference or names[0]
    if reference not in names:
        raise reader.fail(f"reference {reference!r} is not a patch set")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise reader.fail("name must be a non-empty string")
    trials = reader.number("trials", 3, 1, 1000)
    if trials != int(trials):
        raise reader.fail("trials must be a whole number")
    return MatrixSpec(
        path=path,
        name=name,
        sources=sources,
        refs=refs,
        scenarios=scenarios,
        patch_sets=sets,
        trials=int(trials),
        soak_s=reader.number("soak", 20.0, 1.0, 7 * 86400.0),
        confidence=reader.number("confidence", 0.95, 0.5, 0.999),
        amplify=amplify,
        sanitize=sanitize,
        tls=tls,
        workload=workload,
        reference=reference,
        expect=_expectations(reader, sets, scenarios),
    )


def load_matrix(path: Path) -> MatrixSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read matrix file {path}: {error.strerror}") from None
    return parse_matrix(path.resolve(), text)
