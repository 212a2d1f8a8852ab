#!/usr/bin/python3
"""Write etc/kubernetes/base/configmap.yaml from etc/websocket.yaml and
etc/connection_pool.yaml, byte for byte (literal block scalars).

The ConfigMap websocket-config is what the pods read; etc/*.yaml is what the
developers edit and test. tests/integration/test_opskit.py fails when the two
differ; run this script to bring the ConfigMap back in line:

    /usr/bin/python3 tools/k8s-validate/sync-configmap.py          # rewrite
    /usr/bin/python3 tools/k8s-validate/sync-configmap.py --check  # exit 1 if stale
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.path.join(ROOT, "etc", "kubernetes", "base", "configmap.yaml")
KEYS = ("websocket.yaml", "connection_pool.yaml")

HEADER = """\
# GENERATED from etc/websocket.yaml and etc/connection_pool.yaml by
# tools/k8s-validate/sync-configmap.py: edit those files, then run the script.
# The contents must stay byte-for-byte equal (tests/integration/test_opskit.py).
#
# Mounted as a folder (no subPath) at /etc/wsgate, so a patch of this
# ConfigMap reaches the running pods (after the kubelet's sync, up to ~1 min);
# then reload each pod with SIGHUP (see etc/kubernetes/README.md).
apiVersion: v1
kind: ConfigMap
metadata:
  name: websocket-config
  labels:
    app: websocket
data:
"""


def block(text):
    """A YAML literal block scalar holding `text` exactly."""
    if not text.endswith("\n") or text.endswith("\n\n"):
        raise SystemExit("config file must end with exactly one newline")
    for line in text.splitlines():
        if line != line.rstrip() or "\t" in line or line.startswith(" "):
            raise SystemExit(f"cannot embed line with leading/trailing blanks or tabs: {line!r}")
    return "|\n" + "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


def render():
    out = HEADER
    for key in KEYS:
        with open(os.path.join(ROOT, "etc", key), encoding="utf-8") as f:
            out += f"  {key}: " + block(f.read())
    return out


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        with open(TARGET, encoding="utf-8") as f:
            if f.read() != text:
                print(f"{TARGET} is stale: run {sys.argv[0]}", file=sys.stderr)
                return 1
        return 0
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
