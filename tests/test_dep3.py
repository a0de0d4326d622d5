"""DEP-3 headers, in both Debian's field style and git format-patch mail style."""

from __future__ import annotations

from verifier.patch.dep3 import parse_dep3

from conftest import MAXCONNS_FIX


def test_shipped_fix_has_a_complete_dep3_header() -> None:
    header = parse_dep3(MAXCONNS_FIX.read_text())
    assert header.description == "Fix incredibly slim race for maxconns handler"
    assert header.get("Origin") == "upstream, commit:2c56090933e01ea5ab7d0c6e6530ea73b0933cf9"
    assert header.get("Applied-Upstream").startswith("1.4.7-rc1")
    assert "-42" in header.fields["Description"]  # the long description is kept
    names = [name for name, _ in header.summary_rows()]
    assert names[:4] == ["Description", "Origin", "Forwarded", "Applied-Upstream"]


def test_git_format_patch_style_header() -> None:
    text = (
        "From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n"
        "From: Jane Dev <jane@example.org>\n"
        "Subject: [PATCH 2/3] fix the thing\n"
        "Bug-Debian: https://bugs.debian.org/1\n"
        "Forwarded: no\n"
        "\n"
        "Longer explanation.\n"
        "---\n"
        "diff --git a/x.c b/x.c\n"
    )
    header = parse_dep3(text)
    assert header.description == "fix the thing"
    assert header.bugs() == ["https://bugs.debian.org/1"]
    assert header.long_description == "Longer explanation."
    assert ("Author", "Jane Dev <jane@example.org>") in header.summary_rows()


def test_no_header_at_all() -> None:
    header = parse_dep3("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n")
    assert header.description == "" and header.summary_rows() == []
