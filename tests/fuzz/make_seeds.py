#!/usr/bin/python3
"""make_seeds.py — generate the seed corpora of the libFuzzer targets.

    /usr/bin/python3 tests/fuzz/make_seeds.py      # (re)writes tests/fuzz/corpus/

Every seed is built here from readable pieces (request heads, config texts,
JSON messages, WebSocket frames), so the binary files under corpus/ can be
reviewed by reading this script. Each corpus directory is rewritten whole:
stale seeds disappear. Regression seeds (inputs that once found a bug) are
listed here too, with what they found.

fuzz_session input format (see fuzz_session.c): a sequence of records,
    N (1..255) + N bytes   one write of those bytes by the client
    0x00 + K               the worker's sweep at now + 2*K seconds
after the harness's own valid upgrade head. fuzz_inflate reads the same
format after a head that offers permessage-deflate.
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# ---------------------------------------------------------------- HTTP heads

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key


def head(lines, method="GET", target="/ws", version="HTTP/1.1", eol="\r\n"):
    return (f"{method} {target} {version}{eol}" + "".join(l + eol for l in lines) + eol).encode()


UPGRADE = ["Host: localhost:8003", "Upgrade: websocket", "Connection: Upgrade",
           f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]


def without(lines, prefix):
    return [l for l in lines if not l.lower().startswith(prefix.lower())]


def too_many_headers_bad_name():
    """64 headers, then a 65th line without a colon, padded so that the
    fuzzer's split point (first byte * size / 256) falls inside that name:
    whole it is a 400, split it is a 431 (a harness false positive once)."""
    start = "GET /ws HTTP/1.1\r\n" + "".join(f"X-H{i}: {i}\r\n" for i in range(64))
    name = "X-Header-Sixty-Five-Without-Colon\r\n\r\n"
    at = len(start) + 10
    pad = 0
    while ord("G") * (len(start) + len(name) + pad) // 256 < at:
        pad += 1
    return (start + name + "z" * pad).encode()


def http_seeds():
    s = {}
    s["upgrade-valid"] = head(UPGRADE)
    s["upgrade-subprotocol"] = head(UPGRADE + ["Sec-WebSocket-Protocol: chat, vitalstream.v1"])
    s["upgrade-other-subprotocol"] = head(UPGRADE + ["Sec-WebSocket-Protocol: chat"])
    s["upgrade-keepalive-upgrade"] = head(without(UPGRADE, "Connection") +
                                          ["Connection: keep-alive, Upgrade"])
    s["upgrade-lowercase"] = head([l.lower() if not l.startswith("Sec-WebSocket-Key") else
                                   "sec-websocket-key: " + KEY for l in UPGRADE])
    s["upgrade-mixed-case-tokens"] = head(["Host: x", "UPGRADE: WebSocket", "connection: UpGrAdE",
                                           f"SEC-WEBSOCKET-KEY: {KEY}", "Sec-WebSocket-Version: 13"])
    s["upgrade-query"] = head(UPGRADE, target="/ws?access_token=abc.def.ghi&x=%20")
    s["upgrade-absolute-uri"] = head(UPGRADE, target="http://localhost:8003/ws")
    s["upgrade-origin-auth"] = head(UPGRADE + ["Origin: https://dash.example",
                                               "Authorization: Bearer abc.def.ghi"])
    s["upgrade-then-frame"] = head(UPGRADE) + frame(0x1, b'{"type":"ping"}')
    s["upgrade-no-key"] = head(without(UPGRADE, "Sec-WebSocket-Key"))
    s["upgrade-no-version"] = head(without(UPGRADE, "Sec-WebSocket-Version"))
    s["upgrade-version-8"] = head(without(UPGRADE, "Sec-WebSocket-Version") +
                                  ["Sec-WebSocket-Version: 8"])
    s["upgrade-short-key"] = head(without(UPGRADE, "Sec-WebSocket-Key") +
                                  ["Sec-WebSocket-Key: c2hvcnQ="])
    s["upgrade-bad-base64-key"] = head(without(UPGRADE, "Sec-WebSocket-Key") +
                                       ["Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!=="])
    s["upgrade-two-keys"] = head(UPGRADE + [f"Sec-WebSocket-Key: {KEY}"])
    s["upgrade-http10"] = head(UPGRADE, version="HTTP/1.0")
    s["upgrade-head-method"] = head(UPGRADE, method="HEAD")
    s["upgrade-post"] = head(UPGRADE + ["Content-Length: 2"], method="POST") + b"{}"
    s["upgrade-lf-only"] = head(UPGRADE, eol="\n")
    s["upgrade-folded-header"] = head(["Host: x", "Upgrade: websocket", "Connection:",
                                       " Upgrade", f"Sec-WebSocket-Key: {KEY}",
                                       "Sec-WebSocket-Version: 13"])
    s["get-ws-plain"] = head(["Host: x"])
    s["get-health"] = head(["Host: x"], target="/health")
    s["head-health-detailed"] = head(["Host: x"], method="HEAD", target="/health/detailed")
    s["get-metrics"] = head(["Host: x", "Accept: text/plain"], target="/metrics")
    s["get-404-query"] = head(["Host: x"], target="/nope?a=b#frag")
    s["get-view-if-none-match"] = head(["Host: x", 'If-None-Match: "x", W/"0123456789abcdef", *'],
                                       target="/view/wall.js")
    s["head-view-query"] = head(["Host: x", "If-None-Match: W/"], method="HEAD",
                                target="/view/?streams=patient/1/ecg")
    s["get-view-traversal"] = head(["Host: x"], target="/view/%2e%2e/..%2f/etc/passwd")
    s["options-star"] = head(["Host: x"], method="OPTIONS", target="*")
    s["connect"] = head(["Host: x:443"], method="CONNECT", target="x:443")
    s["pipelined"] = head(["Host: x"], target="/health") + head(["Host: x"], target="/metrics")
    s["chunked-body"] = (head(["Host: x", "Transfer-Encoding: chunked"], method="POST") +
                         b"2\r\nhi\r\n0\r\n\r\n")
    s["empty-header-value"] = head(["Host:", "Upgrade:", "X-Empty: "])
    s["too-many-headers"] = head([f"X-H{i}: {i}" for i in range(70)])
    s["head-over-8k"] = head(["Host: x", "X-Big: " + "a" * 9000])
    s["too-many-headers-then-bad-name"] = too_many_headers_bad_name()
    s["incomplete-head"] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: webs"
    s["only-crlf"] = b"\r\n\r\n"
    s["garbage"] = bytes(range(256))
    s["tls-client-hello"] = bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32
    s["invalid-method"] = b"G\x00T /ws HTTP/1.1\r\n\r\n"
    s["space-in-header-name"] = head(["Host : x", "Up grade: websocket"])
    # issue 19: a request line without version is 400, HTTP/2 505
    s["get-health-no-version"] = b"GET /health\r\n\r\n"
    s["get-health-no-version-headers"] = b"GET /health\r\nHost: x\r\n\r\n"
    s["get-health-http2"] = head(["Host: x"], target="/health", version="HTTP/2.0")
    return s

# -------------------------------------------------------------------- config

ETC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "etc")


def config_seeds():
    s = {}
    with open(os.path.join(ETC, "websocket.yaml"), "rb") as f:
        ws = f.read()
    with open(os.path.join(ETC, "connection_pool.yaml"), "rb") as f:
        pool = f.read()
    s["etc-websocket"] = ws
    s["etc-connection-pool"] = pool
    s["runbook-patch"] = (b"max_connections: 10000\nheartbeat_interval: 30\n"
                          b"connection_timeout: 300\nmax_message_size: 1048576\n")
    s["empty"] = b""
    s["comments-only"] = b"# nothing here\n// nor here\n/* nor here */\n"
    s["truncated-mid-line"] = ws[:len(ws) // 2]
    s["unterminated-string"] = ws.replace(b'"production"', b'"production')
    s["unquoted-string"] = ws.replace(b'"production"', b"production")
    s["crlf"] = ws.replace(b"\n", b"\r\n")
    s["tabs"] = ws.replace(b": ", b":\t")
    s["duplicate-key"] = ws + b"port: 8005\n"
    s["libconfig-style"] = b'port = 8003;\nenvironment = "staging";\nworkers = 4;\n'
    s["unknown-key"] = b"port: 8003\nmax_conections: 10\n"
    s["out-of-range"] = b"port: 70000\n"
    s["negative"] = b"workers: -1\n"
    s["min-max"] = b"max_message_size: 16\nmax_send_buffer: 1073741824\nworkers: 64\n"
    s["int64"] = b"max_connections: 10000L\n"
    s["hex"] = b"port: 0x1F43\n"
    s["huge-number"] = b"max_connections: 99999999999999999999999\n"
    s["float"] = b"heartbeat_interval: 30.5\n"
    s["bool"] = b"workers: true\n"
    s["string-for-int"] = b'port: "8003"\n'
    s["int-for-string"] = b"environment: 5\n"
    s["bad-choice"] = b'log_format: "xml"\nlog_level: "trace"\n'
    s["bad-environment"] = b'environment: "prod uction"\n'
    s["long-environment"] = b'environment: "' + b"e" * 100 + b'"\n'
    s["empty-string"] = b'bind_address: ""\n'
    s["escapes"] = b'environment: "a\\"b\\\\c\\x41"\n'
    s["adjacent-strings"] = b'environment: "prod" "uction"\n'
    s["group"] = b"limits: { port: 1; };\n"
    s["list"] = b'port: [1, 2, "x"]\n'
    s["array"] = b"port: [1, 2, 3]\n"
    s["nested"] = b"a: ((((((((((1))))))))));\n"
    s["pool-key-in-main"] = b"max_pool_size: 10\n"
    s["main-key-in-pool"] = pool + b"port: 8003\n"
    s["missing-value"] = b"port:\nworkers: 2\n"
    s["include-missing"] = b'@include "/nonexistent/wsgate-fuzz.yaml"\n'
    s["nul-byte"] = b"port: 8003\n\x00workers: 2\n"
    s["stray-string"] = b'"a"b\n'  # leaks in libconfig 1.5 (hyperrealm/libconfig#142)
    s["brokers-mixed"] = (b'broker: ["redis-sentinel://:pw@s1:26379,s2,10.0.0.3:26400/ecg/2", '
                          b'"redis://:pw@h:6380/1"]\nbroker_replicas_ack: 1\nbroker_timeout: 2\n')
    s["broker-sentinel-bad"] = (b'broker: ["redis-sentinel://s1,,s2/m", "redis-sentinel://s1/", '
                                b'"redis-sentinel://a,b,c,d,e,f,g,h,i/m/16"]\n')
    return s

# ---------------------------------------------------------------------- JSON


def router_seeds():
    s = {}
    s["ping"] = b'{"type":"ping"}'
    s["ping-id-int"] = b'{"type":"ping","id":42}'
    s["ping-id-string"] = b'{"type":"ping","id":"req-1"}'
    s["ping-id-null"] = b'{"type":"ping","id":null}'
    s["ping-id-object"] = b'{"type":"ping","id":{"a":[1,2,{"b":null}],"c":"\\u00e9"}}'
    s["ping-id-real"] = b'{"id":1.5e-3,"type":"ping"}'
    s["ping-id-negative-zero"] = b'{"type":"ping","id":-0.0}'
    s["ping-id-bool"] = b'{"type":"ping","id":true}'
    s["ping-id-big-int"] = b'{"type":"ping","id":9223372036854775807}'
    s["ping-id-too-big"] = b'{"type":"ping","id":92233720368547758070}'
    # issue 19: ids come back as their bytes
    s["ping-id-30-digits"] = b'{"type":"ping","id":123456789012345678901234567890}'
    s["ping-id-spaced-object"] = b'{ "id" : { "b" : [ 1 , 2.50 ] , "a" : "\\u00e9" } , "type":"ping"}'
    s["ping-id-float-spelling"] = b'{"type":"ping","id":1E+2}'
    s["ping-whitespace"] = b' \t\r\n{ "type" : "ping" }\n '
    s["subscribe"] = b'{"type":"subscribe","stream":"patient/4711/ecg","since":10,"id":1}'
    s["subscribe-epoch"] = b'{"type":"subscribe","stream":"a","since":0,"epoch":"x1y2","id":2}'
    s["unsubscribe"] = b'{"type":"unsubscribe","stream":"patient/4711/ecg","id":3}'
    s["publish"] = b'{"type":"publish","stream":"patient/4711/ecg","data":{"hr":72,"v":[0.1,0.2]},"id":4}'
    s["publish-no-id"] = b'{"type":"publish","stream":"s","data":[1,2,3]}'
    s["auth"] = b'{"type":"auth","token":"abc.def.ghi","id":5}'
    s["unknown-type"] = b'{"type":"hello","id":6}'
    s["type-number"] = b'{"type":1,"id":7}'
    s["type-missing"] = b'{"id":8}'
    s["type-null"] = b'{"type":null}'
    s["duplicate-keys"] = b'{"type":"ping","type":"ping"}'
    s["array-root"] = b'[{"type":"ping"}]'
    s["string-root"] = b'"ping"'
    s["number-root"] = b"42"
    s["null-root"] = b"null"
    s["empty"] = b""
    s["not-json"] = b"hello"
    s["trailing-garbage"] = b'{"type":"ping"} x'
    s["two-objects"] = b'{"type":"ping"}{"type":"ping"}'
    s["unterminated"] = b'{"type":"ping"'
    s["invalid-utf8"] = b'{"type":"ping","id":"\xc3\x28"}'
    s["escaped-unicode"] = b'{"type":"p\\u0069ng","id":"\\ud83d\\ude00"}'
    s["lone-surrogate"] = b'{"type":"ping","id":"\\ud800"}'
    s["escaped-nul"] = b'{"type":"ping\\u0000x"}'
    s["bom"] = b'\xef\xbb\xbf{"type":"ping"}'
    s["deep-nesting"] = b'{"type":"ping","id":' + b"[" * 300 + b"]" * 300 + b"}"
    s["long-type"] = b'{"type":"' + b"x" * 300 + b'","id":9}'
    s["long-stream-name"] = b'{"type":"subscribe","stream":"' + b"s" * 200 + b'"}'
    s["subscribe-bad-name"] = b'{"type":"subscribe","stream":"a b","id":10}'
    s["subscribe-again"] = b'{"type":"subscribe","stream":"s","id":11}'  # the harness's stream
    s["subscribe-since-negative"] = b'{"type":"subscribe","stream":"t","since":-1}'
    s["subscribe-epoch-number"] = b'{"type":"subscribe","stream":"t","epoch":5}'
    s["unsubscribe-s"] = b'{"type":"unsubscribe","stream":"s","id":12}'
    s["unsubscribe-not-subscribed"] = b'{"type":"unsubscribe","stream":"t","id":13}'
    # Publishes to "s", which the harness subscribed to: the message must
    # carry `data` exactly (router_raw_member cuts it from the raw text).
    s["publish-s"] = b'{"type":"publish","stream":"s","data":{"hr":72},"id":14}'
    s["publish-s-no-id"] = b'{"type":"publish","stream":"s","data":[1,2,3]}'
    s["publish-s-data-first"] = b'{"data" : {"a":"}{\\"]["} ,"stream":"s","type":"publish"}'
    s["publish-s-escaped-key"] = b'{"type":"publish","stream":"s","d\\u0061ta":"x","id":15}'
    s["publish-s-number"] = b'{"type":"publish","stream":"s","data":-1.5e+3 ,"id":16}'
    s["publish-s-string-escapes"] = (b'{"type":"publish","stream":"s","data":"a\\"b\\\\c\\u00e9\\n",'
                                     b'"id":17}')
    s["publish-s-whitespace"] = b'{ "type" : "publish" ,\r\n "stream":"s",\t"data"\n:\n[ ]\n}'
    s["publish-s-null-data"] = b'{"type":"publish","stream":"s","data":null,"id":18}'
    s["publish-no-data"] = b'{"type":"publish","stream":"s","id":19}'
    s["publish-big-data"] = b'{"type":"publish","stream":"s","data":"' + b"d" * 9000 + b'"}'
    # yajl (the request validator) is lax where RFC 8259 is not: these once
    # reached subscribers as text their parsers refuse.
    s["form-feed-in-id"] = b'{"type":"ping","id":{\x0c"a":[1,2,{"b":null}],"c":"\\u00e9"}}'
    s["vertical-tab-in-data"] = b'{"type":"publish","stream":"s","data":[1,\x0b2],"id":20}'
    s["lone-surrogate-in-data"] = b'{"type":"publish","stream":"s","data":{"k":"x\\udc00"},"id":21}'
    s["data-beyond-double"] = b'{"type":"publish","stream":"s","data":1e400,"id":22}'
    s["trailing-open-string"] = b'{"type":"unsubscribe","stream":"s","id":6}":6}'
    s["data-repeated-names"] = b'{"type":"publish","stream":"s","data":{"a":1,"a":2},"id":23}'
    return s

# ------------------------------------------------------------ WebSocket frames

MASK = bytes.fromhex("37fa213d")  # RFC 6455 §5.7's example key


def frame(opcode, payload=b"", fin=True, masked=True, rsv=0, length=None, mask=MASK):
    """One client frame; `length` overrides the encoded length (lies)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if not masked:
        return hdr + payload
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(s, **kw):
    return frame(0x1, s if isinstance(s, bytes) else s.encode(), **kw)


