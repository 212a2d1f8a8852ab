"""JSON Web Tokens for the auth tests, made independently of the gateway:
HS256 with Python's hmac, RS256 and ES256 signed by the `openssl` CLI with
keys generated at test time (ES256: the DER signature openssl writes is
converted to the raw r||s that JWS wants, RFC 7518 3.4).

No PyJWT: the point is an implementation that shares nothing with libjwt.
"""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def _der_len(der, i):
    n = der[i]
    if n < 0x80:
        return n, i + 1
    k = n & 0x7F
    return int.from_bytes(der[i + 1:i + 1 + k], "big"), i + 1 + k


def ecdsa_der_to_raw(der, size=32):
    """DER SEQUENCE { INTEGER r, INTEGER s } -> r||s, each `size` bytes."""
    assert der[0] == 0x30, der[:4]
    _, i = _der_len(der, 1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02, der
        n, i = _der_len(der, i + 1)
        value = int.from_bytes(der[i:i + n], "big")
        i += n
        out += value.to_bytes(size, "big")
    return out


def openssl(*args, data=None):
    r = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, (args, r.stderr.decode(errors="replace"))
    return r.stdout


class Keys:
    """Keys for one test, in `directory`: an HMAC secret, an RSA pair and
    an EC P-256 pair (PEM). The public halves are what the gateway gets."""

    def __init__(self, directory):
        self.dir = str(directory)
        self.secret = b64url(os.urandom(48)).encode()
        self.secret_path = self.path("hmac.secret")
        with open(self.secret_path, "wb") as f:
            f.write(self.secret + b"\n")  # an editor's newline: the gateway strips it
        self.rsa_private = self.path("rsa.pem")
        self.rsa_public = self.path("rsa.pub.pem")
        self.ec_private = self.path("ec.pem")
        self.ec_public = self.path("ec.pub.pem")
        self._rsa = False
        self._ec = False

    def path(self, name):
        return os.path.join(self.dir, name)

    def other(self):
        """Another, unrelated set of keys (in a subfolder)."""
        self._others = getattr(self, "_others", 0) + 1
        d = self.path(f"other{self._others}")
        os.makedirs(d)
        return Keys(d)

    def rsa(self):
        if not self._rsa:
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", self.rsa_private)
            openssl("pkey", "-in", self.rsa_private, "-pubout", "-out", self.rsa_public)
            self._rsa = True
        return self.rsa_public

    def ec(self):
        if not self._ec:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", self.ec_private)
            openssl("pkey", "-in", self.ec_private, "-pubout", "-out", self.ec_public)
            self._ec = True
        return self.ec_public


def sign(alg, signing_input, key):
    """Signature bytes for `signing_input` (bytes). key: the HMAC secret
    (bytes) for HS256, a PEM private key path for RS256/ES256."""
    if alg == "HS256":
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if alg in ("RS256", "ES256"):
        der = openssl("dgst", "-sha256", "-sign", key, data=signing_input)
        return der if alg == "RS256" else ecdsa_der_to_raw(der)
    if alg == "none":
        return b""
    raise ValueError(alg)


def token(claims, key, alg="HS256", header=None):
    """A compact JWS: base64url(header).base64url(claims).base64url(sig)."""
    head = {"alg": alg, "typ": "JWT"}
    head.update(header or {})
    signing_input = (b64url_json(head) + "." + b64url_json(claims)).encode()
    return signing_input.decode() + "." + b64url(sign(alg, signing_input, key))


def claims(sub="nurse-1", ttl=300, subscribe=(), publish=(), **extra):
    """Typical claims: exp `ttl` seconds from now (None: no exp)."""
    c = {"sub": sub, "iat": int(time.time())}
    if ttl is not None:
        c["exp"] = int(time.time()) + ttl
    c["streams"] = {"subscribe": list(subscribe), "publish": list(publish)}
    c.update(extra)
    return c
