"""DEP-3 patch headers (https://dep-team.pages.debian.net/deps/dep3/).

Headers are RFC 822-style fields before the diff; git format-patch mails (From:, Subject:)
are accepted too, as Debian's own patches mix both. Free text after a blank line is the
long description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELD_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9-]*):\s?(?P<value>.*)$")
_DIFF_START = ("--- ", "diff ", "Index: ", "===")
_SHOWN = ("Description", "Origin", "Bug", "Forwarded", "Applied-Upstream", "Author", "Last-Update")


@dataclass
class Dep3Header:
    fields: dict[str, str] = field(default_factory=dict)  # canonical names, e.g. "Bug-Debian"
    long_description: str = ""

    @property
    def description(self) -> str:
        """First line of Description, or Subject (minus a ``[PATCH]`` prefix)."""
        text = self.fields.get("Description") or self.fields.get("Subject", "")
        text = re.sub(r"^\[PATCH[^\]]*\]\s*", "", text)
        return text.splitlines()[0].strip() if text else ""

    def get(self, name: str) -> str:
        return self.fields.get(name, "")

    def bugs(self) -> list[str]:
        return [v for k, v in self.fields.items() if k == "Bug" or k.startswith("Bug-")]

    def summary_rows(self) -> list[tuple[str, str]]:
        """(field, value) rows worth showing, in DEP-3 order."""
        rows: list[tuple[str, str]] = []
        if self.description:
            rows.append(("Description", self.description))
        for name in _SHOWN[1:]:
            if name == "Bug":
                rows.extend(("Bug", bug) for bug in self.bugs())
            elif self.get(name):
                rows.append((name, self.get(name)))
        if not self.get("Author") and self.get("From"):
            rows.append(("Author", self.get("From")))
        return rows


def _canonical(key: str) -> str:
    return "-".join(part.capitalize() for part in key.split("-"))


def parse_dep3(text: str) -> Dep3Header:
    """Parse the header part of a patch (everything before the first diff line)."""
    header = Dep3Header()
    current: str | None = None
    free_text: list[str] = []
    for line in text.splitlines():
        if line.startswith(_DIFF_START) or line == "---":
            break
        if line.startswith("From ") and re.match(r"^From [0-9a-f]{40} ", line):
            continue  # git format-patch envelope line
        match = _FIELD_RE.match(line)
        if match and not free_text:
            current = _canonical(match["key"])
            header.fields[current] = match["value"].strip()
        elif line.startswith((" ", "\t")) and current and not free_text:
            continuation = line.strip()
            header.fields[current] += "\n" + ("" if continuation == "." else continuation)
        elif line.strip() or free_text:
            current = None
            free_text.append(line)
    header.long_description = "\n".join(free_text).strip()
    if "Description" not in header.fields and "Subject" not in header.fields and free_text:
        header.fields["Description"] = free_text[0].strip()
    return header
