"""What the built-in renderers share: the plugin protocol on top of one ``render_plan`` each.

An engine only decides how a :class:`~kubetunnel.policies.rules.Plan` looks as its own object;
which plans exist, and what they allow, is decided once in :mod:`kubetunnel.policies.rules`.
"""

from __future__ import annotations

import abc
from typing import Any

from kubetunnel.plugins import PolicyRequest
from kubetunnel.policies import rules


class PlanRenderer(abc.ABC):
    """A :class:`kubetunnel.plugins.PolicyRenderer` plus per-namespace calls for the operator."""

    def __init__(self, settings: object | None = None) -> None:
        # No settings yet; the registry passes the kind's settings object to every factory.
        self.settings = settings

    def render(self, request: PolicyRequest) -> list[dict[str, Any]]:
        return [self.render_plan(plan) for plan in rules.plans(request)]

    def egress_policy(self, namespace: str, request: PolicyRequest) -> dict[str, Any]:
        """The egress policy of one application namespace (``request.app_namespaces`` unused)."""
        return self.render_plan(rules.agent_egress(namespace, request))

    def ingress_policy(self, request: PolicyRequest) -> dict[str, Any]:
        """The operator's ingress policy admitting exactly ``request.app_namespaces``."""
        return self.render_plan(rules.operator_ingress(request))

    @abc.abstractmethod
    def render_plan(self, plan: rules.Plan) -> dict[str, Any]:
        """One complete manifest for one plan."""
