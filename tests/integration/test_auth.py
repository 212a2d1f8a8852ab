"""Authentication and stream permissions (issue 7): auth_mode jwt against the
real binary, with tokens made independently of the gateway (jwtutil: HS256
with Python's hmac, RS256/ES256 signed by the openssl CLI with keys made at
test time).

Covers: 401 before the upgrade for every kind of bad token (with a Bearer
challenge and a JSON body that says what is wrong without echoing the
token), tokens from Authorization and from access_token, RS256 and ES256,
the algorithm-confusion attack, subscribe/publish outside the grant
(forbidden, connection kept, nothing delivered), exp passing mid-session
(1008), refreshing with {"type":"auth"} (same sub only; invalid ones keep
the old token), key rotation on SIGHUP, turning auth on by reload, config
errors, and that tokens, secrets and payloads never reach the logs.
"""
import json
import os
import signal
import subprocess
import time

import pytest
import websockets
import asyncio

from conftest import SLOW, WSGATE_BIN, metric
import jwtutil
import wsframes as wf


# -- helpers ------------------------------------------------------------------

def auth_config(keys, alg="HS256", **extra):
    key_file = {"HS256": keys.secret_path, "RS256": keys.rsa(), "ES256": keys.ec()}[alg]
    cfg = {"workers": 2, "auth_mode": "jwt", "jwt_algorithms": [alg], "jwt_key_file": key_file}
    cfg.update(extra)
    return cfg


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return jwtutil.Keys(d)


@pytest.fixture
def hs_gw(gateway_factory, keys):
    return gateway_factory(auth_config(keys))


def hs_token(keys, **kw):
    return jwtutil.token(jwtutil.claims(**kw), keys.secret)


def upgrade(port, token=None, via="header", headers=None, path="/ws"):
    """Send an upgrade; returns (Response, RawWS). The socket stays open."""
    hdrs = list(headers or [])
    if token is not None and via == "header":
        hdrs.append(("Authorization", "Bearer " + token))
    if token is not None and via == "query":
        path = path + ("&" if "?" in path else "?") + "access_token=" + token
    ws = wf.RawWS(port)
    ws.sock.sendall(wf.upgrade_request(port, path=path, headers=hdrs))
    resp = wf.read_response(ws.reader, wf.deadline_in())
    ws.response = resp
    return resp, ws


def connect(port, token, via="header"):
    resp, ws = upgrade(port, token, via)
    if resp.status != 101:
        ws.close_socket()
        raise AssertionError(resp)
    return ws


def expect_401(port, token=None, via="header", headers=None, path="/ws"):
    resp, ws = upgrade(port, token, via, headers, path)
    try:
        assert resp.status == 401, resp
        challenge = resp.header("www-authenticate")
        assert challenge and challenge.startswith("Bearer"), resp
        body = resp.json()
        assert body["status"] == 401
        if token:
            assert token not in resp.body.decode(), "the token is echoed back"
            for part in token.split("."):
                if len(part) > 3:
                    assert part not in resp.body.decode(), "a part of the token is echoed back"
        assert wf.wait_closed(ws.sock, ws.reader), "401 must close the connection"
        return body["error"], challenge
    finally:
        ws.close_socket()


def auth_errors(gw):
    return metric(gw.metrics(), "websocket_connection_errors_total", error_type="auth")


def refused(gw, code):
    return metric(gw.metrics(), "websocket_messages_refused_total", code=code)


def reload_with(gw, **changes):
    cfg = dict(gw.config)
    cfg.update(changes)
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)


def reloads(gw, result):
    return metric(gw.metrics(port=gw.metrics_port), "websocket_config_reloads_total", result=result)


def wait_reload(gw, result, before):
    assert wf.wait_for(lambda: reloads(gw, result) == before + 1, timeout=5), gw.stderr()
    # every worker has applied the new generation
    gen = gw.detailed()["config_generation"]
    assert wf.wait_for(lambda: all(w.get("config_generation", gen) == gen
                                   for w in gw.detailed()["workers"]), timeout=5)
    time.sleep(0.3)  # a worker tick (250 ms) applies it


