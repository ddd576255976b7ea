"""The docs can be read where users find them: the site's configuration, and pages that
say enough in prose to help on GitHub, where ``--8<--`` includes and ``:::`` lines are not
expanded (issue 19, item 4)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# A section whose code is an include, or whose body is ``:::`` lines, says in at least this
# many words of its own what the example does or what the entries are.
MIN_PROSE_WORDS = 25
DIRECTIVE = re.compile(r'^\s*(--8<-- "|::: )', re.M)
FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.M | re.S)


def test_read_the_docs_builds_the_mkdocs_site_with_the_docs_extra() -> None:
    config = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert config["version"] == 2
    assert config["build"]["tools"]["python"] == "3.11"
    assert config["mkdocs"]["configuration"] == "mkdocs.yml"
    assert (ROOT / config["mkdocs"]["configuration"]).is_file()
    install = config["python"]["install"]
    assert {"method": "pip", "path": ".", "extra_requirements": ["docs"]} in install


def test_the_project_urls_point_at_the_repository_and_the_site() -> None:
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    for name, url in urls.items():
        assert url.startswith("https://"), f"{name}: {url}"
        assert not re.search(r"example|your|TODO|<|>", url, re.I), f"{name} is a placeholder"
    assert "readthedocs.io" in urls["Documentation"]


def sections(page: Path) -> list[tuple[str, str]]:
    """(heading, body) for each ``#``/``##`` section of ``page``, code fences left in."""
    parts = re.split(r"^(#{1,2} .*)$", page.read_text(), flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def prose_words(body: str) -> int:
    text = FENCE.sub("", body)
    text = "\n".join(
        line for line in text.splitlines() if not DIRECTIVE.match(line) and not line.startswith(" ")
    )
    return len(re.findall(r"[A-Za-z]{2,}", text))


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_each_section_with_an_include_says_what_it_shows(page: str) -> None:
    for heading, body in sections(DOCS / page):
        if not DIRECTIVE.search(body):
            continue
        words = prose_words(body)
        assert words >= MIN_PROSE_WORDS, (
            f"{page} {heading!r}: {words} words besides its includes; say what the example "
            "does, the key calls and what to watch for, so the page helps before it is built"
        )


def test_the_reliability_page_is_written_for_users() -> None:
    text = (DOCS / "reliability.md").read_text()
    first_person = re.findall(r"\b(I|we|my|our|us)\b", FENCE.sub("", text))
    assert not first_person, f"reliability.md speaks in the first person: {first_person}"
    paths = [line for line in text.splitlines() if "tests/" in line]
    assert len(paths) == 1 and paths[0].startswith("To rerun"), (
        f"reliability.md should name tests/ only in its one 'to rerun' line: {paths}"
    )
    assert "0 overlaps" in text and "Total: 374 holds checked" in text, "the figures are kept"
