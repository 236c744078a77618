"""Every relative link in the README and the docs points at a file that exists, and every anchor
(`page.md#heading`, `#heading`) at a heading of that page (GitHub's slugs)."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("checkpoints/*.md")])
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """The page without fenced code blocks and code spans, where a bracket is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lowercased, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[`*_~]|<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    slugs = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        slugs.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return slugs


def links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return [*INLINE_LINK.findall(prose), *REFERENCE_LINK.findall(prose)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for link in links(page):
        if EXTERNAL.match(link) or link.startswith("//"):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    assert broken_links(page) == []


def test_the_check_sees_a_broken_link_and_a_good_one(tmp_path):
    page = tmp_path / "PAGE.md"
    (tmp_path / "OTHER.md").write_text("# Other page\n\n## The `make docs` target, in brief\n")
    page.write_text(
        "# Page\n\n[ok](OTHER.md#the-make-docs-target-in-brief) [top](#page) [web](https://example.com)\n"
        "[gone](MISSING.md) [bad anchor](OTHER.md#nowhere) `[not a link](nowhere.md)`\n\n"
        "```\n[in a fence](fenced.md)\n```\n"
    )
    assert broken_links(page) == ["MISSING.md: no such file", "OTHER.md#nowhere: no heading #nowhere in OTHER.md"]
