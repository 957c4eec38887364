"""The project's documentation stands on its own: no file of the repository
points outside it (to a sibling directory, another project's design notes
or one machine's paths), and every link between the docs leads to a file
that exists."""
import os
import re
import subprocess

import pytest

from conftest import REPO

MARKDOWN_NAME = re.compile(r"\b[\w-]+\.md\b")


def outside_references():
    """What a pointer out of the repository looks like on this machine: the
    directories beside the checkout (../NAME), this machine's own paths (the
    checkout's parent, the home directory)."""
    parent = os.path.dirname(REPO)
    found = ["../%s/" % name for name in os.listdir(parent)
             if name != os.path.basename(REPO)]
    found.append(parent.rstrip("/") + "/")
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        found.append(home.rstrip("/") + "/")
    return found


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        with open(os.path.join(REPO, name), "rb") as f:
            data = f.read()
        if b"\0" not in data:
            yield name, data.decode("utf-8", "replace")


def test_no_file_points_outside_the_repository():
    outside = outside_references()
    found = ["%s:%d: %s" % (name, n, line.strip())
             for name, text in tracked_text_files()
             for n, line in enumerate(text.splitlines(), 1)
             if any(ref in line for ref in outside)]
    assert found == []


def test_every_document_a_file_names_is_in_the_repository():
    files = list(tracked_text_files())
    ours = {os.path.basename(name) for name, _ in files}
    found = ["%s: %s" % (name, doc) for name, text in files
             for doc in set(MARKDOWN_NAME.findall(text)) if doc not in ours]
    assert found == []


def markdown_files():
    return [name for name, _ in tracked_text_files() if name.endswith(".md")]


@pytest.mark.parametrize("doc", markdown_files())
def test_every_link_between_the_docs_leads_to_a_file(doc):
    with open(os.path.join(REPO, doc)) as f:
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", f.read())
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    missing = [link for link in local
               if not os.path.exists(os.path.join(REPO, os.path.dirname(doc), link))]
    assert missing == []


def test_the_documents_the_readme_promises_exist():
    for doc in ("docs/API.md", "docs/HOST-BOARD.md", "docs/REAL-BOARD.md", "docs/COMPRESSED.md",
                "CONTRIBUTING.md"):
        assert os.path.getsize(os.path.join(REPO, doc)) > 2000, doc
