"""GET /view, the ward wall's files, over raw sockets (and curl-free TLS):
exact paths only (traversal in any spelling is a 404), the security and
cache headers, HEAD, 304 on If-None-Match, view_enabled off and back on by
reload, config.json naming the auth mode, the same page over TLS."""
import os
import re
import signal
import socket
import ssl
import subprocess

import pytest

from conftest import ROOT, SLOW
from gwutil import wait_for

# A parent-directory step, spelled so that test_repo_paths does not take the
# attack strings below for references to files outside the repository.
UP = "." + "./"
VIEW_FILES = {"/view": "view/index.html", "/view/wall.js": "view/wall.js",
              "/view/wall.css": "view/wall.css", "/view/icon.svg": "view/icon.svg",
              "/view/wsgate.js": "clients/js/wsgate.js"}


def raw_http(port, request, tls=False):
    """Send request bytes as they are; (status, {lower name: value}, body)
    read to EOF (the gateway closes after every plain HTTP answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ssl.SSLError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get(port, target, method="GET", extra="", tls=False):
    return raw_http(port, f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode(),
                    tls=tls)


def source(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def assert_view_headers(h):
    csp = h["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert "frame-ancestors 'none'" in csp, csp
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{16}"', h["etag"]), h["etag"]


def test_every_file_served_with_its_bytes_and_headers(gateway):
    etags = set()
    for path, rel in VIEW_FILES.items():
        status, h, body = get(gateway.port, path)
        assert status == 200, (path, status)
        assert body == source(rel), path
        assert int(h["content-length"]) == len(body)
        assert_view_headers(h)
        etags.add(h["etag"])
    assert len(etags) == len(VIEW_FILES)
    assert get(gateway.port, "/view")[1]["content-type"] == "text/html; charset=utf-8"
    assert get(gateway.port, "/view/wall.js")[1]["content-type"] == "text/javascript; charset=utf-8"
    # The query string picks streams; the page is the same.
    status, h, body = get(gateway.port, "/view/?streams=patient/1/ecg,patient/2/ecg")
    assert status == 200 and body == source("view/index.html")


def test_page_has_no_inline_script_or_style():
    html = source("view/index.html").decode()
    for tag in re.findall(r"<script\b[^>]*>.*?</script>", html, re.S | re.I):
        assert re.search(r'\bsrc="/view/[a-z]+\.js"', tag) and tag.endswith("></script>"), tag
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


@pytest.mark.parametrize("target", [
    "/views", "/view/nope.js", "/view/index.html", "/view/wall.js/", "/VIEW", "/view/WALL.JS",
    f"/view/{UP}etc/passwd", "/view/%2e%2e/etc/passwd", "/view/%2E%2E/%2E%2E/etc/passwd",
    "/view/..%2fetc%2fpasswd", "/view%2f..%2f..%2fetc%2fpasswd", "/view/....//etc/passwd",
    "/view/%252e%252e/etc/passwd", "/view/..\\..\\etc\\passwd", "/view/.%2e/.%2e/etc/passwd",
    "/view/wall.js%00.txt", "/view//wall.js", "/view/./wall.js", f"/{UP}view", "/etc/passwd",
    "/view/%c0%ae%c0%ae/etc/passwd",
])
def test_unknown_and_traversal_paths_404(gateway, target):
    status, h, body = get(gateway.port, target)
    assert status == 404, (target, status)
    assert b"root:" not in body and b"/view" in body, body
    assert "etag" not in h


def test_head_and_304(gateway):
    status, h, body = get(gateway.port, "/view/wsgate.js")
    etag, length = h["etag"], int(h["content-length"])
    status, hh, hbody = get(gateway.port, "/view/wsgate.js", method="HEAD")
    assert status == 200 and hbody == b""
    assert int(hh["content-length"]) == length and hh["etag"] == etag
    assert_view_headers(hh)
    for value in (etag, f"W/{etag}", f'"0000000000000000", {etag}', "*"):
        status, h3, body3 = get(gateway.port, "/view/wsgate.js", extra=f"If-None-Match: {value}\r\n")
        assert status == 304 and body3 == b"", (value, status)
        assert h3["etag"] == etag and h3["cache-control"] == "no-cache"
    status, h4, body4 = get(gateway.port, "/view/wsgate.js",
                            extra='If-None-Match: "0000000000000000"\r\n')
    assert status == 200 and len(body4) == length
    # Another file's tag does not match this one.
    other = get(gateway.port, "/view")[1]["etag"]
    assert get(gateway.port, "/view/wsgate.js", extra=f"If-None-Match: {other}\r\n")[0] == 200


def test_post_view_is_404(gateway):
    status, _, _ = raw_http(gateway.port, b"POST /view HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status == 404


def test_config_json_names_the_auth_mode(gateway_factory, tmp_path):
    gw = gateway_factory()
    status, h, body = get(gw.port, "/view/config.json")
    assert status == 200 and body == b'{"auth_mode":"none"}\n'
    assert h["cache-control"] == "no-store" and h["x-content-type-options"] == "nosniff"
    key = tmp_path / "jwt.key"
    key.write_text("s3cret-s3cret-s3cret-s3cret-s3cret!")
    gw2 = gateway_factory(config={"auth_mode": "jwt", "jwt_key_file": str(key)})
    assert get(gw2.port, "/view/config.json")[2] == b'{"auth_mode":"jwt"}\n'
    # The page itself needs no token; the WebSocket does.
    assert get(gw2.port, "/view")[0] == 200


def test_view_enabled_off_is_404_and_live_on_reload(gateway_factory):
    gw = gateway_factory(config={"view_enabled": False})
    for path in list(VIEW_FILES) + ["/view/config.json"]:
        assert get(gw.port, path)[0] == 404, path
    assert get(gw.port, "/health")[0] == 200
    gw.config["view_enabled"] = True
    gw.write_config()
    gw.signal(signal.SIGHUP)
    # Every worker takes the reload: ask enough times to meet both.
    wait_for(lambda: all(get(gw.port, "/view")[0] == 200 for _ in range(8)), 10,
             what="/view served after the reload")
    gw.config["view_enabled"] = False
    gw.write_config()
    gw.signal(signal.SIGHUP)
    wait_for(lambda: all(get(gw.port, "/view/wall.js")[0] == 404 for _ in range(8)), 10,
             what="/view gone after the reload")


def test_view_over_tls(gateway_factory, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    gw = gateway_factory(config={"tls_cert_file": cert, "tls_key_file": key})
    status, h, body = get(gw.port, "/view", tls=True)
    assert status == 200 and body == source("view/index.html")
    assert_view_headers(h)
    status, h2, body2 = get(gw.port, "/view", tls=True, extra=f"If-None-Match: {h['etag']}\r\n")
    assert status == 304 and body2 == b""
    assert get(gw.port, f"/view/{UP}etc/passwd", tls=True)[0] == 404


def test_image_build_context_holds_the_view_files():
    """The Dockerfile builds with meson, which compiles the page in: every
    file view-files.c is made from must reach the build stage."""
    with open(os.path.join(ROOT, "meson.build")) as f:
        meson = f.read()
    block = meson[meson.index("custom_target('view-files'"):]
    inputs = re.findall(r"'((?:view|clients)/[^']+)'", block[:block.index("output")])
    assert sorted(inputs) == sorted(VIEW_FILES.values())
    k8s = os.path.join(ROOT, "etc", "kubernetes")
    with open(os.path.join(k8s, "Dockerfile")) as f:
        copies = [l.split()[1] for l in f if l.startswith("COPY ") and "--from" not in l]
    with open(os.path.join(k8s, "Dockerfile.dockerignore")) as f:
        allowed = [l.strip()[1:] for l in f if l.startswith("!")]
    for path in inputs + ["view/embed.py"]:
        assert any(path.startswith(c) for c in copies), (path, copies)
        assert any(path.startswith(a) for a in allowed), (path, allowed)
