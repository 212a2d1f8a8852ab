"""TLS on the serving port (issue 7, TLS section): wss:// and https:// with
certificates made at test time by the openssl CLI, the runbook's
`openssl s_client` check, ALPN and SNI, tls_min_version, what happens to
plain HTTP, garbage and stalled handshakes (closed, counted once as
error_type "tls"), certificate reload on SIGHUP (new connections get the new
certificate, open sessions carry on; a bad pair fails the reload and changes
nothing), `wsgate -t` on a bad pair, and the framing close codes and a 1 MiB
message over TLS.

Only 127.0.0.1. The gateway's own port speaks TLS only, so health and
metrics are read from the master's plain metrics_port.
"""
import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

import runbook
from conftest import ROOT, SLOW, WSGATE_BIN, metric
import wsframes as wf

HOST = "websocket.vitalstream.com"
ERROR_TYPES = ("handshake", "capacity", "timeout", "auth", "origin", "tls", "io")


# -- certificates ----------------------------------------------------------

def openssl(cwd, *args):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=30 * SLOW)
    assert out.returncode == 0, f"openssl {' '.join(args)}:\n{out.stderr}"
    return out.stdout


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def new_key(d, name):
    openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", name)


def sign(d, name, subject, issuer, ext):
    """name.key + a certificate name.pem for `subject`, signed by issuer
    (issuer.pem/issuer.key) with the extensions `ext`."""
    new_key(d, f"{name}.key")
    openssl(d, "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
    write(os.path.join(d, f"{name}.ext"), ext)
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
            f"{issuer}.key", "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


class Certs:
    """A test CA; server certificate A (leaf + intermediate, the chain a
    real deployment has) and B (signed by the root) for the same names; and
    a key that belongs to neither."""

    def __init__(self, d):
        self.dir = d
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=wsgate test root CA")
        sign(d, "int", "/CN=wsgate test intermediate", "ca",
             "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        server_ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                      "extendedKeyUsage=serverAuth\n"
                      f"subjectAltName=DNS:{HOST},IP:127.0.0.1\n")
        sign(d, "a", f"/CN={HOST}/O=wsgate test A", "int", server_ext)
        sign(d, "b", f"/CN={HOST}/O=wsgate test B", "ca", server_ext)
        write(os.path.join(d, "a-chain.pem"),
              read(os.path.join(d, "a.pem")) + read(os.path.join(d, "int.pem")))
        new_key(d, "other.key")
        self.ca = os.path.join(d, "ca.pem")
        self.a_chain = os.path.join(d, "a-chain.pem")
        self.a_key = os.path.join(d, "a.key")
        self.b_cert = os.path.join(d, "b.pem")
        self.b_key = os.path.join(d, "b.key")
        self.other_key = os.path.join(d, "other.key")
        self.a_der = ssl.PEM_cert_to_DER_cert(read(os.path.join(d, "a.pem")))
        self.b_der = ssl.PEM_cert_to_DER_cert(read(self.b_cert))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


def install(dst_dir, cert, key):
    """Put a pair at dst_dir/tls.crt and tls.key, each replaced atomically
    (as a Kubernetes secret update does); returns the two paths."""
    paths = (os.path.join(dst_dir, "tls.crt"), os.path.join(dst_dir, "tls.key"))
    for src, dst in ((cert, paths[0]), (key, paths[1])):
        shutil.copyfile(src, dst + ".new")
        os.replace(dst + ".new", dst)
    return paths


# -- clients and observation -----------------------------------------------

def client_ctx(certs, **kw):
    ctx = ssl.create_default_context(cafile=certs.ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, server_hostname=HOST, timeout=5.0, rcvbuf=None, ragged_ok=True):
    """A TLS socket to the gateway; with ragged_ok=False a TCP close without
    TLS close_notify raises ssl.SSLEOFError instead of reading as EOF."""
    if rcvbuf:
        # Before connect, so the window the server sees is small from the start.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout * SLOW)
        raw.connect(("127.0.0.1", port))
    else:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname,
                               suppress_ragged_eofs=ragged_ok)
    except BaseException:
        raw.close()
        raise


def peer_der(port, ctx):
    """The certificate a new connection is served (DER)."""
    with tls_connect(port, ctx) as s:
        return s.getpeercert(binary_form=True)


