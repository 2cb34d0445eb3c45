"""Static checks of the Dockerfile: no Docker engine runs here, so check what a build would trip
over (missing or ignored COPY sources, a COPY --from of a stage that does not exist yet) and
what the manifests rely on (the entrypoint, a numeric non-root user, a writable SHIV_ROOT).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11-slim"
ZIPAPP_IN_IMAGE = "/usr/local/bin/kubetunnel"


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str
    line: int


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comments, as the Dockerfile parser does."""
    joined: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        joined.append((start, buffer + stripped))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    return joined


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {number}: cannot read FROM {rest!r}"
            stages.append(Stage(len(stages), words[0], name))
            continue
        assert stages, f"line {number}: {keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, rest, number))
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"line {instruction.line}: not the JSON exec form"
    return [str(v) for v in value]


def copy_parts(instruction: Instruction) -> tuple[list[str], str]:
    words = (
        exec_form(instruction)
        if instruction.args.startswith("[")
        else shlex.split(instruction.args)
    )
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return words[:-1], words[-1]


def env_values(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            name, sep, value = word.partition("=")
            assert sep, f"line {instruction.line}: use ENV NAME=value"
            values[name] = value
    return values


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as the builder reads it: last match wins, `!` re-includes, `**` spans
    directories, and a pattern that matches a directory matches everything inside it."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.removeprefix("!").strip().strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", line):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        patterns.append((negate, re.compile(regex + "$")))
    return patterns


def is_ignored(relative: str) -> bool:
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in ignore_patterns():
        if any(pattern.match(c) for c in candidates):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def operator_deployment() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "manifests" / "deployment.yaml").read_text()))


def test_two_stages_on_the_slim_python_image(stages: list[Stage]) -> None:
    assert [s.image for s in stages] == [BASE_IMAGE, BASE_IMAGE]
    assert stages[0].name, "the build stage needs a name for COPY --from"


def test_build_stage_builds_the_zipapp_with_the_build_extra(stages: list[Stage]) -> None:
    commands = " && ".join(i.args for i in stages[0].all("RUN"))
    assert re.search(r"""pip install ["']?\.\[build\]""", commands)
    assert "python build.py" in commands
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("shiv") for req in extras["build"])


def test_every_copy_source_is_in_the_build_context(stages: list[Stage]) -> None:
    copied = 0
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "from" in instruction.flags:
                continue
            sources, _ = copy_parts(instruction)
            for source in sources:
                matches = list(ROOT.glob(source.rstrip("/")))
                assert matches, f"line {instruction.line}: COPY source {source!r} does not exist"
                assert not any(is_ignored(str(m.relative_to(ROOT))) for m in matches), (
                    f"line {instruction.line}: COPY source {source!r} is excluded by .dockerignore"
                )
                copied += 1
    assert copied >= 4


def test_copied_packages_are_not_emptied_by_dockerignore() -> None:
    for package in ("kubetunnel", "modes"):
        sources = [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]
        assert sources
        for path in sources:
            assert not is_ignored(str(path.relative_to(ROOT))), path


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "build/lib/kubetunnel/registry.py",
        "dist/kubetunnel-0.1.0.tar.gz",
        "kubetunnel.egg-info/PKG-INFO",
        "kubetunnel/__pycache__/registry.cpython-311.pyc",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json",
        "tests/test_dockerfile.py",
    ],
)
def test_dockerignore_keeps_junk_out_of_the_context(path: str) -> None:
    assert is_ignored(path)


def test_copy_from_names_an_earlier_stage(stages: list[Stage]) -> None:
    seen = 0
    for stage in stages:
        earlier = {s.name for s in stages[: stage.index]} | {
            str(s.index) for s in stages[: stage.index]
        }
        for instruction in stage.all("COPY"):
            if "from" in instruction.flags:
                assert instruction.flags["from"] in earlier, (
                    f"line {instruction.line}: --from={instruction.flags['from']} "
                    "is not an earlier stage"
                )
                seen += 1
    assert seen >= 1


def test_final_stage_holds_only_the_zipapp(stages: list[Stage]) -> None:
    final = stages[-1]
    copies = final.all("COPY") + final.all("ADD")
    assert len(copies) == 1
    (copy,) = copies
    assert copy.keyword == "COPY"
    assert copy.flags.get("from") == stages[0].name
    sources, destination = copy_parts(copy)
    assert len(sources) == 1
    assert destination == ZIPAPP_IN_IMAGE
    # The build stage puts the zipapp where the final stage takes it from.
    assert any(sources[0] in i.args for i in stages[0].all("RUN"))


def test_final_stage_runs_as_a_fixed_non_root_uid(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must set USER"
    user = users[-1].args
    # Numeric, so the kubelet can enforce runAsNonRoot without resolving a name.
    assert user.isdigit(), f"USER {user} should be a numeric UID"
    assert int(user) != 0
    created = " ".join(i.args for i in final.all("RUN"))
    assert re.search(rf"useradd\b.*--uid {user}\b", created)
    pod = operator_deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user)
    # Nothing runs as root after USER.
    assert final.instructions[-3:] == [users[-1], *final.all("ENTRYPOINT"), *final.all("CMD")]


def test_entrypoint_and_default_command(stages: list[Stage]) -> None:
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert exec_form(entrypoint) == ["kubetunnel"]
    assert exec_form(cmd) == ["operator"]
    env = env_values(final)
    assert ZIPAPP_IN_IMAGE.rsplit("/", 1)[0] in env.get("PATH", "/usr/local/bin:/usr/bin:/bin")


def test_shiv_unpacks_into_the_deployments_writable_tmp(stages: list[Stage]) -> None:
    shiv_root = env_values(stages[-1]).get("SHIV_ROOT")
    assert shiv_root, "without SHIV_ROOT shiv unpacks into the (missing, read-only) home"
    pod = operator_deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    assert any(shiv_root == w or shiv_root.startswith(w.rstrip("/") + "/") for w in writable)
