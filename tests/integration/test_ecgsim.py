"""tools/ecg-sim against a live gateway: every simulated bedside monitor's
publishes are acknowledged, and a dashboard subscribed to one patient sees
realistic 12-lead batches in order."""
import asyncio
import json
import os
import subprocess

import websockets

from conftest import ROOT, SLOW


def test_ecg_sim_publishes_acknowledged_batches(gateway):
    async def watch():
        async with websockets.connect(gateway.ws_url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream": "patient/4711/ecg", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            sim = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", os.path.join(ROOT, "tools", "ecg-sim"), "--port",
                str(gateway.port), "--patients", "5", "--duration", "2",
                stdout=asyncio.subprocess.PIPE)
            got = []
            while len(got) < 40:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                got.append(msg)
            out, _ = await asyncio.wait_for(sim.communicate(), 30 * SLOW)
            return sim.returncode, json.loads(out), got

    code, report, got = asyncio.run(watch())
    assert code == 0, report
    assert report["published"] >= 5 * 60 and report["acks"] == report["published"], report
    assert [m["seq"] for m in got] == list(range(1, 41))
    leads = got[0]["data"]["leads"]
    assert len(leads) == 12 and all(len(v) == 10 for v in leads.values())


def run_and_watch(gateway, stream, *args):
    """Run ecg-sim with `args` while one subscriber records `stream`;
    (exit code, report, lead II as one list in sample order)."""
    async def watch():
        async with websockets.connect(gateway.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream": stream, "id": 1}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            sim = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", os.path.join(ROOT, "tools", "ecg-sim"), "--port",
                str(gateway.port), *args, stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(sim.communicate(), 30 * SLOW)
            got = []
            try:
                while True:
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 1 * SLOW)))
            except asyncio.TimeoutError:
                pass
            return sim.returncode, json.loads(out), got

    code, report, got = asyncio.run(watch())
    assert [m["seq"] for m in got] == list(range(1, len(got) + 1))
    lead = [v for m in got for v in m["data"]["leads"]["II"]]
    return code, report, lead


def r_peaks(lead, rate=500):
    """(time s, half-amplitude width s) of each R wave: a sample above
    0.6 mV that is the largest within 100 ms either side."""
    win = rate // 10
    peaks = []
    for i, v in enumerate(lead):
        if v > 0.6 and v == max(lead[max(0, i - win):i + win + 1]) and \
                (not peaks or i - peaks[-1] > win):
            peaks.append(i)
    out = []
    for i in peaks:
        half = lead[i] / 2
        lo, hi = i, i
        while lo > 0 and lead[lo] > half:
            lo -= 1
        while hi < len(lead) - 1 and lead[hi] > half:
            hi += 1
        out.append((i / rate, (hi - lo) / rate))
    return out


def test_ecg_sim_beats_at_the_heart_rate_asked(gateway):
    code, report, lead = run_and_watch(gateway, "patient/5000/ecg", "--patients", "1",
                                       "--first-id", "5000", "--duration", "4",
                                       "--heart-rate", "120", "--ectopic", "0", "--seed", "3")
    assert code == 0 and report["ectopic_beats"] == 0, report
    peaks = r_peaks(lead)
    rr = [b[0] - a[0] for a, b in zip(peaks, peaks[1:])]
    assert len(peaks) >= 6, peaks
    assert all(0.44 < x < 0.56 for x in rr), rr  # 120 bpm: 0.5 s, a little variability
    assert all(w < 0.03 for _, w in peaks), peaks  # narrow (sinus) QRS
    # A P wave before every QRS: a bump of about 0.15 mV 80-160 ms before R.
    for t, _ in peaks:
        i = int(t * 500)
        if i >= 80:
            assert max(lead[i - 80:i - 40]) - min(lead[i - 80:i - 40]) > 0.08


def test_ecg_sim_ectopic_beats_are_wide_and_early(gateway):
    code, report, lead = run_and_watch(gateway, "patient/5100/ecg", "--patients", "1",
                                       "--first-id", "5100", "--duration", "5",
                                       "--heart-rate", "60", "--ectopic", "1", "--seed", "5")
    assert code == 0 and report["ectopic_beats"] >= 2, report
    peaks = r_peaks(lead)
    wide = [w for _, w in peaks if w > 0.04]
    narrow = [w for _, w in peaks if w < 0.03]
    assert len(wide) >= 2 and len(narrow) >= 2, peaks
    # Early after a sinus beat (0.6 RR less the later R), then a full
    # compensatory pause: intervals alternate short and long.
    rr = [round(b[0] - a[0], 2) for a, b in zip(peaks, peaks[1:])]
    assert any(0.35 < x < 0.6 for x in rr) and any(1.3 < x < 1.8 for x in rr), rr


def test_ecg_sim_refuses_impossible_settings():
    for args in (["--heart-rate", "400"], ["--ectopic", "2"], ["--noise", "-1"]):
        r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "ecg-sim"), *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "ecg-sim:" in r.stderr, (args, r.stderr)
