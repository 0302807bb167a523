"""The documentation: README.md links into docs/, and the MkDocs site builds in strict mode, so that a
broken link, a missing page or a link to a repository file that is gone fails (``make docs``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from function_app import cli
from function_app.adapters.monitor_health import build_query
from function_app.settings import SETTINGS
from tests.conftest import REPO, load_module

LINK = re.compile(r"\]\(([^)\s]+)\)")


def build(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(config),
            "--site-dir",
            str(config.parent / "site"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def nav_pages() -> set[str]:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    return {page for item in config["nav"] for page in item.values()}


def test_every_link_of_the_readme_names_a_file_and_its_docs_links_a_page_of_the_site() -> None:
    links = [link for link in LINK.findall((REPO / "README.md").read_text(encoding="utf-8")) if "://" not in link]
    missing = [link for link in links if not (REPO / link.split("#")[0]).exists()]
    into_docs = [link.split("#")[0].removeprefix("docs/") for link in links if link.startswith("docs/")]
    assert missing == []
    assert {"concepts.md", "architecture.md", "policy.md", "security.md", "settings.md"} <= set(into_docs)
    assert [page for page in into_docs if page.endswith(".md") and page not in nav_pages()] == []


def load_hooks() -> ModuleType:
    return load_module("mkdocs_hooks", REPO / "scripts" / "mkdocs_hooks.py")


def test_every_anchor_a_link_of_the_readme_names_is_a_heading_of_its_page() -> None:
    hooks = load_hooks()
    links = [link for link in LINK.findall((REPO / "README.md").read_text(encoding="utf-8")) if "://" not in link]
    anchored = [link.split("#") for link in links if "#" in link and link.split("#")[0].endswith(".md")]
    assert anchored  # the README links into sections of pages
    page = {path: hooks.github_anchors((REPO / path).read_text(encoding="utf-8")) for path, _ in anchored}
    assert [f"{path}#{anchor}" for path, anchor in anchored if anchor not in page[path]] == []


def test_every_repository_path_the_readme_names_exists() -> None:
    hooks = load_hooks()
    assert hooks.missing_paths((REPO / "README.md").read_text(encoding="utf-8")) == []
    assert hooks.missing_paths("see `handlers/no_such_module.py`") == ["handlers/no_such_module.py"]


def test_the_readme_stays_a_first_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "make run " in readme and "make test " in readme


def test_every_page_of_docs_is_in_the_nav() -> None:
    assert {p.name for p in (REPO / "docs").glob("*.md")} == nav_pages()


def copy_site(tmp_path: Path) -> Path:
    """A copy of docs/ and a config that builds it, with the repository's own hook."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    config["docs_dir"] = str(tmp_path / "docs")
    config["hooks"] = [str(REPO / hook) for hook in config["hooks"]]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path / "mkdocs.yml"


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = build(copy_site(tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("link", "complaint"),
    [
        ("[gone](no-such-page.md)", "no-such-page.md"),
        ("[gone](rollouts.md#no-such-section)", "no-such-section"),
        ("[gone](/handlers/no_such_module.py)", "/handlers/no_such_module.py"),
        ("[gone](/infra/README.md#no-such-heading)", "no-such-heading"),
        ("`handlers/no_such_module.py`", "handlers/no_such_module.py"),
    ],
)
def test_a_broken_link_fails_the_build(tmp_path: Path, link: str, complaint: str) -> None:
    config = copy_site(tmp_path)
    page = tmp_path / "docs" / "concepts.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\nSee {link}.\n", encoding="utf-8")
    result = build(config)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_the_settings_page_lists_every_setting_the_code_reads() -> None:
    rows = [
        line
        for line in (REPO / "docs" / "settings.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    ]
    documented = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert sorted({s.name for s in SETTINGS} - documented) == []
    assert sorted(documented - {s.name for s in SETTINGS}) == []


def test_the_operations_page_shows_every_command_of_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    commands = re.search(r"\{([a-z,-]+)\}", capsys.readouterr().out)
    assert commands is not None
    page = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert [c for c in commands.group(1).split(",") if f"retrain {c}" not in page] == []


def test_the_links_of_infra_readme_into_the_docs_name_pages_and_headings() -> None:
    hooks = load_hooks()
    links = LINK.findall((REPO / "infra" / "README.md").read_text(encoding="utf-8"))
    into_docs = [link.removeprefix("../").split("#") for link in links if link.startswith("../docs/")]
    assert into_docs  # it sends readers to the security model and the notifications
    missing = [path for path, *_ in into_docs if not (REPO / path).is_file()]
    headings = [
        f"{path}#{anchor[0]}"
        for path, *anchor in into_docs
        if anchor and (REPO / path).is_file() and anchor[0] not in hooks.github_anchors((REPO / path).read_text())
    ]
    assert (missing, headings) == ([], [])


def test_the_traffic_log_query_in_the_rollouts_page_is_the_one_the_service_sends() -> None:
    """docs/rollouts.md shows the query a rollout's step sends, for a reader to run in Log Analytics:
    it is built here with the same names and window and must match, so the page cannot drift from the code."""
    page = (REPO / "docs" / "rollouts.md").read_text(encoding="utf-8")
    shown = re.findall(r"```kusto\n(.*?)```", page, flags=re.S)
    assert len(shown) == 1, "docs/rollouts.md should show exactly one kusto block: the health query"
    sent = build_query(
        "diabetes-endpoint", "sklearn-regressio-1a2b3c4d", "blue", datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    )
    assert shown[0].strip() == sent.strip()
