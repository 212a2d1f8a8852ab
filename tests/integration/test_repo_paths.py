"""The repository is self-contained: no file of it refers to a path outside
the repository. A clone (or `git archive`) on a new machine has nothing
beside it: no sibling `shared/` folder of design notes, no home folder of
whoever wrote the tests, no checkout path of theirs.

Checked in every text file of the source, tests, tools, docs and etc/:
  - relative paths that climb (`../x`) must resolve, from the file's folder,
    to something that exists inside the repository;
  - Python under tests/ and tools/ builds no path with a ".." component
    (`os.path.join(ROOT, "..", …)` leaves the repository);
  - no absolute path under a machine's user or work folders (/work, /home,
    /root/…, /mnt, /media, /Users, /scratch).
Absolute system paths every Debian has (/usr, /etc, /dev/shm, /proc, …) are
fine. This file is not scanned: it spells the patterns it looks for."""
import os
import re

from conftest import ROOT

SCANNED = ["README.md", "CHANGELOG", "meson.build", "meson_options.txt", ".gitignore",
           ".ci", "docs", "etc", "master", "worker", "shared", "tests", "tools"]
# Generated or fetched, not written: build trees, npm's install, fuzz seed data.
SKIPPED_DIRS = {"node_modules", "__pycache__", "corpus", ".git"}
SELF = os.path.abspath(__file__)

DOTDOT = "." + "."
CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]*(?:/[\w.-]+)*)")
PY_DOTDOT = re.compile(r"""["']""" + re.escape(DOTDOT) + r"""["']""")
FOREIGN_ABS = re.compile(r"(?<![\w.~$}-])(/(?:work|home|mnt|media|Users|scratch)\b[\w./-]*"
                         r"|/root/[\w./-]*)")


def scanned_files():
    for top in SCANNED:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for d, dirs, files in os.walk(path):
            dirs[:] = sorted(x for x in dirs
                             if x not in SKIPPED_DIRS and not x.startswith("build"))
            for f in sorted(files):
                p = os.path.join(d, f)
                if os.path.abspath(p) != SELF:
                    yield p


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        return None  # binary: not a document


def offences(text, relpath):
    """[(line number, what)] for every reference in `text` (the content of
    the file at `relpath` in the repository) that leaves the repository."""
    out = []
    folder = os.path.dirname(os.path.join(ROOT, relpath))
    is_code = relpath.endswith(".py") or relpath.startswith(("tests/", "tools/"))
    for n, line in enumerate(text.splitlines(), 1):
        for m in CLIMB.finditer(line):
            tail = m.group(2).rstrip(".")  # a sentence's full stop
            target = os.path.normpath(os.path.join(folder, m.group(1) + tail))
            inside = target == ROOT or target.startswith(ROOT + os.sep)
            if not inside:
                out.append((n, f"{m.group(0)!r} leaves the repository"))
            elif not os.path.exists(target):
                out.append((n, f"{m.group(0)!r} names nothing in the repository"))
        if is_code and relpath.endswith(".py") and PY_DOTDOT.search(line):
            out.append((n, "a path built with a '..' component"))
        for m in FOREIGN_ABS.finditer(line):
            out.append((n, f"{m.group(1)!r} is a path of some machine, not of the repository"))
    return out


def test_no_file_refers_to_a_path_outside_the_repository():
    found = []
    count = 0
    for path in scanned_files():
        text = read_text(path)
        if text is None:
            continue
        count += 1
        rel = os.path.relpath(path, ROOT)
        found += [f"{rel}:{n}: {what}" for n, what in offences(text, rel)]
    assert count > 100, f"only {count} files scanned: is ROOT right? {ROOT}"
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_the_check_finds_each_kind_of_outside_reference():
    # What this repository once had, and what it must never have again.
    planted = {
        "tests/integration/test_x.py": [
            '"""Streams (' + DOTDOT + '/shared/PROTOCOL.md "Messages")"""',
            'RUNBOOK = os.path.normpath(os.path.join(ROOT, "' + DOTDOT + '", "shared", "RUNBOOK.md"))',
            'PYTHON = "/root/.pyenv/versions/3.11.7/bin/python3"',
        ],
        "tools/x": ["cp " + "/work" + "/shared/bench/run.sh ."],
        "README.md": ["see ../../design/PROTOCOL.md", "cd " + "/home" + "/dev/wsgate"],
        "docs/x.md": ["[runbook](../RUNBOOK.md)"],  # docs/../RUNBOOK.md does not exist
    }
    for rel, lines in planted.items():
        for line in lines:
            assert offences(line, rel), f"not caught in {rel}: {line}"
    # ... and what is fine.
    fine = {
        "etc/kubernetes/base/kustomization.yaml": ["# see ../README.md"],
        "etc/kubernetes/overlays/production/kustomization.yaml": ["  - ../../base"],
        "docs/RUNBOOK.md": ["cat /etc/nginx/nginx.conf", "HOME=/root", "/dev/shm/wsgate-8003",
                            "https://grafana.vitalstream.com/d/vitalstream-websocket"],
        "tests/integration/conftest.py": ["ROOT = os.path.dirname(os.path.dirname(x))"],
    }
    for rel, lines in fine.items():
        for line in lines:
            assert not offences(line, rel), f"wrongly caught in {rel}: {line}"
