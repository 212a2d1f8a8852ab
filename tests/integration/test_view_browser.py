"""The ward wall (GET /view) in a real headless Chromium (Debian's chromium
and chromium-driver, driven by python3-selenium), on the real gateway,
with simulated patients (tools/ecg-sim's heart model) published from the
test so it knows exactly what was published:

- the page loads with no console error and no CSP violation, subscribes to
  4 patients, and 3 s later every canvas holds a waveform (pixels read
  back from the canvas: a trace spanning the sweep and tall enough to be
  QRS complexes);
- the page's own count of received seqs per stream equals what was
  acknowledged to the publisher, also across a SIGKILL of the worker
  serving the browser: the page shows "reconnecting", then the trace
  resumes with no gap mark;
- a stream stopped for 3 s shows NO SIGNAL; a stream whose history was
  outrun while the browser was away shows a gap mark (red pixels) and
  counts exactly the lost seqs;
- a one-patient wall reads every seq from messages deflated against the
  previous one (the server's compression context), under a third of the
  JSON on the wire;
- 16 patients: time from page load to the first drawn sample, and the
  renderer's main-thread busy time from Chromium's own Performance
  metrics, written to view-metrics.json (measured, not asserted).

Screenshots of the normal and the NO SIGNAL states are saved in each
test's tmp dir (the path is printed).
"""
import asyncio
import importlib.machinery
import importlib.util
import json
import os
import random
import signal
import tempfile
import threading
import time

import pytest
import websockets
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from conftest import ROOT, SLOW, metric
from gwutil import wait_for
import jwtutil
from streamclient import worker_of_port, worker_pid

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BATCH_MS = 20


