"""MkDocs hook (mkdocs.yml `hooks`): a root-relative link names a file of the repository.

Pages link to source files outside docs/ as `/handlers/gate.py`, which GitHub resolves from the
repository root and MkDocs does not check (`validation.links.absolute_links: ignore`). This hook checks
them: a link to a path that does not exist, or to a heading a Markdown file does not have
(`/infra/README.md#dead-letters`, GitHub's anchors), is a warning, which `mkdocs build --strict` turns
into a failed build. So is a repository path in backticks (`handlers/service.py`) that names nothing:
when code moves, the pages that walk a newcomer through it must move with it (a name the code had
before, in a benchmark's history, is written without backticks).
"""

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.repo_links")
REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\((/[^)\s#]*)(?:#([^)\s]*))?\)")
CODE_PATH = re.compile(r"`((?:function_app|handlers|tests|bench|scripts|infra|examples|docs)/[\w./-]*\w)`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces
    as hyphens (a repeated heading's -1, -2, ... suffixes are left out: no page links to one)."""
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in HEADING.findall(markdown)}


def missing_paths(markdown: str) -> list[str]:
    """The repository paths a page names in backticks that do not exist."""
    return [path for path in CODE_PATH.findall(markdown) if not (REPO / path).exists()]


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    for path in missing_paths(markdown):
        log.warning("%s names `%s`, which is not in the repository (moved or renamed?)", page.file.src_uri, path)
    for match in LINK.finditer(markdown):
        path, anchor = match.group(1), match.group(2)
        target = REPO / path.lstrip("/")
        if path == "/" or not target.exists():
            log.warning("%s links to %s, which is not a file of the repository", page.file.src_uri, path)
        elif anchor and target.suffix == ".md" and anchor not in github_anchors(target.read_text(encoding="utf-8")):
            log.warning("%s links to %s#%s, a heading %s does not have", page.file.src_uri, path, anchor, path)
    return markdown
