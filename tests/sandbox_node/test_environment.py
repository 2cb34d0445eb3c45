"""The environment a pod's process receives, resolved as Kubernetes does."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modes.sandbox.node.environment import ConfigError, EnvResolver, expand, python_path
from modes.sandbox.node.images import ImagePolicy, Launch
from modes.sandbox.node.store import CONFIGMAPS, PODS, SECRETS, SERVICEACCOUNTS
from tests.sandbox_node.helpers import container_status, running_kubelet, status

Obj = dict[str, Any]
PRINT_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


class PrintEnvImages(ImagePolicy):
    """The sandbox's policy plus one test image whose process prints its environment."""

    def launch(self, container: Obj) -> Launch:
        if container.get("image") == "test/printenv":
            return Launch([sys.executable, "-c", PRINT_ENV], python=False)
        return super().launch(container)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def printenv_pod(name: str, env: list[Obj], env_from: list[Obj] | None = None,
                 **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "labels": {"tier": "web"}},
            "spec": {"restartPolicy": "Never", "serviceAccountName": "builder", **spec,
                     "containers": [{"name": "main", "image": "test/printenv", "env": env,
                                     "envFrom": env_from or []}]}}


async def _printed_env(store: Any, kubelet: Any, name: str) -> dict[str, str]:
    await store.wait_for(lambda: status(store, name).get("phase") == "Succeeded", timeout=10)
    worker = kubelet.find("default", name)
    lines, _ = worker.container_log("main", previous=False).lines()
    return json.loads(b"".join(line.data for line in lines))  # type: ignore[no-any-return]


async def test_env_sources_and_sandbox_variables(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path, images=PrintEnvImages()) as (store, kubelet):
        store.put(SECRETS, {"metadata": {"name": "creds"},
                            "data": {"password": b64("s3cret"), "user": b64("ann")}})
        store.put(CONFIGMAPS, {"metadata": {"name": "settings"},
                               "data": {"mode": "fast", "level": "3"}})
        env = [
            {"name": "PLAIN", "value": "a"},
            {"name": "EXPANDED", "value": "$(PLAIN)-$(MISSING)-$$(PLAIN)"},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
            {"name": "PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x",
                                                                "optional": True}}},
            {"name": "CFG_level", "value": "overridden"},
        ]
        env_from = [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "creds"}}]
        store.put(PODS, printenv_pod("env", env, env_from))
        got = await _printed_env(store, kubelet, "env")
        ip = status(store, "env")["podIP"]
        assert got["PLAIN"] == "a"
        assert got["EXPANDED"] == "a-$(MISSING)-$(PLAIN)"
        assert (got["NAME"], got["NS"], got["IP"], got["NODE"]) == ("env", "default", ip, "sandbox")
        assert (got["SA"], got["TIER"]) == ("builder", "web")
        assert (got["PASSWORD"], got["MODE"]) == ("s3cret", "fast")
        assert (got["CFG_mode"], got["CFG_level"], got["user"]) == ("fast", "overridden", "ann")
        assert "OPTIONAL" not in got
        assert got["KUBETUNNEL_BIND_ADDRESS"] == ip
        assert got["HOSTNAME"] == "env"
        assert (got["KUBERNETES_SERVICE_HOST"], got["KUBERNETES_SERVICE_PORT"]) == ("127.0.0.1",
                                                                                    "6443")
        config = yaml.safe_load(await asyncio.to_thread(Path(got["KUBECONFIG"]).read_text))
        assert config["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:6443"
        assert config["users"][0]["user"]["token"] == "token-default-builder"
        assert config["contexts"][0]["context"]["namespace"] == "default"
        assert "PYTEST_CURRENT_TEST" not in got  # the host's environment stays out


async def test_no_kubeconfig_when_automount_is_off(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path, images=PrintEnvImages()) as (store, kubelet):
        store.put(SERVICEACCOUNTS, {"metadata": {"name": "quiet"},
                                    "automountServiceAccountToken": False})
        store.put(PODS, printenv_pod("off", [], automountServiceAccountToken=False))
        store.put(PODS, printenv_pod("sa-off", [], serviceAccountName="quiet"))
        assert "KUBECONFIG" not in await _printed_env(store, kubelet, "off")
        assert "KUBECONFIG" not in await _printed_env(store, kubelet, "sa-off")


async def test_missing_secret_holds_the_container_until_it_exists(tmp_path: Path) -> None:
    async with running_kubelet(tmp_path, images=PrintEnvImages()) as (store, kubelet):
        ref = {"secretKeyRef": {"name": "later", "key": "k"}}
        store.put(PODS, printenv_pod("wait", [{"name": "K", "valueFrom": ref}]))

        def waiting_reason() -> str:
            state = container_status(store, "wait").get("state", {})
            return str(state.get("waiting", {}).get("reason", ""))

        await store.wait_for(lambda: waiting_reason() == "CreateContainerConfigError")
        assert container_status(store, "wait")["state"]["waiting"]["message"] == \
            'secret "later" not found'
        assert status(store, "wait")["phase"] == "Pending"
        store.put(SECRETS, {"metadata": {"name": "later"}, "data": {"k": b64("v")}})
        assert (await _printed_env(store, kubelet, "wait"))["K"] == "v"


def test_expansion_rules() -> None:
    assert expand("$(A)$(B)", {"A": "1"}) == "1$(B)"
    assert expand("$$(A) $$ $", {"A": "1"}) == "$(A) $ $"


async def test_missing_key_is_a_config_error() -> None:
    async def secrets(ns: str, name: str) -> Obj | None:
        return {"data": {}}

    async def none(ns: str, name: str) -> Obj | None:
        return None

    resolver = EnvResolver(secrets, none, "sandbox")
    pod = {"metadata": {"name": "p", "namespace": "ns"}}
    container = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(ConfigError, match="couldn't find key k in Secret ns/s"):
        await resolver.container_env(pod, container)


def test_python_path_leaves_out_the_directory_of_a_script(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    script = tmp_path / "bench.py"
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path), "", "/somewhere/site-packages"])
    path = python_path()
    assert str(tmp_path) not in path
    assert "" not in path
    assert path[-1] == "/somewhere/site-packages"
    assert (Path(path[0]) / "modes" / "sandbox" / "node").is_dir()