def close(code=None, reason=b""):
    return frame(0x8, b"" if code is None else struct.pack(">H", code) + reason)


def chunks(data, size=255):
    """Records writing `data` in writes of `size` bytes."""
    out = b""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += bytes([len(piece)]) + piece
    return out


def sweep(seconds):
    return bytes([0, min(255, (seconds + 1) // 2)])


PING_MSG = b'{"type":"ping","id":1}'


def session_seeds():
    s = {}
    s["ping-message"] = chunks(text(PING_MSG))
    s["ping-message-1-byte-writes"] = chunks(text(PING_MSG), 1)
    s["two-messages-one-write"] = chunks(text(PING_MSG) + text(b'{"type":"hello"}'))
    s["message-then-close"] = chunks(text(PING_MSG) + close(1000))
    s["fragmented-text"] = chunks(text(b'{"type":', fin=False) + frame(0x0, b'"ping"', fin=False) +
                                  frame(0x0, b',"id":"f"}'))
    s["fragmented-ping-between"] = chunks(text(b'{"type":', fin=False) + frame(0x9, b"hb") +
                                          frame(0x0, b'"ping"}'))
    s["utf8-split-across-fragments"] = chunks(text(b'{"type":"ping","id":"\xe2\x82', fin=False) +
                                              frame(0x0, b'\xac"}'))
    s["utf8-4byte"] = chunks(text('{"type":"ping","id":"\U0001F493"}'))
    s["bad-request"] = chunks(text(b"not json") + text(b"[]") + text(b'{"type":"subscribe"}'))
    s["ping-frame"] = chunks(frame(0x9, b"are you there"))
    s["ping-frame-125"] = chunks(frame(0x9, b"p" * 125))
    s["pong-frame"] = chunks(frame(0xA, b"unsolicited"))
    s["close-1000"] = chunks(close(1000))
    s["close-1001-reason"] = chunks(close(1001, b"going away"))
    s["close-no-code"] = chunks(close())
    s["close-1-byte"] = chunks(frame(0x8, b"\x03"))
    s["close-code-999"] = chunks(close(999))
    s["close-code-1005"] = chunks(close(1005))
    s["close-code-1006"] = chunks(close(1006))
    s["close-code-2999"] = chunks(close(2999))
    s["close-code-4000"] = chunks(close(4000, b"app"))
    s["close-reason-invalid-utf8"] = chunks(close(1000, b"\xff\xfe"))
    s["close-then-text"] = chunks(close(1000) + text(PING_MSG))
    s["unmasked-text"] = chunks(text(PING_MSG, masked=False))
    s["rsv1-text"] = chunks(text(PING_MSG, rsv=4))
    s["rsv3-ping"] = chunks(frame(0x9, b"x", rsv=1))
    s["opcode-3"] = chunks(frame(0x3, b"x"))
    s["opcode-11"] = chunks(frame(0xB, b"x"))
    s["continuation-without-start"] = chunks(frame(0x0, b"x"))
    s["text-during-fragments"] = chunks(text(b"{", fin=False) + text(b"}"))
    s["control-126-bytes"] = chunks(frame(0x9, b"p" * 126))
    s["fragmented-ping"] = chunks(frame(0x9, b"a", fin=False) + frame(0x0, b"b"))
    s["fragmented-close"] = chunks(frame(0x8, b"\x03\xe8", fin=False))
    s["binary"] = chunks(frame(0x2, b"\x00\x01\x02"))
    s["binary-huge-header"] = chunks(frame(0x2, b"", length=1 << 40)[:14])
    s["invalid-utf8"] = chunks(text(b'{"type":"ping","id":"\xc3\x28"}'))
    s["utf8-overlong"] = chunks(text(b'{"type":"\xc0\xaf"}'))
    s["utf8-surrogate"] = chunks(text(b'{"type":"\xed\xa0\x80"}'))
    s["utf8-above-10ffff"] = chunks(text(b'{"type":"\xf4\x90\x80\x80"}'))
    s["utf8-truncated-at-end"] = chunks(text(b'{"type":"ping"}\xe2\x82'))
    s["utf8-invalid-in-last-fragment"] = chunks(text(b'{"type":"ping",', fin=False) +
                                                frame(0x0, b'"id":"\xff"}'))
    s["too-large-header"] = chunks(text(b"", length=2000)[:8])
    s["too-large-64bit"] = chunks(text(b"", length=1 << 62)[:14])
    s["too-large-fragments"] = chunks(text(b"[" + b" " * 600, fin=False) +
                                      frame(0x0, b" " * 600 + b"]"))
    s["exactly-max-message"] = chunks(text(b'{"type":"ping","id":"' + b"x" * (1024 - 24) + b'"}'))
    # Length 2 in the 16-bit form: not the minimal encoding.
    s["length-126-small"] = chunks(bytes([0x81, 0x80 | 126, 0, 2]) + MASK +
                                   bytes(b ^ MASK[i] for i, b in enumerate(b"{}")))
    s["zero-mask"] = chunks(text(PING_MSG, mask=b"\x00\x00\x00\x00"))
    s["empty-text"] = chunks(text(b""))
    s["heartbeat-then-pong"] = chunks(text(PING_MSG)) + sweep(31) + chunks(frame(0xA, b""))
    s["idle-timeout"] = chunks(text(PING_MSG)) + sweep(301)
    s["idle-timeout-then-close-reply"] = chunks(text(PING_MSG)) + sweep(301) + chunks(close(1000))
    s["close-wait-expires"] = chunks(text(PING_MSG)) + sweep(301) + sweep(310)
    s["handshake-timeout"] = sweep(11) + chunks(text(PING_MSG))
    s["half-frame-then-eof"] = chunks(text(PING_MSG)[:5])
    # Streams (the fake segment holds 4 streams, history 8 messages).
    sub = b'{"type":"subscribe","stream":"ward/1","id":"s1"}'
    pub = b'{"type":"publish","stream":"ward/1","data":{"hr":%d},"id":%d}'
    s["stream-subscribe-publish"] = chunks(text(sub) + text(pub % (70, 1)) +
                                           text(b'{"type":"unsubscribe","stream":"ward/1"}'))
    s["stream-publish-then-resume-gap"] = chunks(
        b"".join(text(pub % (60 + i, i)) for i in range(12)) +
        text(b'{"type":"subscribe","stream":"ward/1","since":1,"id":"r"}'))
    s["stream-resume-other-epoch"] = chunks(
        text(pub % (1, 1)) +
        text(b'{"type":"subscribe","stream":"ward/1","since":0,"epoch":"zzzz","id":"e"}'))
    s["stream-max-streams"] = chunks(b"".join(
        text(b'{"type":"publish","stream":"p/%d","data":%d,"id":%d}' % (i, i, i))
        for i in range(6)))
    s["stream-subscribe-twice"] = chunks(text(sub) + text(sub))
    # Regression: the fan-out of this publish went out after the server's
    # reply to the client's close (state stayed CONN_WS once both closes
    # were exchanged). Fixed in session_after_io.
    s["stream-subscribe-then-close"] = chunks(text(sub) + text(pub % (1, 2)) + close(1000))
    s["stream-reclaimed-after-ttl"] = (chunks(text(pub % (1, 1))) + sweep(400) +
                                       chunks(text(sub)))
    s["stream-fragmented-publish"] = chunks(text(sub) +
                                            text(b'{"type":"publish","stream":"ward/1",', fin=False) +
                                            frame(0x0, b'"data":"\xe2\x82\xac"}'), 7)
    # Regression: a protocol error after our own timeout close made the
    # server send a second close frame (1001 "timeout" then 1002). Fixed in
    # session_protocol_error.
    s["regress-second-close-after-timeout"] = bytes.fromhex("010a00fefe0a")
    return s


def deflated(data, wbits=15, final=False):
    """A client's compressed message (RFC 7692 7.2.1): raw deflate, sync
    flush and its 4-byte tail removed; or ending in a final block."""
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data)
    if final:
        return out + c.flush(zlib.Z_FINISH)
    out += c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def ztext(data, **kw):
    return text(deflated(data), rsv=4, **kw)


def inflate_seeds():
    """fuzz_inflate: permessage-deflate negotiated (server window 9),
    max_message_size 1024, every fan-out message compressed."""
    s = {}
    sub = b'{"type":"subscribe","stream":"ward/1","id":"s1"}'
    pub = b'{"type":"publish","stream":"ward/1","data":%s,"id":%d}'
    ecg = b'{"leads":{"I":[0.12,0.15,0.9,1.21,0.3,0.1,0.11,0.12,0.13,0.12],' \
          b'"II":[0.2,0.22,1.1,1.4,0.4,0.2,0.19,0.2,0.21,0.2]}}'
    s["compressed-ping"] = chunks(ztext(PING_MSG))
    s["compressed-ping-1-byte-writes"] = chunks(ztext(PING_MSG), 1)
    s["compressed-final-block"] = chunks(text(deflated(PING_MSG, final=True), rsv=4))
    s["compressed-window-9"] = chunks(text(deflated(PING_MSG * 3, wbits=9), rsv=4))
    s["compressed-empty"] = chunks(text(b"\x00", rsv=4) + text(b"", rsv=4))
    s["plain-and-compressed"] = chunks(text(PING_MSG) + ztext(PING_MSG) + text(PING_MSG))
    body = deflated(pub % (ecg, 1))
    s["compressed-fragmented-publish"] = chunks(
        text(sub) + frame(0x1, body[:10], fin=False, rsv=4) + frame(0x0, body[10:40], fin=False) +
        frame(0x9, b"hb") + frame(0x0, body[40:]))
    s["stream-fanout-compressed"] = chunks(ztext(sub) + b"".join(
        ztext(pub % (ecg, i)) for i in range(3)) + text(pub % (b"1", 9)))
    s["stream-resume-compressed"] = chunks(b"".join(ztext(pub % (ecg, i)) for i in range(4)) +
                                           ztext(b'{"type":"subscribe","stream":"ward/1",'
                                                 b'"since":1,"id":"r"}'))
    # Bombs: a small compressed message that inflates past max_message_size.
    s["bomb-zeros"] = chunks(ztext(b" " * 200000))
    s["bomb-just-over"] = chunks(ztext(b'{"type":"ping","id":"' + b"x" * (1025 - 24) + b'"}'))
    s["exactly-max-inflated"] = chunks(ztext(b'{"type":"ping","id":"' + b"x" * (1024 - 24) +
                                             b'"}'))
    bomb = deflated(b"[" + b"0," * 100000 + b"0]")
    s["bomb-fragmented"] = chunks(frame(0x1, bomb[:50], fin=False, rsv=4) +
                                  b"".join(frame(0x0, bomb[i:i + 50], fin=False)
                                           for i in range(50, len(bomb), 50)) + frame(0x0, b""))
    # RSV1 where it does not belong (1002), bad data and bad text (1007).
    s["rsv1-on-ping"] = chunks(frame(0x9, b"x", rsv=4))
    s["rsv1-on-close"] = chunks(frame(0x8, b"\x03\xe8", rsv=4))
    s["rsv1-on-continuation"] = chunks(frame(0x1, deflated(PING_MSG)[:5], fin=False, rsv=4) +
                                       frame(0x0, deflated(PING_MSG)[5:], rsv=4))
    s["rsv2-text"] = chunks(text(PING_MSG, rsv=2))
    s["rsv1-binary"] = chunks(frame(0x2, deflated(b"\x00\x01"), rsv=4))
    s["corrupt-deflate"] = chunks(text(b"\xff\xff\xff\xff", rsv=4))
    s["deflate-then-garbage"] = chunks(text(deflated(PING_MSG, final=True) + b"xyz", rsv=4))
    s["truncated-deflate"] = chunks(text(deflated(PING_MSG)[:6], rsv=4))
    s["inflated-invalid-utf8"] = chunks(ztext(b'{"type":"ping","id":"\xc0\xaf"}'))
    s["inflated-utf8-surrogate"] = chunks(ztext(b'{"type":"\xed\xa0\x80"}'))
    s["compressed-then-close"] = chunks(ztext(PING_MSG) + close(1000))
    return s


JWT_SECRET = b"fuzz-secret-of-at-least-thirty-two-bytes"  # fuzz_jwt.c's key
JWT_NOW = 1800000000  # fuzz_jwt.c's time, in seconds


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt(claims, header=None, secret=JWT_SECRET, raw_payload=None):
    import hashlib
    import hmac
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(raw_payload if raw_payload is not None else json.dumps(claims).encode())
    sig = b64url(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return head + b"." + body + b"." + sig


def jwt_seeds():
    good = {"sub": "nurse-7", "iss": "https://idp.vitalstream.test", "aud": "wsgate",
            "exp": JWT_NOW + 600,
            "streams": {"subscribe": ["patient/4711/*", "ward/3"], "publish": ["patient/4711/ecg"]}}
    seeds = {
        "valid": jwt(good),
        "valid-aud-array": jwt(dict(good, aud=["other", "wsgate"])),
        "valid-no-streams": jwt({k: v for k, v in good.items() if k != "streams"}),
        "valid-nbf": jwt(dict(good, nbf=JWT_NOW - 10)),
        "expired": jwt(dict(good, exp=JWT_NOW - 1)),
        "not-yet": jwt(dict(good, nbf=JWT_NOW + 100)),
        "no-exp": jwt({k: v for k, v in good.items() if k != "exp"}),
        "wrong-iss": jwt(dict(good, iss="https://evil.test")),
        "wrong-aud": jwt(dict(good, aud="other")),
        "wrong-secret": jwt(good, secret=b"x" * 40),
        "alg-none": jwt(good, header={"alg": "none"}).rsplit(b".", 1)[0] + b".",
        "alg-rs256": jwt(good, header={"alg": "RS256"}),
        "crit": jwt(good, header={"alg": "HS256", "crit": ["exp"]}),
        "duplicate-member": jwt(None, raw_payload=b'{"exp":1,"exp":%d}' % (JWT_NOW + 9)),
        "bad-pattern": jwt(dict(good, streams={"subscribe": ["*", "a/*/b"]})),
        "sub-number": jwt(dict(good, sub=7)),
        "streams-not-object": jwt(dict(good, streams=["x"])),
        "two-parts": b"aGVsbG8.d29ybGQ",
        "not-base64": b"!!!.???.***",
        "empty": b"",
        "pattern-vs-name": b"patient/4711/*patient/4711/ecg",
    }
    return seeds


# ---------------------------------------------------------------- stream pool

def step(op, stream=0, slot=0, b=0, c=0):
    """One fuzz_streamlog step: op 0 append (b: size unit, c: policy bits),
    1 follow on/off, 2 read and move the cursor, 3 read all, 4 worker dies,
    5 reclaim."""
    return bytes([op, (slot << 4) | stream, b, c])


def streamlog_seeds():
    big = 1 | (4 << 5)  # 280-byte units, keep 4 records
    return {
        # A follower that never reads holds everything; the pool fills.
        "follower_holds": step(1, 0, 1) + b"".join(step(0, 0, 0, 200, big) for _ in range(12))
        + step(0, 1, 0, 200, big) + step(2, 0, 1),
        # A stuck follower is released under pressure, then reads a gap.
        "stuck_released": step(1, 0, 2) + b"".join(step(0, 0, 0, 250, 1) for _ in range(10))
        + b"".join(step(0, 1, 0, 250, 1 | 4 | (2 << 3)) for _ in range(10)) + step(2, 0, 2),
        # Hot and quiet streams sharing the pool, with reads and reclaim.
        "hot_and_quiet": b"".join(step(0, i % 4, 0, 90 + i, (i * 37) & 0xff) for i in range(40))
        + step(3, 1) + step(5) + step(0, 1, 0, 3, 0) + step(3, 1),
        # Followers on two slots, one dies.
        "two_followers": step(1, 2, 0) + step(1, 2, 1) + step(0, 2, 0, 10, 0) + step(2, 2, 0)
        + step(4, 0, 0, 1) + step(0, 2, 0, 60, 1) + step(2, 2, 0),
        # Records at every alignment around chunk ends.
        "alignments": b"".join(step(0, 3, 0, n, 0 if n % 2 else 1) for n in range(1, 90, 7))
        + step(3, 3),
    }


# ------------------------------------------------- stream contexts (deflate)
#
# fuzz_deflate_context input: a program of two-byte instructions (see
# fuzz_deflate_context.c); a publish is followed by its body.

def ctx_publish(stream, body, repeat=0):
    """Stream 0..2 gets envelope + body * (1 + 9 * repeat), repeat 0..7."""
    assert 1 <= len(body) <= 64
    return bytes([stream | (repeat << 5), len(body) - 1]) + body


def ctx_subscribe(client, stream):
    """Toggles: subscribes, or leaves when already subscribed."""
    return bytes([3 | (client << 3), stream])


def ctx_skip(client):
    return bytes([4 | (client << 3), 0])


def ctx_level(level):
    return bytes([5, level - 1])


def ctx_min_size(n):
    return bytes([6, n // 4])


def ctx_reconnect(client):
    return bytes([7 | (client << 3), 0])


def ecg_body(k):
    return json.dumps([round(0.3 + 0.001 * ((k * 37 + i * 11) % 400), 3)
                       for i in range(8)]).encode()[:64]


def deflate_context_seeds():
    every = b"".join(ctx_subscribe(c, 0) for c in range(4))
    seeds = {
        # four clients (windows 15, 12, 15 alone, 10) in step on one stream
        "one_stream": every + b"".join(ctx_publish(0, ecg_body(k), 2) for k in range(30)),
        # a client reading two streams interleaved, another joining late
        "interleaved": ctx_subscribe(0, 0) + ctx_subscribe(0, 1) + ctx_subscribe(1, 1) +
        b"".join(ctx_publish(k % 2, ecg_body(k), 3) for k in range(20)) + ctx_subscribe(2, 1) +
        ctx_subscribe(3, 0) + b"".join(ctx_publish(k % 2, ecg_body(k), 3) for k in range(20)),
        # missed messages, a reconnect, a level change, small and long messages
        "skips_and_changes": every +
        b"".join(ctx_publish(0, ecg_body(k), k % 8) + (ctx_skip(k % 4) if k % 5 == 0 else b"") +
                 (ctx_reconnect(1) + ctx_subscribe(1, 0) if k == 11 else b"") +
                 (ctx_level(9) if k == 15 else b"") + (ctx_min_size(200) if k == 20 else b"")
                 for k in range(30)),
        # incompressible text in between (deflate does not shrink it)
        "incompressible": every + b"".join(
            ctx_publish(0, ecg_body(k) if k % 3 else bytes((k * 97 + i * 61) % 256 for i in range(64)), 1)
            for k in range(24)),
        # the last takeover subscriber leaves and comes back: a new context
        "context_restarts": ctx_subscribe(0, 2) + ctx_subscribe(2, 2) +
        b"".join(ctx_publish(2, ecg_body(k), 2) for k in range(5)) + ctx_subscribe(0, 2) +
        b"".join(ctx_publish(2, ecg_body(k), 2) for k in range(5)) + ctx_subscribe(0, 2) +
        b"".join(ctx_publish(2, ecg_body(k), 2) for k in range(5)),
    }
    return seeds


def write_corpus(target, seeds):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")


def main():
    write_corpus("fuzz_http_head", http_seeds())
    write_corpus("fuzz_config", config_seeds())
    write_corpus("fuzz_router", router_seeds())
    write_corpus("fuzz_session", session_seeds())
    write_corpus("fuzz_jwt", jwt_seeds())
    write_corpus("fuzz_streamlog", streamlog_seeds())
    write_corpus("fuzz_inflate", inflate_seeds())
    write_corpus("fuzz_deflate_context", deflate_context_seeds())


if __name__ == "__main__":
    main()