class TlsRawWS(wf.RawWS):
    """wsframes.RawWS over TLS: frames by hand, encrypted."""

    def __init__(self, port, ctx, timeout=wf.TIMEOUT, rcvbuf=None):
        self.port = port
        self.timeout = timeout
        self.sock = tls_connect(port, ctx, timeout=timeout, rcvbuf=rcvbuf)
        self.reader = wf.Reader(self.sock)
        self.response = None


def open_tls_ws(port, ctx, rcvbuf=None):
    ws = TlsRawWS(port, ctx, rcvbuf=rcvbuf)
    try:
        ws.handshake()
    except BaseException:
        ws.close_socket()
        raise
    return ws


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def errors(gw):
    m = gw.metrics(port=gw.metrics_port)
    return {t: metric(m, "websocket_connection_errors_total", error_type=t) for t in ERROR_TYPES}


def reloads(gw, result):
    return metric(gw.metrics(port=gw.metrics_port), "websocket_config_reloads_total",
                  result=result)


def assert_one_tls_error(gw, before):
    """Exactly one more error, of type tls, and it stays one."""
    want = dict(before, tls=before["tls"] + 1)
    assert wf.wait_for(lambda: errors(gw) == want), (before, errors(gw))
    time.sleep(0.3 * SLOW)  # a second count would come from the same close
    assert errors(gw) == want


def tls_warnings(gw):
    return [l for l in gw.logs() if l.get("level") == "warn" and l.get("error_type") == "tls"]


def still_open(sock, seconds):
    """True when the server has neither sent anything nor closed within
    `seconds` (a lower bound: a slow machine only closes later)."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)  # data or EOF: not silent
        return False
    except socket.timeout:
        return True
    except OSError:
        return False


def client_hello():
    """The bytes of a real TLS ClientHello."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:8]
    return hello


def s_client(port, *args, timeout=15):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout * SLOW)


@pytest.fixture
def tls_gateway(gateway_factory, certs, tmp_path):
    """make(**config): a gateway serving pair A from files it may replace."""
    def make(start=True, **config):
        d = tmp_path / f"pair{len(os.listdir(tmp_path))}"
        d.mkdir()
        cert, key = install(str(d), certs.a_chain, certs.a_key)
        cfg = {"tls_cert_file": cert, "tls_key_file": key, "workers": 2}
        cfg.update(config)
        gw = gateway_factory(config=cfg, start=start)
        gw.cert_path, gw.key_path = cert, key
        return gw
    return make


# -- serving ---------------------------------------------------------------

