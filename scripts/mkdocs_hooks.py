"""MkDocs hook (mkdocs.yml `hooks`): a root-relative link names a file of the repository.

Pages link to source files outside docs/ as `/handlers/gate.py`, which GitHub resolves from the
repository root and MkDocs does not check (`validation.links.absolute_links: info`). This hook checks
them: a link to a path that does not exist is a warning, which `mkdocs build --strict` turns into a
failed build. Anchors into other repository files (`/infra/README.md#notifications`) are not checked.
"""

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.repo_links")
REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\((/[^)\s#]*)(?:#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    for match in LINK.finditer(markdown):
        target = match.group(1).lstrip("/")
        if not target or not (REPO / target).exists():
            log.warning("%s links to %s, which is not a file of the repository", page.file.src_uri, match.group(1))
    return markdown