# -- the handshake ------------------------------------------------------------

def test_no_token_is_401_with_bearer_challenge(hs_gw):
    before = auth_errors(hs_gw)
    total = metric(hs_gw.metrics(), "websocket_connections_total")
    error, challenge = expect_401(hs_gw.port)
    assert "no token" in error and "Authorization" in error and "access_token" in error
    assert "error=" not in challenge  # RFC 6750 3.1: no error code without a token
    assert wf.wait_for(lambda: auth_errors(hs_gw) == before + 1)
    assert metric(hs_gw.metrics(), "websocket_connections_total") == total


def test_plain_endpoints_need_no_token(hs_gw):
    assert hs_gw.http("/health")[0] == 200
    assert hs_gw.http("/metrics")[0] == 200


def test_valid_token_in_header_or_query(hs_gw, keys):
    t = hs_token(keys, subscribe=["patient/1/*"])
    for via in ("header", "query"):
        ws = connect(hs_gw.port, t, via)
        with ws:
            assert ws.request({"type": "ping", "id": via})["id"] == via
            reply = ws.request({"type": "subscribe", "stream": "patient/1/ecg", "id": 1})
            assert reply["type"] == "subscribed", reply
    # percent-encoded query value, beside other parameters
    encoded = t.replace(".", "%2E")
    ws = connect(hs_gw.port, encoded, "query")
    ws.close_socket()


def test_websockets_library_client_with_bearer_header(hs_gw, keys):
    t = hs_token(keys)

    async def go():
        async with websockets.connect(hs_gw.ws_url, open_timeout=10 * SLOW,
                                      extra_headers={"Authorization": f"Bearer {t}"}) as ws:
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
    reply = asyncio.run(asyncio.wait_for(go(), 20 * SLOW))
    assert reply["type"] == "pong" and reply["id"] == 7

    async def refused():
        try:
            async with websockets.connect(hs_gw.ws_url, open_timeout=10 * SLOW):
                return None
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
    assert asyncio.run(asyncio.wait_for(refused(), 20 * SLOW)) == 401


def _bad_tokens(keys):
    other = keys.other()  # another secret
    keys.rsa()
    now = int(time.time())
    good = jwtutil.claims()
    return {
        "expired": (jwtutil.token(jwtutil.claims(ttl=-10), keys.secret), "expired"),
        "expiring now": (jwtutil.token(dict(good, exp=now), keys.secret), "expired"),
        "no exp": (jwtutil.token(jwtutil.claims(ttl=None), keys.secret), "exp"),
        "string exp": (jwtutil.token(dict(good, exp=str(now + 300)), keys.secret), "exp"),
        "wrong secret": (jwtutil.token(good, other.secret), "signature"),
        "tampered": (_tamper(jwtutil.token(good, keys.secret)), "signature"),
        "alg none": (jwtutil.token(good, None, alg="none"), "algorithm"),
        "alg RS256 not listed": (jwtutil.token(good, keys.rsa_private, alg="RS256"),
                                 "algorithm"),
        "not yet valid": (jwtutil.token(dict(good, nbf=now + 600), keys.secret), "nbf"),
        "malformed": ("abc.def", "well-formed"),
        "not base64": ("e30.e30.!!", "well-formed"),
        "bad streams": (jwtutil.token(dict(good, streams=["patient/1/ecg"]), keys.secret),
                        "streams"),
        "bad pattern": (jwtutil.token(dict(good, streams={"subscribe": ["*"]}), keys.secret),
                        "streams"),
        "duplicate sub": (_duplicate_sub(keys), "well-formed"),
    }


