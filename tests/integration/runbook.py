"""The operators' runbook, docs/RUNBOOK.md, as data for the tests that run
its commands: the shell commands of its ```bash blocks (a command spanning
lines, such as `python -c "…"` or a JSON patch, comes back whole), its
PromQL, and the as-written commands it lists as corrected. Tests take the
commands from here rather than copying them, so the runbook's text is what
is tested."""
import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = os.path.join(ROOT, "docs", "RUNBOOK.md")


def text():
    with open(PATH, encoding="utf-8") as f:
        return f.read()


def _blocks(lang, source=None):
    """Bodies of the fenced blocks of `lang` (indented fences included, with
    their indentation removed)."""
    out = []
    for m in re.finditer(r"^( *)```" + lang + r"\n(.*?)^\1```", source or text(), re.S | re.M):
        indent = len(m.group(1))
        out.append("\n".join(l[indent:] for l in m.group(2).splitlines()))
    return out


def _complete(cmd):
    if cmd.endswith("\\"):
        return False
    try:
        shlex.split(cmd)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def _commands(body):
    out, cur = [], None
    for line in body.splitlines():
        if cur is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cur = line.strip()
        else:
            cur += "\n" + line
        if _complete(cur):
            out.append(cur)
            cur = None
    assert cur is None, f"unterminated command in docs/RUNBOOK.md: {cur!r}"
    return out


def commands(prefix=""):
    """Every command of the ```bash blocks that starts with `prefix`, in
    order, duplicates kept."""
    return [c for b in _blocks("bash") for c in _commands(b) if c.startswith(prefix)]


def corrected_section():
    t = text()
    i = t.index("\n## Corrected commands\n")
    return t[i:]


def as_written(prefix=""):
    """The first version's commands that the runbook lists as not working as
    written (the ```text blocks of "Corrected commands")."""
    return [c for b in _blocks("text", corrected_section()) for c in _commands(b)
            if c.startswith(prefix)]


def prometheus_curls():
    """The runbook's `curl … --data-urlencode 'query=…'` commands."""
    return [c for c in commands("curl ") if "/api/v1/query" in c]


def _query_of(cmd):
    args = shlex.split(cmd)
    return args[args.index("--data-urlencode") + 1].split("=", 1)[1]


def queries():
    """Every PromQL expression the runbook has operators run: the queries of
    its Prometheus curl commands and the lines of its ```promql block; each
    once, in order."""
    out = [_query_of(c) for c in prometheus_curls()]
    for block in _blocks("promql"):
        out += [l.strip() for l in block.splitlines() if l.strip() and not l.startswith("#")]
    seen, uniq = set(), []
    for q in out:
        key = re.sub(r"\s+", "", q)
        if key not in seen:
            seen.add(key)
            uniq.append(q)
    return uniq


def python_snippets():
    """The code of the `kubectl exec … -- python -c "…"` checks."""
    out = []
    for c in commands("kubectl exec "):
        args = shlex.split(c)
        if "python" in args and "-c" in args:
            out.append(args[args.index("-c") + 1])
    return out


def patch_json(target):
    """The JSON argument of `kubectl patch <target> … -p '…'`, one per patch."""
    out = []
    for c in commands(f"kubectl patch {target} "):
        args = shlex.split(c)
        out.append(args[args.index("-p") + 1])
    return out
