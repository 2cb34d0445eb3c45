"""Send one sequence of API requests to two API servers and tell where their answers differ.

The bodies are compared as the servers sent them (plain HTTPS, no client library in between),
after masking what is volatile by nature: uids, timestamps, resourceVersion values, ClusterIPs,
tokens and the random suffixes of generated names. A resourceVersion is not simply blanked: it
becomes "the one step X answered" when it equals the resourceVersion of an object an earlier
step returned, so "a no-op write keeps the resourceVersion" is compared too.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from modes.sandbox.testing import RunningSandbox
from tests.sandbox.conftest import Raw

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# "{step:dotted.path}" in a path, a token or a body string: that value of this server's answer
# to an earlier step (each server gets its own resourceVersions, tokens and names).
_REFERENCE = re.compile(r"\{([a-z0-9-]+):([A-Za-z0-9_.\[\]-]+)\}")
_TIMES = {"creationTimestamp", "deletionTimestamp", "time", "lastTransitionTime",
          "expirationTimestamp", "startTime", "lastUpdateTime", "lastHeartbeatTime"}
POLL_DEADLINE = 60.0
_RANDOM_SUFFIXES = re.compile(r"\b(kube-api-access-)[a-z0-9]{5}\b")


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    body: object = None
    content_type: str = JSON
    token: str = ""  # empty: the admin's token; else a reference to an earlier answer
    # A watch: read events until one of this type for an object of this name arrives.
    watch_until: tuple[str, str] | None = None
    # Only the status code is compared, for an answer that races the cluster's controllers.
    status_only: bool = False
    # Repeat the request until the answer satisfies this (the cluster's controllers catching
    # up); the deadline only bounds a hang.
    until: Callable[[Answer], bool] | None = None


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Run:
    """One server's answers, by step name."""

    answers: dict[str, Answer] = field(default_factory=dict)

    def resolve(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            return str(lookup(self.answers[match.group(1)].body, match.group(2)))

        return _REFERENCE.sub(value, text)

    def resolve_body(self, body: object) -> object:
        if isinstance(body, str):
            return self.resolve(body)
        if isinstance(body, list):
            return [self.resolve_body(item) for item in body]
        if isinstance(body, dict):
            return {key: self.resolve_body(item) for key, item in body.items()}
        return body


def lookup(body: Any, dotted: str) -> Any:
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


class Client:
    """Plain requests to one server; watches are read event by event from the open stream."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.raw = Raw(sandbox)
        self.sandbox = sandbox

    def send(self, step: Step, run: Run) -> Answer:
        path = run.resolve(step.path)
        token = run.resolve(step.token) if step.token else ""
        body = run.resolve_body(step.body)
        if step.watch_until is not None:
            return Answer(200, self._watch(path, token, step.watch_until))
        deadline = time.monotonic() + POLL_DEADLINE
        while True:
            status, _, answer = self.raw(step.method, path, body,
                                         content_type=step.content_type, token=token)
            got = Answer(status, answer)
            if step.until is None or step.until(got) or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def _watch(self, path: str, token: str, until: tuple[str, str]) -> list[Any]:
        url = urllib.parse.urlsplit(self.sandbox.url)
        assert url.hostname is not None
        connection = http.client.HTTPSConnection(
            url.hostname, url.port, context=self.raw.context, timeout=30)  # bounds a hang only
        try:
            connection.request("GET", path,
                               headers={"Authorization": f"Bearer {token or self.sandbox.token}"})
            response = connection.getresponse()
            if response.status != 200:
                return [{"status": response.status, "body": json.loads(response.read())}]
            events: list[Any] = []
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                events.append(event)
                obj = event.get("object", {})
                if (event.get("type"), obj.get("metadata", {}).get("name")) == until:
                    return events
            return events
        finally:
            connection.close()


def run_steps(sandbox: RunningSandbox, steps: list[Step]) -> Run:
    client = Client(sandbox)
    run = Run()
    for step in steps:
        run.answers[step.name] = client.send(step, run)
    return run


@dataclass
class Masker:
    """Replaces the volatile values of one server's answers, step by step."""

    run: Run
    # resourceVersion -> the earliest step whose answer was an object with it.
    versions: dict[str, str] = field(default_factory=dict)

    def answer(self, step: str) -> Answer:
        answer = self.run.answers[step]
        masked = Answer(answer.status, self.value(answer.body, ""))
        body = answer.body
        if isinstance(body, dict) and not str(body.get("kind", "")).endswith("List"):
            version = body.get("metadata", {}).get("resourceVersion")
            if version and version not in self.versions:
                self.versions[version] = step
        return masked

    def value(self, value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, list):
            if key == "clusterIPs":
                return ["<clusterIP>" if item != "None" else item for item in value]
            return [self.value(item, "") for item in value]
        if isinstance(value, str):
            return self.string(value, key)
        return value

    def mapping(self, value: Mapping[str, Any]) -> dict[str, Any]:
        masked = {key: self.value(item, key) for key, item in value.items()}
        if str(value.get("kind", "")).endswith("List") and isinstance(value.get("metadata"), dict):
            # A list's resourceVersion is the store's latest, which the cluster's own
            # controllers move at any time; its continue token is opaque.
            meta = masked["metadata"]
            if meta.get("resourceVersion"):
                meta["resourceVersion"] = "<list resourceVersion>"
            if meta.get("continue"):
                meta["continue"] = "<continue>"
        managed = masked.get("managedFields")
        if isinstance(managed, list):
            # kube-apiserver orders entries by time, to the second: two writes within a second
            # may come in either order.
            masked["managedFields"] = sorted(managed, key=lambda e: (
                str(e.get("operation")), str(e.get("manager")), str(e.get("apiVersion")),
                str(e.get("subresource", ""))))
        generate = value.get("generateName")
        name = value.get("name")
        if isinstance(generate, str) and isinstance(name, str) and name.startswith(generate):
            masked["name"] = generate + "<random>"
        return masked

    def string(self, value: str, key: str) -> str:
        if key == "uid" and value:
            return "<uid>"
        if key in _TIMES and value:
            return f"<{key}>"
        if key == "token" and value:
            return "<token>"
        if key == "clusterIP" and value != "None":
            return "<clusterIP>"
        if key == "resourceVersion" and value:
            step = self.versions.get(value)
            return f"<resourceVersion of {step}>" if step else "<resourceVersion>"
        return _RANDOM_SUFFIXES.sub(r"\1<random>", value)


def differences(left: Any, right: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(JSON path, left value, right value) for every place the two values differ."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            inner = f"{path}.{key}" if path else key
            if key not in left or key not in right:
                yield inner, left.get(key, "<absent>"), right.get(key, "<absent>")
            else:
                yield from differences(left[key], right[key], inner)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (one, other) in enumerate(zip(left, right, strict=True)):
            yield from differences(one, other, f"{path}[{index}]")
    elif left != right:
        yield path, left, right


def compare(steps: list[Step], builtin: Run, real: Run) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Per step: JSON path -> (builtin value, real value); "(status)" is the status code."""
    masks = Masker(builtin), Masker(real)
    found: dict[str, dict[str, tuple[Any, Any]]] = {}
    for step in steps:
        one, other = (mask.answer(step.name) for mask in masks)
        here: dict[str, tuple[Any, Any]] = {}
        if one.status != other.status:
            here["(status)"] = (one.status, other.status)
        if not step.status_only:
            for path, left, right in differences(one.body, other.body):
                here[path] = (left, right)
        found[step.name] = here
    return found


def describe(found: Mapping[str, tuple[Any, Any]]) -> str:
    return "\n".join(f"  {path}: builtin={json.dumps(left)} real={json.dumps(right)}"
                     for path, (left, right) in sorted(found.items()))


__all__ = ["APPLY", "JSON", "JSON_PATCH", "MERGE", "STRATEGIC", "Step", "compare", "describe",
           "run_steps"]
