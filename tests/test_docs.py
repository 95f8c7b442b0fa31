"""The documentation holds together: every relative link resolves (file and heading), and the
README stays short and starts with the two set-up commands."""
import os
import re

import pytest

from tests.conftest import REPO

PAGES = ["README.md", "bench/README.md"] + sorted(
    f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs")) if name.endswith(".md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str) -> set:
    found, in_code = set(), False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code and line.startswith("#"):
                found.add(slug(line.lstrip("#")))
    return found


def links(page: str):
    in_code = False
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code:
                for target in LINK.findall(line):
                    if not re.match(r"[a-z]+:", target):
                        yield number, target


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in links(page):
        file, _, anchor = target.partition("#")
        path = os.path.normpath(os.path.join(REPO, os.path.dirname(page), file)) if file \
            else os.path.join(REPO, page)
        if not os.path.exists(path):
            broken.append(f"{page}:{number}: {target} (no such file)")
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            broken.append(f"{page}:{number}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.partition("#")[0] for _, target in links("README.md")}
    assert {p for p in PAGES if p.startswith("docs/")} <= linked


def test_the_readme_is_short_and_starts_with_the_set_up_commands():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 250
    first = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert first[0].endswith("python -m pipeline.run --runner=DirectRunner")
    assert first[1].endswith("python -m pytest -q tests")
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        assert "python -m pytest -q tests" in f.read()  # CI runs the README's test command
