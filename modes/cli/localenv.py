"""The options and the steps ``cli env`` and ``cli connect`` share to give a local process the
configuration of the Service's pods: choose the container, fetch, resolve, write files."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from kubetunnel.logging import get_logger
from modes.cli import envvars, volumes, workloads
from modes.cli.localfiles import MountTree

log = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
ROOT_VARIABLE = "KUBETUNNEL_ROOT"


@dataclass(frozen=True)
class LocalOptions:
    container: str | None = None
    workload: str | None = None
    no_secrets: bool = False
    env_file: Path | None = None
    mount: Path | None = None
    keep_mount: bool = False

    @property
    def wanted(self) -> bool:
        return self.env_file is not None or self.mount is not None


def local_options(f: F) -> F:
    """-c/--container, --workload, --no-secrets, --env-file, --mount, --keep-mount, gathered
    into one ``local: LocalOptions``."""

    @functools.wraps(f)
    def wrapper(*args: Any, container: str | None, workload: str | None, no_secrets: bool,
                env_file: str | None, mount: str | None, keep_mount: bool, **kwargs: Any) -> Any:
        if keep_mount and mount is None:
            raise click.UsageError("--keep-mount needs --mount DIR")
        options = LocalOptions(container, workload, no_secrets,
                               Path(env_file) if env_file else None,
                               Path(mount) if mount else None, keep_mount)
        return f(*args, local=options, **kwargs)

    decorated: Any = wrapper
    for decorator in reversed([
        click.option("-c", "--container", default=None,
                     help="The container whose environment to take (when the pods have several)."),
        click.option("--workload", default=None, metavar="KIND/NAME",
                     help="The workload whose pods to take it from (when the Service selects "
                          "pods of several)."),
        click.option("--no-secrets", is_flag=True,
                     help="Leave out what comes from Secrets (when you may not read them)."),
        click.option("--env-file", default=None, type=click.Path(dir_okay=False),
                     help="Write the environment to this file (mode 0600), e.g. for an IDE."),
        click.option("--mount", default=None, type=click.Path(file_okay=False),
                     help="Write the container's ConfigMap, Secret and downward-API volumes "
                          "under this directory, at their mount paths; KUBETUNNEL_ROOT names it."),
        click.option("--keep-mount", is_flag=True,
                     help="Leave the --mount files in place on exit."),
    ]):
        decorated = decorator(decorated)
    return decorated  # type: ignore[no-any-return]


@dataclass
class Prepared:
    """A chosen container with everything fetched: resolve again cheaply with other addresses."""

    choice: workloads.Choice
    sources: envvars.Sources
    options: LocalOptions

    def environment(self, addresses: Mapping[str, str] | None = None) -> envvars.Resolved:
        spec = self.sources.pod.get("spec") or {}
        links = spec.get("enableServiceLinks", True) is not False
        service_vars = envvars.service_env(self.sources.services, self.sources.namespace,
                                           links, addresses)
        resolved = envvars.resolve(self.sources, service_vars)
        if self.options.mount is not None:
            resolved.env[ROOT_VARIABLE] = str(self.options.mount.absolute())
        return resolved

    def mounts(self, env: Mapping[str, str]) -> volumes.Mounts:
        return volumes.mount_files(self.sources, env)


async def prepare(client: Any, service: Mapping[str, Any], options: LocalOptions) -> Prepared:
    """Choose the container and fetch its sources; resolve once, so that a missing ConfigMap or
    Secret is an error now, before anything is started or written."""
    found = await workloads.candidates(client, service)
    choice = workloads.choose(service, found, options.container, options.workload)
    sources = await workloads.sources(client, choice, no_secrets=options.no_secrets,
                                      with_volumes=options.mount is not None)
    prepared = Prepared(choice, sources, options)
    resolved = prepared.environment()
    if options.mount is not None:
        prepared.mounts(resolved.env)
    # Names only: values may come from Secrets.
    log.debug("env.resolved", container=choice.describe(), variables=sorted(resolved.env),
              from_secrets=sorted(resolved.from_secrets))
    return prepared


def write_mount(prepared: Prepared, env: Mapping[str, str]) -> tuple[MountTree, list[str]]:
    """Write the volume files under --mount; returns the tree (for removal) and warnings."""
    assert prepared.options.mount is not None
    mounts = prepared.mounts(env)
    tree = MountTree(prepared.options.mount)
    try:
        tree.write(mounts.files, mounts.directories)
    except BaseException:
        tree.remove()
        raise
    return tree, mounts.warnings


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """This machine's environment with the pod's on top: the process still finds its tools
    (PATH, HOME) unless the pod sets them itself."""
    return {**os.environ, **env}
