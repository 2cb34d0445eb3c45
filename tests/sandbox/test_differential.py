"""The builtin API server against kube-apiserver: one request sequence, answers compared.

Both control planes get exactly the requests of ``tests/sandbox/diffsteps.py`` on a fresh start;
every answer is compared as sent (status code and JSON body) with volatile values masked
(``tests/sandbox/differencing.py``). What still differs must be in ``KNOWN`` below, which
mirrors the table "Known deviations from kube-apiserver" in docs/sandbox.md: a new difference
fails the test, and so does an entry that no longer differs (remove it once fixed).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from kubetunnel.errors import KubetunnelError
from modes.sandbox.controlplane import binary
from modes.sandbox.testing import running_sandbox
from tests.sandbox.differencing import Run, compare, describe, run_steps
from tests.sandbox.diffsteps import STEPS

pytestmark = pytest.mark.timeout(300)

MANAGED = "*managedFields*"
# (step, JSON path as a shell-style pattern, so "[" is a character class) -> the reason, as
# docs/sandbox.md words it.
KNOWN: dict[tuple[str, str], str] = {
    **{(step, MANAGED): "managedFields: '.' markers and server-set fields" for step in (
        "ns-create", "ns-get", "cm-apply", "cm-apply-again", "cm-apply-drop", "cm-apply-force",
        "cm-list-label-not", "cm-list-label-exists-not", "cm-list-field-not", "cm-list-limit",
        "cm-watch", "svc-create", "svc-get", "svc-patch-strategic", "svc-create-headless",
        "svc-create-bad-name", "svc-list", "svc-delete", "cr-apply", "cr-apply-again",
        "cr-watch", "pod-create", "deploy-create")},
    ("sa-token", MANAGED): "managedFields of TokenRequest and SelfSubjectAccessReview answers",
    ("rbac-ssar", MANAGED): "managedFields of TokenRequest and SelfSubjectAccessReview answers",
    ("cm-list-label-bad", "message"): "wording of parse errors",
    ("cm-create-bad-json", "message"): "wording of parse errors",
    ("cm-create-wrong-type", "message"): "wording of parse errors",
    ("svc-create-headless", "spec.ipFamil*"): "single-stack Services",
    ("pod-create-invalid", "details.causes*"): "order of causes",
    ("pod-create-invalid", "message"): "order of causes",
    ("pod-update-spec", "details.causes*.message"): "no diff in the pod update message",
    ("pod-update-spec", "message"): "no diff in the pod update message",
    ("unknown-group", ""): "404 of an unknown API group",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    try:
        binary.locate()
    except KubetunnelError as exc:  # a clear failure, never a silent skip: CI has the binary
        pytest.fail(f"the real control plane is needed: {exc}")
    builtin_dir: Path = tmp_path_factory.mktemp("diff-builtin")
    real_dir: Path = tmp_path_factory.mktemp("diff-real")
    with running_sandbox(real_dir, control_plane="real") as real:
        real_run = run_steps(real, STEPS)
    with running_sandbox(builtin_dir) as builtin:
        builtin_run = run_steps(builtin, STEPS)
    return builtin_run, real_run


@pytest.fixture(scope="module")
def found(runs: tuple[Run, Run]) -> dict[str, dict[str, tuple[object, object]]]:
    return compare(STEPS, *runs)


def _known(step: str, path: str) -> str | None:
    for (known_step, pattern), reason in KNOWN.items():
        if known_step == step and fnmatch.fnmatchcase(path, pattern):
            return reason
    return None


@pytest.mark.parametrize("step", [s.name for s in STEPS])
def test_answers_match_kube_apiserver(
    step: str, found: dict[str, dict[str, tuple[object, object]]]
) -> None:
    new = {path: values for path, values in found[step].items() if _known(step, path) is None}
    assert not new, (f"{step}: the builtin API server answers differently from kube-apiserver "
                     f"(fix it, or add a known deviation here and in docs/sandbox.md):\n"
                     + describe(new))


def test_every_known_deviation_still_differs(
    found: dict[str, dict[str, tuple[object, object]]]
) -> None:
    stale = [key for key in KNOWN
             if not any(fnmatch.fnmatchcase(path, key[1]) for path in found.get(key[0], {}))]
    assert not stale, f"fixed deviations still listed in KNOWN (remove them): {stale}"


def test_known_deviations_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sandbox.md").read_text()
    missing = sorted({reason for reason in KNOWN.values() if reason not in doc})
    assert not missing, f"known deviations missing from docs/sandbox.md: {missing}"


def test_steps_have_unique_names() -> None:
    names = [s.name for s in STEPS]
    assert len(names) == len(set(names))
