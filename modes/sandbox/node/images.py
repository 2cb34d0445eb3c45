"""Which container images the sandbox can run, and the command line each becomes.

There is no container engine, so an "image" is a promise about which program to start. The
KubeTunnel image's ENTRYPOINT is ``kubetunnel``; running it here means running the very code of
this sandbox (``python -m modes``) with the same arguments, which is what makes the sandbox an
honest test bed for the product. The sample workloads ship inside the sandbox. Anything else
cannot run, and the pod says so instead of pretending.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from typing import Any

Obj = dict[str, Any]

# Repositories (registry and tag stripped) that are the KubeTunnel image.
DEFAULT_KUBETUNNEL_IMAGES = ("kubetunnel", "*/kubetunnel")
ECHO_IMAGES = ("kubetunnel/sandbox-echo", "*/kubetunnel/sandbox-echo")
ENTRYPOINT = "kubetunnel"

# The waiting reason kubelet gives for an image it will not pull; the nearest real equivalent.
UNRUNNABLE_REASON = "ErrImageNeverPull"


@dataclasses.dataclass(frozen=True)
class Launch:
    """A runnable container: the argv to exec and whether it is Python code of this package."""

    argv: list[str]
    python: bool = True


class Unrunnable(Exception):
    """The container cannot run in the sandbox; the message is shown in the pod's status."""


def repository(image: str) -> str:
    """``ghcr.io/org/kubetunnel:1.2@sha256:...`` -> ``ghcr.io/org/kubetunnel``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


class ImagePolicy:
    """Maps a container to a process, or refuses it with a message for the pod's status."""

    def __init__(self, kubetunnel_images: tuple[str, ...] = DEFAULT_KUBETUNNEL_IMAGES) -> None:
        self.kubetunnel_images = kubetunnel_images

    def launch(self, container: Obj) -> Launch:
        image = str(container.get("image") or "")
        repo = repository(image)
        command = [str(c) for c in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        if _matches(repo, ECHO_IMAGES):
            # The echo image has no arguments of its own; command/args are ignored like a CMD.
            return Launch([sys.executable, "-m", "modes.sandbox.node.echo"])
        if _matches(repo, self.kubetunnel_images):
            if command and command[0].rsplit("/", 1)[-1] != ENTRYPOINT:
                raise Unrunnable(
                    f'container command {command[0]!r} of image "{image}" cannot run in the '
                    f"sandbox: only the {ENTRYPOINT!r} entrypoint of the KubeTunnel image runs here"
                )
            return Launch([sys.executable, "-m", "modes", *command[1:], *args])
        raise Unrunnable(
            f'Container image "{image}" cannot run in the sandbox: it runs only the KubeTunnel '
            f"image (repositories {', '.join(self.kubetunnel_images)}) and the sample workload "
            f"kubetunnel/sandbox-echo as local processes"
        )


def _matches(repo: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(repo, p) for p in patterns)
