"""Benchmark of the sandbox API server (run: ``python bench/sandbox.py``; not a test).

Reports start-to-ready, create throughput, watch fan-out to 20 watchers of 1,000 objects, and
list latency of 1,000 pods, over raw HTTP (aiohttp) and through the official client.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import statistics
import time
from typing import Any

import aiohttp
import yaml

from modes.sandbox.testing import RunningSandbox, running_sandbox


def _pod(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i:04d}", "labels": {"app": "bench", "shard": str(i % 10)}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "example/app:1",
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "N", "value": str(i)}],
                }
            ]
        },
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ssl(sb: RunningSandbox) -> ssl.SSLContext:
    config = yaml.safe_load(sb.kubeconfig.read_text())
    ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    return ssl.create_default_context(cadata=ca)


async def _watch(session: aiohttp.ClientSession, url: str, want: int) -> float:
    seen = 0
    async with session.get(url) as response:
        async for line in response.content:
            if line.strip() and json.loads(line)["type"] == "ADDED":
                seen += 1
                if seen == want:
                    return time.perf_counter()
    raise RuntimeError(f"watch ended after {seen} events")


async def _run(sb: RunningSandbox, objects: int, watchers: int, lists: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {sb.token}"}
    connector = aiohttp.TCPConnector(ssl=_ssl(sb), limit=100)
    results: dict[str, float] = {}
    async with aiohttp.ClientSession(sb.url, headers=headers, connector=connector) as session:
        async with session.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
        ) as r:
            r.raise_for_status()
        path = "/api/v1/namespaces/bench/pods"
        tasks = [
            asyncio.create_task(_watch(session, f"{path}?watch=1&timeoutSeconds=120", objects))
            for _ in range(watchers)
        ]
        await asyncio.sleep(0.5)  # let every watch be registered
        semaphore = asyncio.Semaphore(50)

        async def create(i: int) -> None:
            async with semaphore, session.post(path, json=_pod(i)) as response:
                response.raise_for_status()
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(objects)))
        created = time.perf_counter()
        done = await asyncio.gather(*tasks)
        results["create objects/s"] = objects / (created - started)
        results["watch: all events at all watchers (s)"] = max(done) - started
        results["watch events delivered/s"] = objects * watchers / (max(done) - started)
        samples = []
        for _ in range(lists):
            t0 = time.perf_counter()
            async with session.get(path) as response:
                body = await response.read()
            samples.append((time.perf_counter() - t0) * 1000)
        assert len(json.loads(body)["items"]) == objects
        results["list p50 ms (aiohttp, raw JSON)"] = statistics.median(samples)
        results["list p99 ms (aiohttp, raw JSON)"] = _percentile(samples, 0.99)
    return results


def _official_client(sb: RunningSandbox, lists: int) -> dict[str, float]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(sb.kubeconfig))
    core = client.CoreV1Api(api)
    results = {}
    for label, kwargs in (("models", {}), ("raw", {"_preload_content": False})):
        samples = []
        for _ in range(lists):
            t0 = time.perf_counter()
            response = core.list_namespaced_pod("bench", **kwargs)
            if kwargs:
                response.read()
            samples.append((time.perf_counter() - t0) * 1000)
        results[f"list p50 ms (official client, {label})"] = statistics.median(samples)
        results[f"list p99 ms (official client, {label})"] = _percentile(samples, 0.99)
    api.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--lists", type=int, default=50)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    starts = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        with running_sandbox():
            starts.append(time.perf_counter() - t0)
    rows: dict[str, float] = {"start to ready, median (s)": statistics.median(starts)}
    with running_sandbox() as sb:
        rows.update(asyncio.run(_run(sb, args.objects, args.watchers, args.lists)))
        rows.update(_official_client(sb, max(5, args.lists // 5)))
    width = max(len(k) for k in rows)
    print(f"sandbox benchmark: {args.objects} pods, {args.watchers} watchers")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value:10.2f}")


if __name__ == "__main__":
    main()
