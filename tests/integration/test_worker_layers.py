"""worker/ is layers: every include points down, a lower layer tells the
one above through callbacks it was given (tools/include-graph).

The graph of worker/ modules, without the edges of UPWARD, must have no
cycle, and every edge of UPWARD must still exist and still close a cycle:
the list only shrinks.
Adding an include that closes a cycle fails here; so does removing an
upward call without removing its entry."""
import importlib.machinery
import importlib.util
import os

from conftest import ROOT

WORKER = os.path.join(ROOT, "worker")

# Includes that still point up, each with why it remains. Empty: worker/
# has no cycle; an entry here needs a reason and a plan to remove it.
UPWARD = {}


def load_tool():
    path = os.path.join(ROOT, "tools", "include-graph")
    loader = importlib.machinery.SourceFileLoader("include_graph", path)
    spec = importlib.util.spec_from_loader("include_graph", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def without_upward(g):
    return {m: {d for d in deps if (m, d) not in UPWARD} for m, deps in g.items()}


def test_worker_has_no_cycle_but_the_listed_upward_includes():
    ig = load_tool()
    g = ig.graph(WORKER)
    left = ig.cycles(without_upward(g))
    assert left == [], f"include cycle among worker/ modules: {left}; " \
        "a lower layer must not include an upper one (use a callback it is given)"


def test_every_listed_upward_include_still_closes_a_cycle():
    ig = load_tool()
    g = ig.graph(WORKER)
    gone = sorted(e for e in UPWARD if e[1] not in g.get(e[0], ()))
    assert gone == [], f"no longer included, remove from UPWARD: {gone}"
    for e in sorted(UPWARD):
        others = {m: {d for d in deps if (m, d) not in UPWARD or (m, d) == e}
                  for m, deps in g.items()}
        assert ig.cycles(others), f"{e} no longer closes a cycle: remove it from UPWARD"


def test_a_cycle_is_found(tmp_path):
    """The checker itself: two modules that include each other, and a
    third that only includes one of them."""
    (tmp_path / "a.c").write_text('#include "a.h"\n#include "b.h"\n')
    (tmp_path / "a.h").write_text('#include <stdio.h>\n')
    (tmp_path / "b.c").write_text('#include "b.h"\n')
    (tmp_path / "b.h").write_text('#include "a.h"\n')
    (tmp_path / "c.c").write_text('#include "a.h"\n#include "shared.h"\n')
    ig = load_tool()
    g = ig.graph(str(tmp_path))
    assert g == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert ig.cycles(g) == [["a", "b"]]
    (tmp_path / "b.h").write_text("\n")
    assert ig.cycles(ig.graph(str(tmp_path))) == []