def test_wss_ping_pong_with_websockets_client(tls_gateway, certs):
    gw = tls_gateway()

    async def go():
        # wss://127.0.0.1: the certificate must hold the IP as a SAN, and the
        # chain (leaf + intermediate) must verify against the root alone.
        async with websockets.connect(f"wss://127.0.0.1:{gw.port}/ws", ssl=client_ctx(certs),
                                      open_timeout=10 * SLOW) as ws:
            peer = ws.transport.get_extra_info("ssl_object").getpeercert()
            subject = dict(x[0] for x in peer["subject"])
            for i in range(3):
                await ws.send(json.dumps({"type": "ping", "id": i}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "pong" and reply["id"] == i, reply
            return subject

    subject = run(go())
    assert subject["commonName"] == HOST, subject
    m = gw.metrics(port=gw.metrics_port)
    assert metric(m, "websocket_connections_total") >= 1
    assert metric(m, "websocket_messages_received_total") >= 3
    assert errors(gw)["tls"] == 0


def test_runbook_s_client_completes_handshake_and_shows_certificate(tls_gateway, certs):
    gw = tls_gateway()
    # docs/RUNBOOK.md "Check SSL/TLS Configuration", the command as it runs in
    # the pod, pointed at the test port, trusting the test CA so that
    # verification is part of the check.
    (cmd,) = runbook.commands("kubectl exec -it deployment/websocket -n vitalstream -- openssl ")
    args = shlex.split(cmd)
    args = args[args.index("openssl"):]
    assert args[:4] == ["openssl", "s_client", "-connect", "websocket:8003"], args
    out = subprocess.run(args[:3] + [f"127.0.0.1:{gw.port}"] + args[4:] + ["-CAfile", certs.ca],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=15 * SLOW)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"subject=CN = {HOST}" in out.stdout, out.stdout
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout
    assert "TLSv1.3" in out.stdout, out.stdout
    # The chain went out: the intermediate is listed as depth 1.
    assert "CN = wsgate test intermediate" in out.stdout, out.stdout
    assert errors(gw)["tls"] == 0


def test_curl_https_health_and_metrics(tls_gateway, certs):
    gw = tls_gateway()
    url = f"https://{HOST}:{gw.port}"
    common = ["curl", "-sS", "--max-time", str(10 * SLOW), "--cacert", certs.ca,
              "--resolve", f"{HOST}:{gw.port}:127.0.0.1"]
    out = subprocess.run(common + ["-w", "\n%{http_code} %{http_version}", url + "/health"],
                         capture_output=True, text=True, timeout=20 * SLOW)
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200 1.1", out.stdout
    assert json.loads(body) == {"status": "ok"}
    out = subprocess.run(common + [url + "/metrics"], capture_output=True, text=True,
                         timeout=20 * SLOW)
    assert out.returncode == 0, out.stderr
    assert 'websocket_connection_errors_total{environment="test",error_type="tls"} 0' \
        in out.stdout, out.stdout
    # HEAD and 404 work the same way over TLS.
    out = subprocess.run(common + ["-I", url + "/health"], capture_output=True, text=True,
                         timeout=20 * SLOW)
    assert out.returncode == 0 and out.stdout.startswith("HTTP/1.1 200"), out.stdout
    out = subprocess.run(common + ["-o", "/dev/null", "-w", "%{http_code}", url + "/nope"],
                         capture_output=True, text=True, timeout=20 * SLOW)
    assert out.stdout == "404", out.stdout


def test_responses_end_with_close_notify(tls_gateway, certs):
    # The server ends its side in TLS too (close_notify), so a client can
    # tell a complete response from a cut one.
    gw = tls_gateway(workers=1)
    ctx = client_ctx(certs)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python sets it by default
    with tls_connect(gw.port, ctx, ragged_ok=False) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = wf.Reader(s)
        assert wf.read_response(reader, wf.deadline_in(5)).status == 200
        assert reader.read_to_eof(wf.deadline_in(5)) == b""  # SSLEOFError if ragged
    with tls_connect(gw.port, ctx, ragged_ok=False) as s:
        ws = TlsRawWS.__new__(TlsRawWS)
        ws.port, ws.timeout, ws.sock, ws.reader, ws.response = gw.port, 5, s, wf.Reader(s), None
        ws.handshake()
        ws.send(wf.close_frame(1000))
        assert ws.expect_close()[0] == 1000


def test_alpn_selects_http11_when_offered(tls_gateway, certs):
    gw = tls_gateway()
    ctx = client_ctx(certs)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(gw.port, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    # Only protocols we do not speak: no ALPN answer, the handshake still
    # completes (the client decides what to do).
    ctx = client_ctx(certs)
    ctx.set_alpn_protocols(["h2"])
    with tls_connect(gw.port, ctx) as s:
        assert s.selected_alpn_protocol() is None
    with tls_connect(gw.port, client_ctx(certs)) as s:
        assert s.selected_alpn_protocol() is None
    out = s_client(gw.port, "-servername", HOST, "-CAfile", certs.ca, "-alpn", "http/1.1")
    assert "ALPN protocol: http/1.1" in out.stdout, out.stdout
    assert errors(gw)["tls"] == 0


def test_sni_any_name_is_accepted(tls_gateway, certs):
    gw = tls_gateway()
    # The certificate is served whatever name the client asks for; a client
    # that verifies names then decides (here: it matches, then it does not).
    with tls_connect(gw.port, client_ctx(certs), server_hostname=HOST) as s:
        assert s.getpeercert(binary_form=True) == certs.a_der
    ctx = client_ctx(certs, check_hostname=False)
    with tls_connect(gw.port, ctx, server_hostname="other.example") as s:
        assert s.getpeercert(binary_form=True) == certs.a_der
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(gw.port, client_ctx(certs), server_hostname="other.example").close()


def test_min_version_13_refuses_a_tls12_client(tls_gateway, certs):
    gw = tls_gateway(tls_min_version="1.3")
    before = errors(gw)
    out = s_client(gw.port, "-servername", HOST, "-CAfile", certs.ca, "-tls1_2")
    assert out.returncode != 0, out.stdout
    assert "Cipher is (NONE)" in out.stdout or "Verify return code" not in out.stdout, out.stdout
    assert_one_tls_error(gw, before)
    assert any("tls_min_version" in l.get("message", "") for l in tls_warnings(gw)), gw.stderr()
    ctx = client_ctx(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        tls_connect(gw.port, ctx).close()
    # TLS 1.3 clients are served.
    out = s_client(gw.port, "-servername", HOST, "-CAfile", certs.ca, "-tls1_3")
    assert out.returncode == 0 and "Verify return code: 0 (ok)" in out.stdout, out.stdout


def test_default_min_version_accepts_tls12(tls_gateway, certs):
    gw = tls_gateway()
    out = s_client(gw.port, "-servername", HOST, "-CAfile", certs.ca, "-tls1_2")
    assert out.returncode == 0, out.stdout
    assert "Protocol  : TLSv1.2" in out.stdout, out.stdout
    assert errors(gw)["tls"] == 0


def test_min_version_change_applies_on_reload(tls_gateway, certs):
    gw = tls_gateway()
    ctx12 = client_ctx(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    tls_connect(gw.port, ctx12).close()
    gen = gw.detailed(port=gw.metrics_port)["config_generation"]
    gw.config["tls_min_version"] = "1.3"
    gw.write_config()
    gw.signal(signal.SIGHUP)
    assert wf.wait_for(lambda: all(w["config_generation"] > gen for w in
                                   gw.detailed(port=gw.metrics_port)["workers"]))
    for _ in range(4):
        with pytest.raises(ssl.SSLError):
            tls_connect(gw.port, ctx12).close()
    tls_connect(gw.port, client_ctx(certs)).close()


# -- what is not TLS, or never finishes --------------------------------------

def test_plain_http_on_tls_port_closed_and_counted(tls_gateway):
    gw = tls_gateway(workers=1)
    before = errors(gw)
    with wf.connect(gw.port) as s:
        s.sendall(wf.upgrade_request(gw.port))
        reader = wf.Reader(s)
        assert wf.wait_closed(s, reader), "server kept a plain-HTTP connection open"
        assert b"HTTP/1.1" not in reader.buf
    assert_one_tls_error(gw, before)
    warns = tls_warnings(gw)
    assert len(warns) == 1, warns
    assert warns[0]["tls_error"] == "http request" and "plain HTTP" in warns[0]["message"], warns
    # curl over http:// to the TLS port: an empty reply, not a hang.
    out = subprocess.run(["curl", "-sS", "--max-time", str(10 * SLOW),
                          f"http://127.0.0.1:{gw.port}/health"],
                         capture_output=True, text=True, timeout=20 * SLOW)
    assert out.returncode != 0 and out.returncode != 28, (out.returncode, out.stderr)
    assert_one_tls_error(gw, dict(before, tls=before["tls"] + 1))


@pytest.mark.parametrize("garbage", [b"\x00" * 64, b"\xde\xad\xbe\xef" * 128,
                                     b"\x16\x03\x01\x00\x05hello", b"SSH-2.0-OpenSSH_9.2\r\n"])
def test_garbage_on_tls_port_closed_and_counted(tls_gateway, garbage):
    gw = tls_gateway(workers=1)
    before = errors(gw)
    with wf.connect(gw.port) as s:
        s.sendall(garbage)
        assert wf.wait_closed(s), "server kept a garbage connection open"
    assert_one_tls_error(gw, before)
    assert len(tls_warnings(gw)) == 1, gw.stderr()


def test_stalled_handshake_nothing_sent_closed_after_timeout(tls_gateway):
    gw = tls_gateway(workers=1, handshake_timeout=1)
    before = errors(gw)
    with wf.connect(gw.port) as s:
        assert still_open(s, 0.5), "closed before handshake_timeout"
        assert wf.wait_closed(s, timeout=5), "stalled handshake not closed"
    # tls, not timeout: there was no HTTP exchange to time out.
    assert_one_tls_error(gw, before)
    warns = tls_warnings(gw)
    assert len(warns) == 1 and "handshake_timeout" in warns[0]["message"], warns


def test_stalled_partial_client_hello_closed_after_timeout(tls_gateway):
    gw = tls_gateway(workers=1, handshake_timeout=1)
    before = errors(gw)
    hello = client_hello()
    with wf.connect(gw.port) as s:
        s.sendall(hello[:len(hello) // 2])
        assert still_open(s, 0.5), "closed before handshake_timeout"
        assert wf.wait_closed(s, timeout=5), "stalled handshake not closed"
    assert_one_tls_error(gw, before)
    warns = tls_warnings(gw)
    assert len(warns) == 1 and "not completed within handshake_timeout" in warns[0]["message"]


def test_hangup_mid_handshake_counted_once(tls_gateway):
    gw = tls_gateway(workers=1)
    before = errors(gw)
    hello = client_hello()
    with wf.connect(gw.port) as s:
        s.sendall(hello[:40])
    assert_one_tls_error(gw, before)
    # A full ClientHello and then a reset (SO_LINGER 0): still one error.
    before = errors(gw)
    s = wf.connect(gw.port)
    s.sendall(hello)
    time.sleep(0.2 * SLOW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert_one_tls_error(gw, before)


def test_garbage_then_reset_is_still_one_error(tls_gateway):
    # Our alert may meet a reset socket: the write error must not add an io
    # error to the tls one.
    gw = tls_gateway(workers=1)
    for _ in range(5):
        before = errors(gw)
        s = wf.connect(gw.port)
        # An empty ClientHello: OpenSSL answers with a decode_error alert,
        # which meets the reset.
        s.sendall(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        assert_one_tls_error(gw, before)


def test_client_refusing_our_certificate_counted(tls_gateway):
    gw = tls_gateway(workers=1)
    before = errors(gw)
    ctx = ssl.create_default_context()  # the system CAs: our test CA is unknown
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(gw.port, ctx).close()
    assert_one_tls_error(gw, before)
    assert "refused" in tls_warnings(gw)[0]["message"], gw.stderr()


def test_tls_but_no_http_request_is_an_http_timeout(tls_gateway, certs):
    # The handshake completed: the client can read a 408, and the error is
    # the HTTP one (timeout), not tls.
    gw = tls_gateway(workers=1, handshake_timeout=1)
    before = errors(gw)
    with tls_connect(gw.port, client_ctx(certs)) as s:
        reader = wf.Reader(s)
        resp = wf.read_response(reader, wf.deadline_in(5))
        assert resp.status == 408, resp
        assert wf.wait_closed(s, reader)
    want = dict(before, timeout=before["timeout"] + 1)
    assert wf.wait_for(lambda: errors(gw) == want), errors(gw)
    assert tls_warnings(gw) == []


def test_port_probe_is_not_an_error(tls_gateway, certs):
    gw = tls_gateway(workers=1)
    before = errors(gw)
    for _ in range(3):
        wf.connect(gw.port).close()
    tls_connect(gw.port, client_ctx(certs)).close()  # a handshake, then goodbye
    time.sleep(0.5 * SLOW)
    assert errors(gw) == before
    assert tls_warnings(gw) == []


# -- the WebSocket session over TLS -----------------------------------------

def test_close_codes_over_tls(tls_gateway, certs):
    gw = tls_gateway(workers=1, max_message_size=1024)
    ctx = client_ctx(certs)
    m = gw.metrics(port=gw.metrics_port)
    too_large = metric(m, "websocket_disconnections_total", reason="too_large")
    protocol = metric(m, "websocket_disconnections_total", reason="protocol_error")
    with open_tls_ws(gw.port, ctx) as ws:
        ws.send(wf.text(b"x" * 10, length=2048)[:-10])  # the header announces 2 KiB
        assert ws.expect_close()[0] == 1009
    with open_tls_ws(gw.port, ctx) as ws:
        ws.send_text(b'{"type":"ping","id":"\xff"}')
        assert ws.expect_close()[0] == 1007
    with open_tls_ws(gw.port, ctx) as ws:
        ws.send(wf.text(b'{"type":"ping"}', mask=False))
        assert ws.expect_close()[0] == 1002
    m = gw.metrics(port=gw.metrics_port)
    assert wf.wait_for(lambda: metric(gw.metrics(port=gw.metrics_port),
                                      "websocket_disconnections_total", reason="too_large")
                       == too_large + 1)
    assert metric(m, "websocket_disconnections_total", reason="protocol_error") >= protocol + 1
    assert errors(gw)["tls"] == 0


def test_slow_consumer_over_tls_closed_1013(tls_gateway, certs):
    # The send queue holds plaintext until its ciphertext is in the kernel:
    # a subscriber that stops reading still trips max_send_buffer.
    gw = tls_gateway(workers=1, max_send_buffer=65536)
    ctx = client_ctx(certs)
    before = metric(gw.metrics(port=gw.metrics_port), "websocket_disconnections_total",
                    reason="slow_consumer")
    sub = open_tls_ws(gw.port, ctx, rcvbuf=4096)
    pub = open_tls_ws(gw.port, ctx)
    with sub, pub:
        assert sub.request({"type": "subscribe", "stream": "slow", "id": 1})["type"] == \
            "subscribed"
        data = "y" * 4000

        def tripped():
            return any("max_send_buffer" in l.get("message", "") for l in gw.logs())

        for i in range(2000):
            pub.send_json({"type": "publish", "stream": "slow", "data": data})
            if i % 50 == 49 and tripped():
                break
        assert wf.wait_for(tripped), "max_send_buffer never tripped"
        # Read at once: the server waits only a short while for our reply
        # to its close frame. What is queued before the close frame arrives
        # first (the kernel's share), then 1013.
        code, _ = sub.expect_close(timeout=10)
        assert code == 1013
        assert wf.wait_for(lambda: metric(gw.metrics(port=gw.metrics_port),
                                          "websocket_disconnections_total",
                                          reason="slow_consumer") == before + 1)
        assert pub.request({"type": "ping", "id": 2})["id"] == 2  # the publisher carries on


def test_one_mib_message_round_trip_over_wss(tls_gateway, certs):
    gw = tls_gateway(workers=1, max_message_size=2 * 1024 * 1024)
    big = "".join(chr(ord("a") + i % 26) for i in range(1 << 20))

    async def go():
        async with websockets.connect(f"wss://127.0.0.1:{gw.port}/ws", ssl=client_ctx(certs),
                                      max_size=4 << 20, open_timeout=10 * SLOW) as ws:
            for i in range(2):
                await ws.send(json.dumps({"type": "ping", "id": big}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "pong" and reply["id"] == big
            await ws.send(json.dumps({"type": "ping", "id": "small"}))
            assert json.loads(await ws.recv())["id"] == "small"

    run(go())
    m = gw.metrics(port=gw.metrics_port)
    # Plaintext WebSocket bytes, as on a plain port.
    assert metric(m, "websocket_bytes_sent_total") > 2 * (1 << 20)
    assert metric(m, "websocket_request_duration_seconds_count", type="ping") == 3
    assert metric(m, "websocket_message_latency_seconds_count") == 0  # replies are not messages


def test_publish_subscribe_over_wss(tls_gateway, certs):
    gw = tls_gateway(workers=2)
    ctx = client_ctx(certs)

    async def go():
        url = f"wss://127.0.0.1:{gw.port}/ws"
        async with websockets.connect(url, ssl=ctx, open_timeout=10 * SLOW) as sub, \
                websockets.connect(url, ssl=ctx, open_timeout=10 * SLOW) as pub:
            await sub.send(json.dumps({"type": "subscribe", "stream": "patient/7/ecg", "id": 1}))
            assert json.loads(await sub.recv())["type"] == "subscribed"
            for i in range(50):
                await pub.send(json.dumps({"type": "publish", "stream": "patient/7/ecg",
                                           "data": {"i": i}, "id": i}))
            acks = [json.loads(await pub.recv()) for _ in range(50)]
            assert [a["seq"] for a in acks] == list(range(1, 51)), acks[:3]
            got = [json.loads(await sub.recv()) for _ in range(50)]
            assert [(g["seq"], g["data"]["i"]) for g in got] == [(i + 1, i) for i in range(50)]

    run(go())


def test_drain_over_tls_sends_reconnect_and_1001(tls_gateway, certs):
    gw = tls_gateway(workers=1, drain_window=0)
    ws = open_tls_ws(gw.port, client_ctx(certs))
    with ws:
        assert ws.request({"type": "ping", "id": 1})["type"] == "pong"
        gw.signal(signal.SIGTERM)
        assert ws.recv_message(timeout=10)["type"] == "reconnect"
        assert ws.expect_close(timeout=10)[0] == 1001
    assert gw.proc.wait(timeout=15 * SLOW) == 0


# -- certificate reload ----------------------------------------------------

def wait_generation(gw, after):
    assert wf.wait_for(lambda: all(
        w["config_generation"] > after for w in gw.detailed(port=gw.metrics_port)["workers"]
        if w["state"] == "running")), gw.detailed(port=gw.metrics_port)


def test_sighup_new_certificate_for_new_connections_old_sessions_continue(tls_gateway, certs):
    gw = tls_gateway()
    ctx = client_ctx(certs)
    old = open_tls_ws(gw.port, ctx)
    with old:
        assert old.sock.getpeercert(binary_form=True) == certs.a_der
        assert old.request({"type": "ping", "id": "before"})["id"] == "before"
        gen = gw.detailed(port=gw.metrics_port)["config_generation"]
        ok = reloads(gw, "success")
        install(os.path.dirname(gw.cert_path), certs.b_cert, certs.b_key)
        gw.signal(signal.SIGHUP)
        assert wf.wait_for(lambda: reloads(gw, "success") == ok + 1)
        wait_generation(gw, gen)
        # Every new connection, on whichever worker, gets B.
        for _ in range(8):
            assert peer_der(gw.port, ctx) == certs.b_der
        # The session opened before is still on A and still served.
        assert old.sock.getpeercert(binary_form=True) == certs.a_der
        for i in range(3):
            assert old.request({"type": "ping", "id": i})["id"] == i
    assert reloads(gw, "failure") == 0
    assert errors(gw)["tls"] == 0


def test_sighup_with_bad_pair_fails_and_keeps_the_old_one(tls_gateway, certs):
    gw = tls_gateway()
    ctx = client_ctx(certs)
    old = open_tls_ws(gw.port, ctx)
    with old:
        gen = gw.detailed(port=gw.metrics_port)["config_generation"]
        # 1. A key that is not the certificate's.
        install(os.path.dirname(gw.cert_path), certs.b_cert, certs.other_key)
        gw.signal(signal.SIGHUP)
        assert wf.wait_for(lambda: reloads(gw, "failure") == 1)
        failures = [l for l in gw.logs() if l.get("event") == "reload"
                    and l.get("result") == "failure"]
        assert len(failures) == 1 and failures[0]["level"] == "error", failures
        assert gw.key_path in failures[0]["error"] and "tls_key_file" in failures[0]["error"]
        assert "does not match" in failures[0]["error"], failures
        # 2. A certificate file that is gone.
        os.unlink(gw.cert_path)
        gw.signal(signal.SIGHUP)
        assert wf.wait_for(lambda: reloads(gw, "failure") == 2)
        failures = [l for l in gw.logs() if l.get("event") == "reload"
                    and l.get("result") == "failure"]
        assert gw.cert_path in failures[-1]["error"] and "tls_cert_file" in failures[-1]["error"]
        assert gw.detailed(port=gw.metrics_port)["config_generation"] == gen
        for _ in range(6):
            assert peer_der(gw.port, ctx) == certs.a_der
        assert old.request({"type": "ping", "id": 1})["id"] == 1
        # 3. A worker that dies now is respawned with the pair in use (A),
        # not with the broken files on disk.
        victim = gw.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wf.wait_for(lambda: victim not in gw.worker_pids() and len([
            w for w in gw.detailed(port=gw.metrics_port)["workers"]
            if w["state"] == "running"]) == 2, timeout=10)
        for _ in range(8):
            assert peer_der(gw.port, ctx) == certs.a_der
        # 4. Fixed: the next SIGHUP brings B.
        install(os.path.dirname(gw.cert_path), certs.b_cert, certs.b_key)
        gw.signal(signal.SIGHUP)
        assert wf.wait_for(lambda: reloads(gw, "success") == 1)
        wait_generation(gw, gen)
        for _ in range(4):
            assert peer_der(gw.port, ctx) == certs.b_der
    stderr = gw.stderr()
    assert "PRIVATE KEY" not in stderr and read(certs.other_key).splitlines()[1] not in stderr


def test_switching_tls_on_by_reload_is_refused(gateway_factory, certs):
    gw = gateway_factory(config={"workers": 1})
    gw.config.update({"tls_cert_file": certs.a_chain, "tls_key_file": certs.a_key})
    gw.write_config()
    gw.signal(signal.SIGHUP)
    assert wf.wait_for(lambda: metric(gw.metrics(port=gw.metrics_port),
                                      "websocket_config_reloads_total", result="failure") == 1)
    failure = [l for l in gw.logs() if l.get("event") == "reload"][-1]
    assert "tls_cert_file" in failure["error"] and "restart" in failure["error"], failure
    status, body = gw.http("/health")  # still plain
    assert status == 200 and json.loads(body) == {"status": "ok"}


# -- wsgate -t ------------------------------------------------------------

def check(tmp_path, **keys):
    path = os.path.join(str(tmp_path), "websocket.yaml")
    write(path, "".join(f'{k}: "{v}"\n' for k, v in keys.items()))
    return subprocess.run([WSGATE_BIN, "-t", "-c", path], capture_output=True, text=True,
                          timeout=10 * SLOW)


def test_check_mode_accepts_a_good_pair(tmp_path, certs):
    out = check(tmp_path, tls_cert_file=certs.a_chain, tls_key_file=certs.a_key,
                tls_min_version="1.3")
    assert out.returncode == 0, out.stderr


def test_check_mode_refuses_a_mismatched_pair_naming_the_key_file(tmp_path, certs):
    out = check(tmp_path, tls_cert_file=certs.a_chain, tls_key_file=certs.other_key)
    assert out.returncode == 1, out
    assert "websocket.yaml:2: key 'tls_key_file'" in out.stderr, out.stderr
    assert certs.other_key in out.stderr and "does not match" in out.stderr, out.stderr


@pytest.mark.parametrize("keys,named", [
    ({"tls_cert_file": "CERT"}, "tls_key_file"),
    ({"tls_key_file": "KEY"}, "tls_cert_file"),
    ({"tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "KEY"}, "tls_cert_file"),
    ({"tls_cert_file": "CERT", "tls_key_file": "/nonexistent/key.pem"}, "tls_key_file"),
    ({"tls_cert_file": "KEY", "tls_key_file": "KEY"}, "tls_cert_file"),
    ({"tls_cert_file": "CERT", "tls_key_file": "CERT"}, "tls_key_file"),
    ({"tls_cert_file": "CERT", "tls_key_file": "KEY", "tls_min_version": "1.1"},
     "tls_min_version"),
])
def test_check_mode_refuses_bad_tls_keys(tmp_path, certs, keys, named):
    subst = {"CERT": certs.a_chain, "KEY": certs.a_key}
    out = check(tmp_path, **{k: subst.get(v, v) for k, v in keys.items()})
    assert out.returncode == 1, out
    assert f"key '{named}'" in out.stderr, out.stderr


def test_start_with_a_bad_pair_exits_1(gateway_factory, certs):
    gw = gateway_factory(config={"tls_cert_file": certs.b_cert, "tls_key_file": certs.a_key},
                         start=False)
    gw.start(wait=False)
    assert gw.proc.wait(timeout=10 * SLOW) == 1
    assert "does not match" in gw.stderr(), gw.stderr()


def test_tls_keys_documented_in_help_and_shipped_config():
    out = subprocess.run([WSGATE_BIN, "-h"], capture_output=True, text=True, timeout=10 * SLOW)
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    shipped = read(os.path.join(ROOT, "etc", "websocket.yaml")).splitlines()
    readme = read(os.path.join(ROOT, "README.md"))
    for key in ("tls_cert_file", "tls_key_file", "tls_min_version"):
        assert key in listed, out.stdout
        line = next((l for l in shipped if l.startswith(key + ":")), None)
        assert line is not None and "#" in line, f"{key} not in etc/websocket.yaml with a comment"
        assert f"| `{key}` |" in readme, f"{key} not in README's key table"