def _tamper(tok):
    head, body, sig = tok.split(".")
    claims = json.loads(jwtutil.base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["streams"] = {"subscribe": ["patient/*"], "publish": ["patient/*"]}
    return head + "." + jwtutil.b64url_json(claims) + "." + sig


def _duplicate_sub(keys):
    head = jwtutil.b64url_json({"alg": "HS256", "typ": "JWT"})
    exp = int(time.time()) + 300
    body = jwtutil.b64url(f'{{"sub":"a","exp":{exp},"sub":"b"}}'.encode())
    si = (head + "." + body).encode()
    return si.decode() + "." + jwtutil.b64url(jwtutil.sign("HS256", si, keys.secret))


def test_every_bad_token_is_401_saying_why(hs_gw, keys):
    cases = _bad_tokens(keys)
    before = auth_errors(hs_gw)
    for name, (tok, why) in cases.items():
        for via in ("header", "query"):
            error, challenge = expect_401(hs_gw.port, tok, via)
            assert why in error, (name, via, error)
            assert 'error="invalid_token"' in challenge, (name, challenge)
    assert wf.wait_for(lambda: auth_errors(hs_gw) == before + 2 * len(cases))
    assert metric(hs_gw.metrics(), "websocket_connections_total") == 0


def test_ambiguous_or_non_bearer_credentials_are_401(hs_gw, keys):
    t = hs_token(keys)
    error, challenge = expect_401(hs_gw.port, t, "header", path="/ws?access_token=" + t)
    assert "both" in error and 'error="invalid_request"' in challenge
    error, _ = expect_401(hs_gw.port, headers=[("Authorization", "Basic dXNlcjpwYXNz")])
    assert "Bearer" in error
    error, _ = expect_401(hs_gw.port, path=f"/ws?access_token={t}&access_token={t}")
    assert "more than one" in error
    error, _ = expect_401(hs_gw.port, headers=[("Authorization", "Bearer " + t),
                                               ("Authorization", "Bearer " + t)])
    assert "more than one" in error
    error, _ = expect_401(hs_gw.port, headers=[("Authorization", "Bearer ")])
    assert "no token" in error


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_rs256_and_es256_tokens(gateway_factory, keys, alg):
    gw = gateway_factory(auth_config(keys, alg))
    private = keys.rsa_private if alg == "RS256" else keys.ec_private
    t = jwtutil.token(jwtutil.claims(subscribe=["ward/3/*"]), private, alg=alg)
    with connect(gw.port, t) as ws:
        assert ws.request({"type": "subscribe", "stream": "ward/3/alerts", "id": 1})["type"] == \
            "subscribed"
    # signed by another key of the same kind
    stranger = keys.other()
    if alg == "RS256":
        stranger.rsa()
        other = stranger.rsa_private
    else:
        stranger.ec()
        other = stranger.ec_private
    error, _ = expect_401(gw.port, jwtutil.token(jwtutil.claims(), other, alg=alg))
    assert "signature" in error


def test_hs256_signed_with_the_public_key_is_refused(gateway_factory, keys):
    # Algorithm confusion: the RSA public key is public; an attacker signs an
    # HS256 token with its PEM text as the HMAC secret. Even with HS256
    # listed beside RS256, an RSA key verifies RS256 only.
    gw = gateway_factory(auth_config(keys, "RS256", jwt_algorithms=["HS256", "RS256"]))
    with open(keys.rsa_public, "rb") as f:
        pem = f.read()
    forged = jwtutil.token(jwtutil.claims(subscribe=["patient/*"]), pem, alg="HS256")
    error, _ = expect_401(gw.port, forged)
    assert "algorithm" in error


def test_issuer_and_audience(gateway_factory, keys):
    gw = gateway_factory(auth_config(keys, jwt_issuer="https://auth.vitalstream.example",
                                     jwt_audience="wsgate"))
    ok = dict(iss="https://auth.vitalstream.example", aud=["dashboards", "wsgate"])
    connect(gw.port, hs_token(keys, **ok)).close_socket()
    connect(gw.port, hs_token(keys, iss=ok["iss"], aud="wsgate")).close_socket()
    error, _ = expect_401(gw.port, hs_token(keys, iss="https://evil.example", aud="wsgate"))
    assert "issuer" in error
    error, _ = expect_401(gw.port, hs_token(keys, aud="wsgate"))
    assert "issuer" in error
    error, _ = expect_401(gw.port, hs_token(keys, iss=ok["iss"], aud="other"))
    assert "audience" in error
    error, _ = expect_401(gw.port, hs_token(keys, iss=ok["iss"]))
    assert "audience" in error


# -- permissions --------------------------------------------------------------

def test_subscribe_and_publish_outside_the_grant_are_forbidden(hs_gw, keys):
    nurse = hs_token(keys, sub="nurse-1", subscribe=["patient/4711/*", "ward/3/alerts"])
    device = hs_token(keys, sub="bed-12", publish=["patient/4711/ecg"])
    forbidden0 = refused(hs_gw, "forbidden")
    with connect(hs_gw.port, nurse) as sub, connect(hs_gw.port, device) as pub:
        for i, stream in enumerate(["patient/4712/ecg", "patient/4711", "ward/3/alerts2",
                                    "patient/47110/ecg"]):
            err = sub.request({"type": "subscribe", "stream": stream, "id": {"n": i}})
            assert err["type"] == "error" and err["code"] == "forbidden", err
            assert err["id"] == {"n": i}
        assert sub.request({"type": "ping", "id": "still"})["id"] == "still"
        ok = sub.request({"type": "subscribe", "stream": "patient/4711/ecg", "id": 5})
        assert ok["type"] == "subscribed" and ok["seq"] == 0, ok
        # the nurse may not publish even where she may read
        err = sub.request({"type": "publish", "stream": "patient/4711/ecg", "data": 1, "id": 6})
        assert err["code"] == "forbidden" and err["id"] == 6, err
        # the device may publish its stream only
        err = pub.request({"type": "publish", "stream": "patient/4711/spo2", "data": 2, "id": 7})
        assert err["code"] == "forbidden", err
        err = pub.request({"type": "subscribe", "stream": "patient/4711/ecg", "id": 8})
        assert err["code"] == "forbidden", err
        ack = pub.request({"type": "publish", "stream": "patient/4711/ecg", "data": {"v": 3},
                           "id": 9})
        assert ack == {"type": "ack", "id": 9, "stream": "patient/4711/ecg", "seq": 1}, ack
        msg = sub.recv_message()
        # the refused publishes were delivered to nobody: seq 1 is the first
        assert msg["type"] == "message" and msg["seq"] == 1 and msg["data"] == {"v": 3}, msg
    assert wf.wait_for(lambda: refused(hs_gw, "forbidden") == forbidden0 + 7)


def test_token_without_streams_grants_nothing(hs_gw, keys):
    t = jwtutil.token({"sub": "x", "exp": int(time.time()) + 300}, keys.secret)
    with connect(hs_gw.port, t) as ws:
        assert ws.request({"type": "subscribe", "stream": "a", "id": 1})["code"] == "forbidden"
        assert ws.request({"type": "publish", "stream": "a", "data": 0, "id": 2})["code"] == \
            "forbidden"
        assert ws.request({"type": "ping", "id": 3})["type"] == "pong"


# -- expiry and refresh -------------------------------------------------------

def _close_after_exp(ws, exp):
    """(code, reason, time the close frame came); answers it."""
    code, reason = ws.expect_close(timeout=max(5.0, exp - time.time() + 3), expect_eof=False)
    at = time.time()
    ws.send(wf.close_frame(code))
    assert wf.wait_closed(ws.sock, ws.reader)
    return code, reason, at


def test_exp_passing_closes_1008(hs_gw, keys):
    exp = int(time.time()) + 2
    t = jwtutil.token(dict(jwtutil.claims(subscribe=["a"]), exp=exp), keys.secret)
    before = metric(hs_gw.metrics(), "websocket_disconnections_total", reason="protocol_error")
    with connect(hs_gw.port, t) as ws:
        assert ws.request({"type": "ping", "id": 1})["type"] == "pong"
        code, reason, at = _close_after_exp(ws, exp)
        assert code == 1008 and reason == b"token expired", (code, reason)
        assert at >= exp - 0.05, (at, exp)  # not before exp
        assert at <= exp + 2 * SLOW, (at, exp)
    assert wf.wait_for(lambda: metric(hs_gw.metrics(), "websocket_disconnections_total",
                                      reason="protocol_error") == before + 1)
    lines = wf.wait_for(lambda: [l for l in hs_gw.logs() if l.get("event") == "disconnect"
                                 and l.get("code") == 1008])
    assert lines and lines[0]["reason"] == "protocol_error"
    assert lines[0]["detail"] == "token expired"


def test_fresh_token_keeps_the_session(hs_gw, keys):
    exp = int(time.time()) + 2
    old = jwtutil.token(dict(jwtutil.claims(sub="dr-a", subscribe=["patient/9/*"]), exp=exp),
                        keys.secret)
    fresh_exp = int(time.time()) + 600
    fresh = jwtutil.token(dict(jwtutil.claims(sub="dr-a", subscribe=["patient/9/*", "x"]),
                               exp=fresh_exp), keys.secret)
    with connect(hs_gw.port, old) as ws:
        assert ws.request({"type": "subscribe", "stream": "patient/9/ecg", "id": 1})["type"] == \
            "subscribed"
        reply = ws.request({"type": "auth", "token": fresh, "id": "r1"})
        assert reply == {"type": "authenticated", "exp": fresh_exp, "id": "r1"}, reply
        time.sleep(max(0.0, exp - time.time()) + 1.0)
        assert ws.request({"type": "ping", "id": "after"})["id"] == "after"
        # the fresh grant applies: x is now allowed
        assert ws.request({"type": "subscribe", "stream": "x", "id": 2})["type"] == "subscribed"
        assert not ws.reader.buf


def test_fresh_token_for_another_subject_is_forbidden_and_old_one_stays(hs_gw, keys):
    exp = int(time.time()) + 3
    old = jwtutil.token(dict(jwtutil.claims(sub="dr-a", subscribe=["a"]), exp=exp), keys.secret)
    other = hs_token(keys, sub="dr-b", subscribe=["a", "b"])
    nosub = jwtutil.token({"exp": int(time.time()) + 600, "streams": {"subscribe": ["a"]}},
                          keys.secret)
    with connect(hs_gw.port, old) as ws:
        for i, t in enumerate([other, nosub]):
            err = ws.request({"type": "auth", "token": t, "id": i})
            assert err["type"] == "error" and err["code"] == "forbidden" and err["id"] == i, err
            assert "sub" in err["message"]
        # still the old grant: b not allowed
        assert ws.request({"type": "subscribe", "stream": "b", "id": 5})["code"] == "forbidden"
        # and the old exp: the session ends at it
        code, reason, _ = _close_after_exp(ws, exp)
        assert code == 1008 and reason == b"token expired"


def test_invalid_fresh_token_is_unauthorized_and_old_one_stays(hs_gw, keys):
    t = hs_token(keys, sub="dr-a", subscribe=["a"])
    expired = hs_token(keys, sub="dr-a", ttl=-5, subscribe=["a", "b"])
    other = keys.other()
    forged = jwtutil.token(jwtutil.claims(sub="dr-a", subscribe=["b"]), other.secret)
    unauthorized0 = refused(hs_gw, "unauthorized")
    with connect(hs_gw.port, t) as ws:
        for i, (tok, why) in enumerate([(expired, "expired"), (forged, "signature"),
                                        ("garbage", "well-formed"), ("", "no token")]):
            err = ws.request({"type": "auth", "token": tok, "id": i})
            assert err["type"] == "error" and err["code"] == "unauthorized", err
            assert err["id"] == i and why in err["message"], err
            if tok:
                assert tok not in err["message"]
        assert ws.request({"type": "auth", "id": 9})["code"] == "bad_request"
        assert ws.request({"type": "auth", "token": 5, "id": 10})["code"] == "bad_request"
        assert ws.request({"type": "subscribe", "stream": "b", "id": 11})["code"] == "forbidden"
        assert ws.request({"type": "subscribe", "stream": "a", "id": 12})["type"] == "subscribed"
    assert wf.wait_for(lambda: refused(hs_gw, "unauthorized") == unauthorized0 + 4)


def test_fresh_token_must_still_grant_current_subscriptions(hs_gw, keys):
    t = hs_token(keys, sub="dr-a", subscribe=["patient/1/*"])
    narrower = hs_token(keys, sub="dr-a", subscribe=["patient/2/*"])
    with connect(hs_gw.port, t) as ws:
        assert ws.request({"type": "subscribe", "stream": "patient/1/ecg", "id": 1})["type"] == \
            "subscribed"
        err = ws.request({"type": "auth", "token": narrower, "id": 2})
        assert err["code"] == "forbidden" and "unsubscribe" in err["message"], err
        assert ws.request({"type": "unsubscribe", "stream": "patient/1/ecg", "id": 3})["type"] == \
            "unsubscribed"
        assert ws.request({"type": "auth", "token": narrower, "id": 4})["type"] == "authenticated"
        assert ws.request({"type": "subscribe", "stream": "patient/1/ecg", "id": 5})["code"] == \
            "forbidden"


# -- reload ---------------------------------------------------------------------

def test_key_rotation_on_sighup(hs_gw, keys):
    gw = hs_gw
    old_token = hs_token(keys, subscribe=["a"])
    with connect(gw.port, old_token) as session:
        new_secret = jwtutil.b64url(os.urandom(48)).encode()
        with open(keys.secret_path, "wb") as f:
            f.write(new_secret)
        ok0 = reloads(gw, "success")
        gw.signal(signal.SIGHUP)
        wait_reload(gw, "success", ok0)
        # new handshakes: only the new key
        error, _ = expect_401(gw.port, hs_token(keys, subscribe=["a"]))
        assert "signature" in error
        new_token = jwtutil.token(jwtutil.claims(subscribe=["a"]), new_secret)
        for _ in range(4):  # both workers
            connect(gw.port, new_token).close_socket()
        # the session opened with the old key goes on until its exp
        assert session.request({"type": "subscribe", "stream": "a", "id": 1})["type"] == \
            "subscribed"
        # a key that does not load is a failed reload: the current key stays
        with open(keys.secret_path, "wb") as f:
            f.write(b"short")
        fail0 = reloads(gw, "failure")
        gw.signal(signal.SIGHUP)
        assert wf.wait_for(lambda: reloads(gw, "failure") == fail0 + 1, timeout=5)
        line = wf.wait_for(lambda: [l for l in gw.logs() if l.get("event") == "reload"
                                    and l.get("result") == "failure"])
        assert "jwt_key_file" in line[-1]["error"], line
        time.sleep(0.5)
        for _ in range(4):
            connect(gw.port, new_token).close_socket()
        assert session.request({"type": "ping", "id": 2})["id"] == 2
    stderr = gw.stderr()
    assert new_secret.decode() not in stderr and keys.secret.decode() not in stderr


def test_reload_turning_auth_on_closes_unauthenticated_sessions(gateway_factory, keys):
    gw = gateway_factory({"workers": 2})
    with wf.open_ws(gw.port) as ws:
        assert ws.request({"type": "subscribe", "stream": "patient/1/ecg", "id": 1})["type"] == \
            "subscribed"
        ok0 = reloads(gw, "success")
        reload_with(gw, **{k: v for k, v in auth_config(keys).items() if k != "workers"})
        assert wf.wait_for(lambda: reloads(gw, "success") == ok0 + 1, timeout=5), gw.stderr()
        code, reason = ws.expect_close(timeout=5)
        assert code == 1008 and reason == b"authentication required", (code, reason)
    expect_401(gw.port)
    connect(gw.port, hs_token(keys)).close_socket()
    # and off again: no token needed, auth is a bad_request again
    ok1 = reloads(gw, "success")
    reload_with(gw, auth_mode="none")
    wait_reload(gw, "success", ok1)
    with wf.open_ws(gw.port) as ws:
        assert ws.request({"type": "auth", "token": "x", "id": 1})["code"] == "bad_request"


def test_config_errors_name_jwt_key_file(tmp_path, keys):
    cases = [
        ('auth_mode: "jwt"\n', "jwt_key_file", "required"),
        ('auth_mode: "jwt"\njwt_key_file: "nope.key"\n', "jwt_key_file", "nope.key"),
        (f'auth_mode: "jwt"\njwt_algorithms: ["ES256"]\njwt_key_file: "{keys.rsa()}"\n',
         "jwt_key_file", "RS256"),
        (f'auth_mode: "jwt"\njwt_key_file: "{keys.rsa_private}"\njwt_algorithms: ["RS256"]\n',
         "jwt_key_file", "public"),
        ('jwt_algorithms: ["HS512"]\n', "jwt_algorithms", "allowed"),
    ]
    for i, (text, key, what) in enumerate(cases):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        r = subprocess.run([WSGATE_BIN, "-t", "-c", str(path)], capture_output=True, text=True,
                           timeout=30 * SLOW)
        assert r.returncode == 1, (text, r.stdout, r.stderr)
        assert f"key '{key}'" in r.stderr and what in r.stderr, (text, r.stderr)
        assert keys.secret.decode() not in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(f'auth_mode: "jwt"\njwt_algorithms: ["ES256"]\njwt_key_file: "{keys.ec()}"\n')
    r = subprocess.run([WSGATE_BIN, "-t", "-c", str(good)], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 0, r.stderr


# -- logs -------------------------------------------------------------------------

def test_tokens_secrets_and_payloads_never_logged(gateway_factory, keys):
    gw = gateway_factory(auth_config(keys, log_level="debug"))
    marker = "PAYLOAD-" + os.urandom(6).hex()
    good = hs_token(keys, sub="dr-log", subscribe=["p/*"], publish=["p/1"])
    bad = jwtutil.token(jwtutil.claims(sub="dr-log"), b"x" * 40)
    expired = hs_token(keys, ttl=-1)
    expect_401(gw.port, bad)
    expect_401(gw.port, expired, "query")
    expect_401(gw.port, "not-a-token-" + marker)
    with connect(gw.port, good) as ws:
        ws.request({"type": "subscribe", "stream": "p/1", "id": 1})
        ws.request({"type": "publish", "stream": "p/1", "data": {"secret": marker}, "id": 2})
        ws.recv_message()
        ws.request({"type": "publish", "stream": "q/1", "data": {"secret": marker}, "id": 3})
        ws.request({"type": "auth", "token": bad, "id": 4})
        ws.request({"type": "auth", "token": good, "id": 5})
        ws.request({"type": "bogus", "data": marker})
        ws.send(wf.close_frame(1000))
        ws.expect_close()
    assert wf.wait_for(lambda: any(l.get("event") == "disconnect" for l in gw.logs()))
    gw.stop()
    err = gw.stderr()
    assert "forbidden" in err and "auth" in err  # the refusals are logged...
    for needle in [good, bad, expired, good.split(".")[2], bad.split(".")[2], marker,
                   keys.secret.decode(), good.split(".")[1]]:
        assert needle not in err, f"{needle[:20]}... appears in the logs"
