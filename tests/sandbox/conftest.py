"""One sandbox subprocess for the whole module set; each test works in its own namespace."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest
import yaml
from kubernetes import client, config

from modes.sandbox.testing import RunningSandbox, running_sandbox

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox")) as running:
        yield running


@pytest.fixture(scope="session")
def api(sandbox: RunningSandbox) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def ns(core: client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(sandbox: RunningSandbox, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    cache = tmp_path_factory.mktemp("kubectl-cache")
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "HOME": str(cache)}

    def run(
        *args: str, check: bool = True, timeout: float = 30, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", f"--cache-dir={cache}", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    return run


MANIFESTS = pathlib.Path(__file__).resolve().parents[2] / "manifests"


class Raw:
    """Plain HTTPS requests, for what the official client hides (status codes, headers, bodies)."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.url = sandbox.url
        self.token = sandbox.token
        kubeconfig = yaml.safe_load(sandbox.kubeconfig.read_text())
        ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
        self.context = ssl.create_default_context(cadata=ca.decode())

    def __call__(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        token: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], object]:
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = self.url + path  # always the sandbox's https:// URL
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            opened = urllib.request.urlopen(request, context=self.context, timeout=30)  # noqa: S310
            with opened as response:
                status, got, raw = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            status, got, raw = err.code, dict(err.headers), err.read()
        try:
            parsed: object = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, got, parsed


@pytest.fixture(scope="session")
def raw(sandbox: RunningSandbox) -> Raw:
    return Raw(sandbox)