def load_ecgsim():
    path = os.path.join(ROOT, "tools", "ecg-sim")
    loader = importlib.machinery.SourceFileLoader("ecgsim", path)
    spec = importlib.util.spec_from_loader("ecgsim", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


ECGSIM = load_ecgsim()


# -- the browser -------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "chromium and chromium-driver are missing: run tools/setup"
    profile = tempfile.TemporaryDirectory(prefix="wsgate-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # Root in a container: no sandbox; no network but loopback: nothing in
    # the background may try to reach one.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-dev-shm-usage", "--window-size=1400,900",
                f"--user-data-dir={profile.name}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(10 * SLOW)
    # Record CSP violations from the first byte of every page (DevTools
    # scripts are not subject to the page's CSP).
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__csp = [];
        document.addEventListener('securitypolicyviolation',
            (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""})
    yield driver
    driver.quit()
    profile.cleanup()


def open_wall(driver, gw, streams):
    driver.get("about:blank")
    driver.get_log("browser")  # drop what earlier tests left
    driver.get(f"http://127.0.0.1:{gw.port}/view?streams={','.join(streams)}")
    wait_for(lambda: len(panels(driver)) == len(streams) and
             all(p.get("subscribed") == "1" for p in panels(driver)), 10, what="every panel subscribed")


def panels(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('.panel')].map((p) => Object.assign({}, p.dataset));")


def page(driver):
    return driver.execute_script("return Object.assign({}, document.body.dataset);")


def console_problems(driver):
    logs = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    csp = driver.execute_script("return window.__csp || [];")
    return logs, csp


def canvas_pixels(driver, index):
    """What panel `index`'s canvas holds, read back pixel by pixel."""
    return driver.execute_script("""
        const c = document.querySelectorAll('.panel canvas')[arguments[0]];
        // Read a copy: reading the page's own canvas back would make
        // Chromium warn (willReadFrequently) in the console we check.
        const copy = document.createElement('canvas');
        copy.width = c.width; copy.height = c.height;
        const cx = copy.getContext('2d', {willReadFrequently: true});
        cx.drawImage(c, 0, 0);
        const d = cx.getImageData(0, 0, c.width, c.height).data;
        const cols = new Set(); let trace = 0, red = 0, top = c.height, bottom = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] < 128) continue;
          const x = (i / 4) % c.width, y = Math.floor(i / 4 / c.width);
          if (d[i + 1] > 150 && d[i] < 150) {
            trace++; cols.add(x); top = Math.min(top, y); bottom = Math.max(bottom, y);
          } else if (d[i] > 200 && d[i + 1] < 100) red++;
        }
        return {trace, red, columns: cols.size, height: bottom - top,
                dpr: window.devicePixelRatio, width: c.width};""", index)


def assert_waveform(px, seconds):
    """A trace over most of `seconds` of sweep (25 mm/s = 94.5 CSS px/s) and
    with the height of QRS complexes (more than 0.6 mV = 23 px)."""
    dpr = px["dpr"]
    assert px["columns"] >= min(px["width"], 94.5 * dpr * seconds) * 0.8, px
    assert px["height"] >= 23 * dpr, px


def screenshot(driver, tmp_path, name):
    path = os.path.join(str(tmp_path), name)
    driver.save_screenshot(path)
    print(f"screenshot: {path}")
    return path


def browser_worker(gw):
    """The worker slot of the browser's WebSocket (the only one that asks
    for the vitalstream.v1 subprotocol), from the newest connect line."""
    def find():
        lines = [l for l in gw.logs() if l.get("event") == "connect" and l.get("subprotocol")]
        return lines[-1] if lines else None
    return wait_for(find, 5, what="the browser's connect log line")["worker"]


def kill_worker(gw, slot):
    pid = worker_pid(gw, slot)
    os.kill(pid, signal.SIGKILL)
    return pid


# -- the simulated patients ----------------------------------------------------

class Publisher:
    """Simulated bedside monitors for `streams` (tools/ecg-sim's heart model,
    12 leads, 50 messages/s each), published from one connection that is
    placed on a worker other than `avoid_slot`, in a background thread.
    Every publish carries an id; `acked[stream]` is the last seq the gateway
    acknowledged, `count[stream]` how many were acknowledged."""

    def __init__(self, gw, streams, avoid_slot=None, token=None):
        self.gw, self.streams, self.avoid = gw, list(streams), avoid_slot
        self.url = gw.ws_url + (f"?access_token={token}" if token else "")
        rng = random.Random(7)
        self.hearts = {s: ECGSIM.Heart(random.Random(rng.random()), rng.uniform(60, 95), 0.02, 0.05)
                       for s in self.streams}
        self.n = {s: 0 for s in self.streams}
        self.acked = {s: 0 for s in self.streams}
        self.count = {s: 0 for s in self.streams}
        self.errors = []
        self.paused = set()
        self.pending = {}
        self.start_ms = int(time.time() * 1000)
        self.stopping = False
        self.slot = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),),
                                       daemon=True)
        self.thread.start()
        assert self.ready.wait(20 * SLOW), "publisher did not connect"
        assert not self.errors, self.errors

    async def _connect(self):
        for _ in range(40):
            ws = await websockets.connect(self.url, max_size=None)
            port = ws.transport.get_extra_info("sockname")[1]
            slot = await asyncio.to_thread(worker_of_port, self.gw, port)
            if self.avoid is None or slot != self.avoid:
                self.slot = slot
                return ws
            await ws.close()
        raise AssertionError(f"no connection on a worker other than {self.avoid}")

    def _message(self, stream):
        n = self.n[stream]
        self.n[stream] += 1
        t0 = n * BATCH_MS / 1000
        data = {"device": stream, "t0": self.start_ms + n * BATCH_MS, "rate_hz": ECGSIM.RATE_HZ,
                "leads": self.hearts[stream].batch(t0, ECGSIM.RATE_HZ * BATCH_MS // 1000)}
        msg_id = f"{stream}#{n}"
        self.pending[msg_id] = stream
        return json.dumps({"type": "publish", "stream": stream, "id": msg_id, "data": data})

    async def _read(self, ws):
        async for raw in ws:
            msg = json.loads(raw)
            stream = self.pending.pop(msg.get("id"), None)
            if msg.get("type") == "ack" and stream is not None:
                self.acked[stream] = max(self.acked[stream], msg["seq"])
                self.count[stream] += 1
            elif msg.get("type") == "error":
                self.errors.append(msg)

    async def _run(self):
        try:
            self.ws = await self._connect()
        except Exception as e:  # reported by the constructor
            self.errors.append(repr(e))
            self.ready.set()
            return
        reader = asyncio.ensure_future(self._read(self.ws))
        self.ready.set()
        ticks = 0
        begin = time.monotonic()
        while not self.stopping:
            for s in self.streams:
                if s not in self.paused:
                    await self.ws.send(self._message(s))
            ticks += 1
            await asyncio.sleep(max(0.0, begin + ticks * BATCH_MS / 1000 - time.monotonic()))
        deadline = time.monotonic() + 10 * SLOW
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reader.cancel()
        await self.ws.close()

    def burst(self, stream, n):
        """n messages for one stream at once (a monitor catching up)."""
        async def go():
            for _ in range(n):
                await self.ws.send(self._message(stream))
        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10 * SLOW)

    def stop(self):
        self.stopping = True
        self.thread.join(20 * SLOW)
        assert not self.thread.is_alive(), "publisher did not stop"
        assert not self.pending, f"{len(self.pending)} publishes never acknowledged"
        assert not self.errors, self.errors


def wait_caught_up(driver, pub, streams):
    def caught_up():
        ps = {p["stream"]: p for p in panels(driver)}
        return all(ps[s]["lastSeq"] == str(pub.acked[s]) for s in streams)
    wait_for(caught_up, 10, what="the page to reach every stream's last acknowledged seq")
    return {p["stream"]: p for p in panels(driver)}


def streams_of(n, first=1):
    return [f"patient/{first + i}/ecg" for i in range(n)]


# -- tests -------------------------------------------------------------------

def test_wall_draws_every_seq_and_survives_a_worker_kill(browser, gateway, tmp_path):
    streams = streams_of(4)
    open_wall(browser, gateway, streams)
    slot = browser_worker(gateway)
    pub = Publisher(gateway, streams, avoid_slot=slot)
    try:
        time.sleep(3)
        logs, csp = console_problems(browser)
        assert logs == [] and csp == [], (logs, csp)
        for i in range(len(streams)):
            px = canvas_pixels(browser, i)
            assert_waveform(px, 2.5)
            assert px["red"] == 0, px
        assert all(p["state"] == "live" for p in panels(browser)), panels(browser)
        screenshot(browser, tmp_path, "wall-normal.png")

        before = {p["stream"]: int(p["received"]) for p in panels(browser)}
        killed_at = browser.execute_script("return performance.now();")
        kill_worker(gateway, slot)
        wait_for(lambda: page(browser).get("reconnects") == "1" and page(browser)["conn"] == "open",
                 10, what="the page to reconnect")
        assert page(browser)["connHistory"] == "connecting,open,reconnecting,open"
        time.sleep(2)
    finally:
        pub.stop()
    ps = wait_caught_up(browser, pub, streams)
    freezes = []
    for s in streams:
        p = ps[s]
        # Subscribed before the first publish: seq 1 on, every one of them.
        assert p["firstSeq"] == "1" and int(p["received"]) == pub.count[s] == pub.acked[s], (s, p)
        assert p["gaps"] == "0" and p["gapSeqs"] == "0" and p["resets"] == "0", p
        assert int(p["received"]) > before[s] and float(p["lastDrawnMs"]) > killed_at, p
        freezes.append(int(p["maxStallMs"]))
    for i in range(len(streams)):
        assert canvas_pixels(browser, i)["red"] == 0, "a gap mark where nothing was lost"
    screenshot(browser, tmp_path, "wall-after-kill.png")
    logs, csp = console_problems(browser)
    assert csp == [] and logs == [], (logs, csp)
    print(f"waveform freeze across the worker kill: max {max(freezes)} ms "
          f"(per stream {freezes}), published {pub.count}")
    # Chromium offers permessage-deflate and the gateway compresses by
    # default: the browser (the only subscriber) got every seq above
    # through compressed frames.
    m = gateway.metrics()
    after = metric(m, "websocket_compression_bytes_total", direction="out", stage="after")
    plain = metric(m, "websocket_compression_bytes_total", direction="out", stage="before")
    assert 0 < after < plain, (after, plain)


def test_one_patient_wall_inflates_messages_that_refer_back(browser, gateway_factory, tmp_path):
    """A wall of one patient is a connection on one stream: the gateway
    keeps its context for it and sends each batch deflated against the
    previous one (PROTOCOL.md 10). Chromium's own inflater must read every
    seq, and the bytes on the wire are under a third of the JSON."""
    gw = gateway_factory(config={"workers": 1})
    streams = streams_of(1, first=31)
    open_wall(browser, gw, streams)
    pub = Publisher(gw, streams)
    try:
        time.sleep(3)
    finally:
        pub.stop()
    p = wait_caught_up(browser, pub, streams)[streams[0]]
    assert p["firstSeq"] == "1" and int(p["received"]) == pub.count[streams[0]] > 100, p
    assert p["gaps"] == "0" and p["state"] == "live", p
    assert_waveform(canvas_pixels(browser, 0), 2.5)
    logs, csp = console_problems(browser)
    assert logs == [] and csp == [], (logs, csp)
    m = gw.metrics()
    after = metric(m, "websocket_compression_bytes_total", direction="out", stage="after")
    plain = metric(m, "websocket_compression_bytes_total", direction="out", stage="before")
    print(f"one-patient wall: {after / plain:.3f} of the JSON on the wire")
    assert 0 < after < plain / 3, (after, plain)


def test_no_signal_and_gap_mark(browser, gateway_factory, tmp_path):
    gw = gateway_factory(config={"history_size": 1024})
    streams = streams_of(4, first=11)
    quiet, outrun = streams[1], streams[2]
    open_wall(browser, gw, streams)
    slot = browser_worker(gw)
    pub = Publisher(gw, streams, avoid_slot=slot)
    try:
        time.sleep(1.5)
        pub.paused.add(quiet)
        time.sleep(3)
        ps = {p["stream"]: p for p in panels(browser)}
        assert ps[quiet]["state"] == "nosignal", ps[quiet]
        assert all(ps[s]["state"] == "live" for s in streams if s != quiet), ps
        overlay = browser.find_elements("css selector", ".panel .nosignal")
        assert [o.is_displayed() for o in overlay] == [s == quiet for s in streams]
        assert overlay[1].text == "NO SIGNAL"
        screenshot(browser, tmp_path, "wall-nosignal.png")
        pub.paused.discard(quiet)
        wait_for(lambda: panels(browser)[1]["state"] == "live", 5, what="the quiet stream live again")

        # Outrun the history of one stream while the browser is away: its
        # worker is killed and browsers may not come back (allowed_origins
        # refuses their Origin) until the burst is in.
        gw.config["allowed_origins"] = ["https://elsewhere.invalid"]
        gw.write_config()
        gw.signal(signal.SIGHUP)
        wait_for(lambda: [l for l in gw.logs() if l.get("event") == "reload"], 10, what="reload")
        time.sleep(0.5 * SLOW)  # every worker applies it
        kill_worker(gw, slot)
        wait_for(lambda: page(browser)["conn"] == "reconnecting", 5, what="the page to notice")
        pub.burst(outrun, 1500)
        wait_for(lambda: not pub.pending, 10, what="the burst acknowledged")
        gw.config["allowed_origins"] = []
        gw.write_config()
        gw.signal(signal.SIGHUP)
        wait_for(lambda: panels(browser)[2]["gaps"] == "1", 20, what="the gap announced")
        time.sleep(0.3)
        px = canvas_pixels(browser, 2)
        assert px["red"] > 50, px
        screenshot(browser, tmp_path, "wall-gap.png")
        time.sleep(1)
    finally:
        pub.stop()
    ps = wait_caught_up(browser, pub, streams)
    for s in streams:
        p = ps[s]
        got = int(p["received"]) + int(p["gapSeqs"])
        assert p["firstSeq"] == "1" and got == pub.acked[s] == pub.count[s], (s, p, pub.acked)
        if s == outrun:
            assert p["gaps"] == "1" and int(p["gapSeqs"]) > 1500 - 1024, p
        else:
            assert p["gaps"] == "0", p
    assert canvas_pixels(browser, 0)["red"] == 0
    csp = browser.execute_script("return window.__csp || [];")
    assert csp == [], csp


def chromium_cpu_seconds(driver):
    """user+system CPU of every process under chromedriver (the browser,
    its renderer, GPU and utility processes), from /proc."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # ppid, utime, stime
            stats[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    root = driver.service.process.pid
    total, todo = 0, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, ticks) in stats.items():
            if ppid == parent:
                total += ticks
                todo.append(pid)
    return total / os.sysconf("SC_CLK_TCK")


def test_sixteen_patients_first_sample_and_cpu(browser, gateway, tmp_path):
    streams = streams_of(16, first=101)
    pub = Publisher(gateway, streams)
    try:
        time.sleep(0.5)
        browser.get("about:blank")
        browser.get(f"http://127.0.0.1:{gateway.port}/view?streams={','.join(streams)}")
        wait_for(lambda: len(panels(browser)) == 16 and
                 all(p.get("firstDrawnMs") for p in panels(browser)), 10, what="16 panels drawing")
        first = sorted(int(p["firstDrawnMs"]) for p in panels(browser))
        browser.execute_cdp_cmd("Performance.enable", {"timeDomain": "timeTicks"})

        def sample():
            m = {x["name"]: x["value"] for x in
                 browser.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
            m["process_cpu_s"] = chromium_cpu_seconds(browser)
            return time.monotonic(), m
        time.sleep(1)
        t0, m0 = sample()
        time.sleep(5)
        t1, m1 = sample()
    finally:
        pub.stop()
    wall = t1 - t0
    busy = {k: round((m1[k] - m0[k]) / wall * 100, 1)
            for k in ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")}
    for i in range(16):
        assert canvas_pixels(browser, i)["trace"] > 0
    busy["all_chromium_processes"] = round((m1["process_cpu_s"] - m0["process_cpu_s"]) / wall * 100, 1)
    report = {"patients": 16, "messages_per_s": 16 * 1000 // BATCH_MS,
              "first_drawn_ms_after_navigation": {"min": first[0], "max": first[-1]},
              "main_thread_busy_percent": busy, "js_heap_mb": round(m1["JSHeapUsedSize"] / 2**20, 1)}
    with open(os.path.join(str(tmp_path), "view-metrics.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("view metrics:", json.dumps(report))


def test_jwt_gateway_page_asks_for_a_token(browser, gateway_factory, tmp_path):
    keys = jwtutil.Keys(tmp_path)
    gw = gateway_factory(config={"auth_mode": "jwt", "jwt_key_file": keys.secret_path})
    allowed, other = "patient/21/ecg", "patient/22/ecg"
    browser.get("about:blank")
    browser.get(f"http://127.0.0.1:{gw.port}/view?streams={allowed},{other}")
    field = browser.find_element("id", "token-field")
    wait_for(lambda: field.is_displayed() and page(browser).get("conn") == "token", 5,
             what="the page to ask for a token")
    assert panels(browser) == []  # nothing is opened without one
    token = jwtutil.token(jwtutil.claims(subscribe=[allowed]), keys.secret)
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("css selector", "#pick button").click()
    wait_for(lambda: len(panels(browser)) == 2 and panels(browser)[0].get("subscribed") == "1", 10,
             what="the allowed stream subscribed")
    wait_for(lambda: panels(browser)[1]["state"] == "refused", 5, what="the other stream refused")
    assert "forbidden" in browser.find_elements("css selector", ".panel .state")[1].text
    # The token went as access_token on the WebSocket, and stays out of the URL.
    assert "access_token" not in browser.current_url and token not in browser.current_url
    connects = [l for l in gw.logs() if l.get("event") == "connect" and l.get("subprotocol")]
    assert connects, "no connect line for the browser"
    pub = Publisher(gw, [allowed], token=jwtutil.token(jwtutil.claims(publish=[allowed]), keys.secret))
    try:
        time.sleep(1.5)
    finally:
        pub.stop()
    p = wait_caught_up(browser, pub, [allowed])[allowed]
    assert p["firstSeq"] == "1" and int(p["received"]) == pub.count[allowed] > 0, p
    assert_waveform(canvas_pixels(browser, 0), 1)
    assert browser.execute_script("return window.__csp || [];") == []
