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
