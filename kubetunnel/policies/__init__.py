"""Network policies that let tunnel pods reach the operator, and nothing more.

The renderers are plugins (``networkpolicy``, ``cilium``) found through the registry; the names
below are for the operator and for tests, which need the stable policy names and labels.
"""

from kubetunnel.policies.rules import (
    AGENT_LABELS,
    EGRESS_POLICY_NAME,
    INGRESS_POLICY_NAME,
    MANAGED_BY,
    OPERATOR_LABELS,
    OPERATOR_PORTS,
    agent_egress,
    normalized,
    operator_ingress,
    plans,
)

__all__ = [
    "AGENT_LABELS",
    "EGRESS_POLICY_NAME",
    "INGRESS_POLICY_NAME",
    "MANAGED_BY",
    "OPERATOR_LABELS",
    "OPERATOR_PORTS",
    "agent_egress",
    "normalized",
    "operator_ingress",
    "plans",
]
