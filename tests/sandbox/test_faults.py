"""``sandbox up --faults FILE``: injected API errors and watch ends, for one user only, switched
on and off by rewriting the file while the sandbox runs."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from modes.sandbox.testing import RunningSandbox, running_sandbox


def _get(sandbox: RunningSandbox, path: str, timeout: float = 10) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(sandbox.url + path,  # noqa: S310 - https to the sandbox
                                     headers={"Authorization": f"Bearer {sandbox.token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_faults_for_listed_users_only_and_switched_by_the_file(tmp_path: Path) -> None:
    plan = tmp_path / "faults.json"
    with running_sandbox(tmp_path, extra_args=("--no-node", "--faults", str(plan))) as sandbox:
        assert _get(sandbox, "/api/v1/namespaces")[0] == 200  # no file: no faults
        plan.write_text(json.dumps({"users": ["sandbox-admin"], "error_rate": 1.0,
                                    "codes": [429]}))
        code, body = _get(sandbox, "/api/v1/namespaces")
        assert code == 429
        assert json.loads(body)["reason"] == "TooManyRequests"
        plan.write_text(json.dumps({"users": ["someone-else"], "error_rate": 1.0}))
        assert _get(sandbox, "/api/v1/namespaces")[0] == 200
        # A watch asked for five minutes ends after a second: the read returns at all.
        plan.write_text(json.dumps({"watch_end_after": [1, 1]}))
        code, _ = _get(sandbox, "/api/v1/namespaces?watch=true&timeoutSeconds=300", timeout=30)
        assert code == 200
        plan.write_text("")
        assert _get(sandbox, "/api/v1/namespaces")[0] == 200
