"""The tunnel-record store as the CLI sees it: chosen by ``--store``, built from kube access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click

from kubetunnel.console import PluginChoice
from kubetunnel.plugins import Store, StoreSettings
from kubetunnel.registry import get_registry


def store_option(f: Any) -> Any:
    return click.option(
        "--store", type=PluginChoice("store"), default="crd", show_default=True,
        help="Where tunnel records live (must match the operator's --store).",
    )(f)


@asynccontextmanager
async def open_store(name: str, access: Any) -> AsyncIterator[Store]:
    store: Store = get_registry().create("store", name, StoreSettings(kube=access))
    try:
        yield store
    finally:
        await store.aclose()
