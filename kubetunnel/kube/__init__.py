"""Cluster access. The only package that imports the official ``kubernetes`` client."""

from kubetunnel.kube.access import KubeAccess
from kubetunnel.kube.client import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ApiError,
    KubeClient,
    resource_path,
)

__all__ = [
    "APPLY_PATCH",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "ApiError",
    "KubeAccess",
    "KubeClient",
    "resource_path",
]
