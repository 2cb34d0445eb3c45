"""Options every cluster-facing command shares, spelled as kubectl spells them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from kubetunnel.records import check_dns_label

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: str | None
    context: str | None
    namespace: str | None

    async def load(self) -> Any:
        """A :class:`kubetunnel.kube.KubeAccess`; reading kubeconfig and exec plugins blocks."""
        from kubetunnel.kube import KubeAccess

        return await asyncio.to_thread(
            KubeAccess.load, self.kubeconfig, self.context, self.namespace
        )


def _namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_dns_label(value, "namespace")
    except Exception as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


def kube_options(f: F) -> F:
    """--kubeconfig, --context and -n/--namespace, gathered into one ``kube: KubeOptions``."""
    return _kube_options(f, with_namespace=True)


def kube_access_options(f: F) -> F:
    """--kubeconfig and --context only: for commands where ``--namespace`` means something else
    (``install``: the operator's namespace)."""
    return _kube_options(f, with_namespace=False)


def _kube_options(func: F, *, with_namespace: bool) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, kubeconfig: str | None, context: str | None, **kwargs: Any) -> Any:
        namespace = kwargs.pop("namespace") if with_namespace else None
        return func(*args, kube=KubeOptions(kubeconfig, context, namespace), **kwargs)

    decorated: Any = wrapper
    if with_namespace:
        decorated = click.option(
            "-n", "--namespace", default=None, callback=_namespace,
            help="Namespace (default: the context's namespace, as kubectl).",
        )(decorated)
    decorated = click.option(
        "--context", default=None, help="The kubeconfig context to use (default: current)."
    )(decorated)
    return click.option(  # type: ignore[no-any-return]
        "--kubeconfig", default=None,
        help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
    )(decorated)
