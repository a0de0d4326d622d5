"""Known-bug files: ``recipes/known-bugs/*.toml``, one per bug of memcached's history.

```toml
id = "maxconns-146"
title = "1.4.6 listener self-deadlock on conn_lock under a connection flood"
class = "hang:self-deadlock"          # hang[:CLASS] | wrong[:CLASS] | crash
fixed_by = ["2c5609093"]              # upstream fix commit(s); empty: not fixed upstream
introduced_by = ["ac9397238"]         # optional
first_bad = "1.4.6"                   # first release with the bug
first_fixed = "1.4.7"                 # first release without it; "" when none yet
reaches = "connection flood over -c with connections closing"
scenario = "maxconns-deadlock"        # recipes/scenarios/ (runnable today)
workload = "incr-race"                # recipes/workloads/ (what the scenario runs)
amplify = "watch"                     # optional hint: the told amplifier
code = ["maxconns_handler"]           # functions the fix changed: a patch naming one is soaked
needs = ["binary"]                    # tls | extstore | binary | meta
reintroduce = "reintroduce-maxconns-race.diff"   # fixture patch over Debian's source
candidate_fix = "listener-lost-wakeup-fix.diff"  # patches/: a fix (not upstream, or a backport)
control = false                       # a negative control: a stall that ends by itself
```

The file says what is known; the code decides applicability and runs it. Every unknown key
is an error, one line naming the file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from verifier.build.versions import Version, parse_version
from verifier.errors import BadInput, VerifierError
from verifier.resources import fixtures_dir, patches_dir, recipes_dir
from verifier.scenario import AMPLIFIERS, Scenario, load_scenario
from verifier.vocabulary import AmplifierKind, HangClass, VerdictKind, WrongClass

FEATURES = ("tls", "extstore", "binary", "meta")
_KEYS = {
    "id",
    "title",
    "class",
    "fixed_by",
    "introduced_by",
    "first_bad",
    "first_fixed",
    "reaches",
    "scenario",
    "workload",
    "amplify",
    "code",
    "needs",
    "reintroduce",
    "candidate_fix",
    "control",
    "notes",
}
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class BugClass:
    """What the bug shows as: a verdict kind and, optionally, the class that names it."""

    kind: VerdictKind  # HANG, WRONG or CRASH
    hang_class: HangClass | None = None
    wrong_class: WrongClass | None = None

    @classmethod
    def parse(cls, text: str) -> BugClass:
        head, _, tail = text.partition(":")
        try:
            if head == "hang":
                return cls(VerdictKind.HANG, HangClass(tail) if tail else None)
            if head == "wrong":
                return cls(VerdictKind.WRONG, wrong_class=WrongClass(tail) if tail else None)
            if head == "crash" and not tail:
                return cls(VerdictKind.CRASH)
        except ValueError:
            pass
        hangs = ", ".join(c.value for c in HangClass)
        wrongs = ", ".join(c.value for c in WrongClass)
        raise BadInput(f"class {text!r}: hang[:CLASS] ({hangs}), wrong[:CLASS] ({wrongs}) or crash")

    def __str__(self) -> str:
        named = self.hang_class or self.wrong_class
        head = {VerdictKind.HANG: "hang", VerdictKind.WRONG: "wrong"}.get(self.kind, "crash")
        return f"{head}:{named}" if named else head


@dataclass(frozen=True)
class KnownBug:
    id: str
    path: Path
    title: str
    bug_class: BugClass
    fixed_by: tuple[str, ...]
    introduced_by: tuple[str, ...]
    first_bad: Version | None
    first_fixed: Version | None  # None: not fixed in any release
    reaches: str
    scenario: Scenario | None  # None: not runnable by the connection flood alone
    workload: str | None
    amplify: str | None
    code: tuple[str, ...]
    needs: tuple[str, ...]
    reintroduce: Path | None
    candidate_fix: Path | None
    control: bool
    notes: str

    @property
    def also_shows(self) -> tuple[BugClass, ...]:
        """Its other ends: its scenario's ``same_bug`` (1.4.5's libevent corruption exits
        or spins), so the file and the bisect cannot disagree."""
        if self.scenario is None:
            return ()
        ends = (BugClass.parse(text) for text in sorted(self.scenario.same_bug))
        return tuple(end for end in ends if end != self.bug_class)

    @property
    def shapes(self) -> str:
        """Its class, and the other shapes it takes: "crash or hang:livelock"."""
        return " or ".join(str(c) for c in (self.bug_class, *self.also_shows))

    def to_json(self) -> dict[str, Any]:
        def shown(version: Version | None) -> str | None:
            return None if version is None else ".".join(map(str, version))

        return {
            "id": self.id,
            "title": self.title,
            "class": str(self.bug_class),
            "also_shows": [str(c) for c in self.also_shows],
            "fixed_by": list(self.fixed_by),
            "introduced_by": list(self.introduced_by),
            "first_bad": shown(self.first_bad),
            "first_fixed": shown(self.first_fixed),
            "scenario": None if self.scenario is None else self.scenario.name,
            "workload": self.workload,
            "needs": list(self.needs),
            "control": self.control,
        }


def known_bugs_dir() -> Path:
    return recipes_dir() / "known-bugs"


def workloads_dir() -> Path:
    return recipes_dir() / "workloads"


class _Reader:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def fail(self, message: str) -> BadInput:
        return BadInput(f"known bug {self.path.name}: {message}")

    def text(self, key: str, *, required: bool = False) -> str:
        value = self.data.get(key, "")
        if not isinstance(value, str) or (required and not value):
            raise self.fail(f"{key} must be a non-empty string" if required else f"{key}: string")
        return value

    def strings(self, key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{key} must be a list of non-empty strings")
        for item in value:
            if pattern is not None and not pattern.match(item):
                raise self.fail(f"{key}: {item!r} is not valid here")
        return tuple(value)

    def version(self, key: str, *, required: bool) -> Version | None:
        text = self.text(key, required=required)
        if not text:
            return None
        version = parse_version(text)
        if version is None or not re.fullmatch(r"\d+\.\d+\.\d+", text):
            raise self.fail(f"{key} = {text!r}: write a release such as 1.4.7")
        return version


def _scenario(reader: _Reader) -> Scenario | None:
    name = reader.text("scenario")
    if not name:
        return None
    try:
        return load_scenario(name)
    except VerifierError as error:
        raise reader.fail(error.message) from None


def _workload(reader: _Reader) -> str | None:
    name = reader.text("workload")
    if not name:
        return None
    path = workloads_dir() / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise reader.fail(f"workload {name!r}: no file {path.name} in recipes/workloads/") from None
    except tomllib.TOMLDecodeError as error:
        raise reader.fail(f"workload {name!r}: not valid TOML: {error}") from None
    if data.get("name") != name:
        raise reader.fail(f"workload {name!r}: its file names itself {data.get('name')!r}")
    return name


def _reintroduce(reader: _Reader) -> Path | None:
    name = reader.text("reintroduce")
    if not name:
        return None
    path = fixtures_dir() / "patches" / name
    if not path.is_file():
        raise reader.fail(f"reintroduce: no fixture patch {name} in tests/fixtures/patches/")
    return path


def _candidate_fix(reader: _Reader) -> Path | None:
    name = reader.text("candidate_fix")
    if not name:
        return None
    path = patches_dir() / name
    if not path.is_file():
        raise reader.fail(f"candidate_fix: no patch {name} in patches/")
    return path


def parse_known_bug(path: Path, text: str) -> KnownBug:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"known bug {path.name}: not valid TOML: {error}") from None
    reader = _Reader(path, data)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise reader.fail(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    bug_id = reader.text("id", required=True)
    if not _ID_RE.match(bug_id) or bug_id != path.stem:
        raise reader.fail(f"id {bug_id!r} must be lower-case and match the file name")
    try:
        bug_class = BugClass.parse(reader.text("class", required=True))
    except BadInput as error:
        raise reader.fail(error.message) from None
    amplify = reader.text("amplify") or None
    if amplify is not None and amplify not in AMPLIFIERS:
        raise reader.fail(f"amplify {amplify!r}: one of {', '.join(AMPLIFIERS)}")
    needs = reader.strings("needs")
    for feature in needs:
        if feature not in FEATURES:
            raise reader.fail(f"needs {feature!r}: one of {', '.join(FEATURES)}")
    control = data.get("control", False)
    if not isinstance(control, bool):
        raise reader.fail("control must be true or false")
    bug = KnownBug(
        id=bug_id,
        path=path,
        title=reader.text("title", required=True),
        bug_class=bug_class,
        fixed_by=reader.strings("fixed_by", _SHA_RE),
        introduced_by=reader.strings("introduced_by", _SHA_RE),
        first_bad=reader.version("first_bad", required=True),
        first_fixed=reader.version("first_fixed", required=False),
        reaches=reader.text("reaches", required=True),
        scenario=_scenario(reader),
        workload=_workload(reader),
        amplify=amplify,
        code=reader.strings("code", _IDENTIFIER),
        needs=needs,
        reintroduce=_reintroduce(reader),
        candidate_fix=_candidate_fix(reader),
        control=control,
        notes=reader.text("notes"),
    )
    if bug.first_fixed is not None and not bug.fixed_by:
        raise reader.fail("first_fixed is given but fixed_by is empty")
    if bug.first_fixed is not None and bug.first_bad and bug.first_fixed <= bug.first_bad:
        raise reader.fail("first_fixed must be a later release than first_bad")
    if bug.scenario is None and bug.workload is None:
        raise reader.fail("give a scenario, a workload, or both: what reaches the bug")
    scenario = bug.scenario
    if (
        bug.amplify is not None
        and scenario is not None
        and bug.amplify not in scenario.amplifiers()
    ):
        raise reader.fail(f"amplify {bug.amplify!r}: scenario {bug.scenario.name} lacks it")
    if bug.amplify is not None and scenario is not None:
        # told means this hint: the bug's cell, and anything run from its file, stretch so
        told = replace(scenario, amplify_default=AmplifierKind(bug.amplify))
        bug = replace(bug, scenario=told)
    return bug


def load_known_bug(path: Path) -> KnownBug:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read known bug {path}: {error.strerror}") from None
    return parse_known_bug(path, text)


def load_known_bugs(directory: Path | None = None, only: tuple[str, ...] = ()) -> list[KnownBug]:
    """Every known bug (or those named in ``only``), in file-name order."""
    folder = directory or known_bugs_dir()
    bugs = [load_known_bug(path) for path in sorted(folder.glob("*.toml"))]
    known = {bug.id for bug in bugs}
    for name in only:
        if name not in known:
            raise BadInput(f"unknown known bug {name!r} (known: {', '.join(sorted(known))})")
    return [bug for bug in bugs if not only or bug.id in only]
