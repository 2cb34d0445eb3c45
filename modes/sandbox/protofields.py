"""The field numbers of the Kubernetes messages the sandbox decodes from protobuf.

One table per message: field number -> JSON name and kind. The numbers are those Kubernetes
publishes in the ``generated.proto`` file of each API group (they never change or get reused);
``modes.sandbox.protobuf`` walks the wire format with them. Only the kinds kubectl's typed
commands send are here, with the fields those commands can fill in; a field outside the table
that carries a value makes the decoder refuse the body rather than drop it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    # "string", "bytes" (base64 in JSON), "raw" (the bytes themselves), "int", "bool", "time",
    # "intorstring", "json" (a FieldsV1 blob), a message name, or "map:<value kind>".
    kind: str = "string"
    repeated: bool = False
    pointer: bool = False  # a Go pointer: sent only when set, so a zero value means zero


def _f(name: str, kind: str = "string", *, repeated: bool = False,
       pointer: bool = False) -> Field:
    return Field(name, kind, repeated, pointer)


MESSAGES: dict[str, dict[int, Field]] = {
    "Unknown": {1: _f("typeMeta", "TypeMeta"), 2: _f("raw", "raw"),
                3: _f("contentEncoding"), 4: _f("contentType")},
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "ObjectMeta": {
        1: _f("name"), 2: _f("generateName"), 3: _f("namespace"), 4: _f("selfLink"),
        5: _f("uid"), 6: _f("resourceVersion"), 7: _f("generation", "int"),
        8: _f("creationTimestamp", "time"), 9: _f("deletionTimestamp", "time"),
        10: _f("deletionGracePeriodSeconds", "int", pointer=True),
        11: _f("labels", "map:string"), 12: _f("annotations", "map:string"),
        13: _f("ownerReferences", "OwnerReference", repeated=True),
        14: _f("finalizers", repeated=True),
        17: _f("managedFields", "ManagedFieldsEntry", repeated=True),
    },
    "OwnerReference": {1: _f("kind"), 3: _f("name"), 4: _f("uid"), 5: _f("apiVersion"),
                       6: _f("controller", "bool", pointer=True),
                       7: _f("blockOwnerDeletion", "bool", pointer=True)},
    "ManagedFieldsEntry": {1: _f("manager"), 2: _f("operation"), 3: _f("apiVersion"),
                           4: _f("time", "time"), 6: _f("fieldsType"),
                           7: _f("fieldsV1", "FieldsV1"), 8: _f("subresource")},
    "FieldsV1": {1: _f("Raw", "json")},
    "LabelSelector": {1: _f("matchLabels", "map:string"),
                      2: _f("matchExpressions", "LabelSelectorRequirement", repeated=True)},
    "LabelSelectorRequirement": {1: _f("key"), 2: _f("operator"),
                                 3: _f("values", repeated=True)},
    # core/v1
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec"),
                  3: _f("status", "NamespaceStatus")},
    "NamespaceSpec": {1: _f("finalizers", repeated=True)},
    "NamespaceStatus": {1: _f("phase")},
    "ConfigMap": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:string"),
                  3: _f("binaryData", "map:bytes"),
                  4: _f("immutable", "bool", pointer=True)},
    "Secret": {1: _f("metadata", "ObjectMeta"), 2: _f("data", "map:bytes"), 3: _f("type"),
               4: _f("stringData", "map:string"), 5: _f("immutable", "bool", pointer=True)},
    "ServiceAccount": {1: _f("metadata", "ObjectMeta"),
                       2: _f("secrets", "ObjectReference", repeated=True),
                       3: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
                       4: _f("automountServiceAccountToken", "bool", pointer=True)},
    "ObjectReference": {1: _f("kind"), 2: _f("namespace"), 3: _f("name"), 4: _f("uid"),
                        5: _f("apiVersion"), 6: _f("resourceVersion"), 7: _f("fieldPath")},
    "LocalObjectReference": {1: _f("name")},
    "Service": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "ServiceSpec"),
                3: _f("status", "ServiceStatus")},
    "ServiceSpec": {
        1: _f("ports", "ServicePort", repeated=True), 2: _f("selector", "map:string"),
        3: _f("clusterIP"), 4: _f("type"), 5: _f("externalIPs", repeated=True),
        7: _f("sessionAffinity"), 8: _f("loadBalancerIP"),
        9: _f("loadBalancerSourceRanges", repeated=True), 10: _f("externalName"),
        11: _f("externalTrafficPolicy"), 12: _f("healthCheckNodePort", "int"),
        13: _f("publishNotReadyAddresses", "bool"), 17: _f("ipFamilyPolicy", pointer=True),
        18: _f("clusterIPs", repeated=True), 19: _f("ipFamilies", repeated=True),
        20: _f("allocateLoadBalancerNodePorts", "bool", pointer=True),
        21: _f("loadBalancerClass", pointer=True), 22: _f("internalTrafficPolicy", pointer=True),
    },
    "ServicePort": {1: _f("name"), 2: _f("protocol"), 3: _f("port", "int"),
                    4: _f("targetPort", "intorstring"), 5: _f("nodePort", "int"),
                    6: _f("appProtocol", pointer=True)},
    "ServiceStatus": {},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", repeated=True), 3: _f("restartPolicy"),
        4: _f("terminationGracePeriodSeconds", "int", pointer=True),
        5: _f("activeDeadlineSeconds", "int", pointer=True), 6: _f("dnsPolicy"),
        7: _f("nodeSelector", "map:string"), 8: _f("serviceAccountName"),
        9: _f("serviceAccount"), 10: _f("nodeName"), 11: _f("hostNetwork", "bool"),
        12: _f("hostPID", "bool"), 13: _f("hostIPC", "bool"),
        15: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
        16: _f("hostname"), 17: _f("subdomain"), 19: _f("schedulerName"),
        20: _f("initContainers", "Container", repeated=True),
        21: _f("automountServiceAccountToken", "bool", pointer=True),
        24: _f("priorityClassName"), 30: _f("enableServiceLinks", "bool", pointer=True),
    },
    "Container": {
        1: _f("name"), 2: _f("image"), 3: _f("command", repeated=True),
        4: _f("args", repeated=True), 5: _f("workingDir"),
        6: _f("ports", "ContainerPort", repeated=True), 7: _f("env", "EnvVar", repeated=True),
        8: _f("resources", "ResourceRequirements"), 13: _f("terminationMessagePath"),
        14: _f("imagePullPolicy"), 16: _f("stdin", "bool"), 17: _f("stdinOnce", "bool"),
        18: _f("tty", "bool"), 20: _f("terminationMessagePolicy"),
    },
    "ContainerPort": {1: _f("name"), 2: _f("hostPort", "int"), 3: _f("containerPort", "int"),
                      4: _f("protocol"), 5: _f("hostIP")},
    "EnvVar": {1: _f("name"), 2: _f("value")},
    "ResourceRequirements": {1: _f("limits", "map:Quantity"), 2: _f("requests", "map:Quantity")},
    "Quantity": {1: _f("string")},
    # apps/v1
    "Deployment": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "DeploymentSpec"),
                   3: _f("status", "DeploymentStatus")},
    "DeploymentSpec": {
        1: _f("replicas", "int", pointer=True), 2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"), 4: _f("strategy", "DeploymentStrategy"),
        5: _f("minReadySeconds", "int"), 6: _f("revisionHistoryLimit", "int", pointer=True),
        7: _f("paused", "bool"), 9: _f("progressDeadlineSeconds", "int", pointer=True),
    },
    "DeploymentStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: _f("maxUnavailable", "intorstring", pointer=True),
                                2: _f("maxSurge", "intorstring", pointer=True)},
    "DeploymentStatus": {1: _f("observedGeneration", "int"), 2: _f("replicas", "int"),
                         3: _f("updatedReplicas", "int"), 4: _f("availableReplicas", "int"),
                         5: _f("unavailableReplicas", "int"), 7: _f("readyReplicas", "int")},
    # rbac.authorization.k8s.io/v1
    "Role": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", repeated=True)},
    "ClusterRole": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", repeated=True),
                    3: _f("aggregationRule", "AggregationRule")},
    "AggregationRule": {1: _f("clusterRoleSelectors", "LabelSelector", repeated=True)},
    "PolicyRule": {1: _f("verbs", repeated=True), 2: _f("apiGroups", repeated=True),
                   3: _f("resources", repeated=True), 4: _f("resourceNames", repeated=True),
                   5: _f("nonResourceURLs", repeated=True)},
    "RoleBinding": {1: _f("metadata", "ObjectMeta"), 2: _f("subjects", "Subject", repeated=True),
                    3: _f("roleRef", "RoleRef")},
    "Subject": {1: _f("kind"), 2: _f("apiGroup"), 3: _f("name"), 4: _f("namespace")},
    "RoleRef": {1: _f("apiGroup"), 2: _f("kind"), 3: _f("name")},
    # authentication.k8s.io/v1
    "TokenRequest": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "TokenRequestSpec"),
                     3: _f("status", "TokenRequestStatus")},
    "TokenRequestSpec": {1: _f("audiences", repeated=True),
                         3: _f("boundObjectRef", "BoundObjectReference"),
                         4: _f("expirationSeconds", "int", pointer=True)},
    "BoundObjectReference": {1: _f("kind"), 2: _f("apiVersion"), 3: _f("name"), 4: _f("uid")},
    "TokenRequestStatus": {1: _f("token"), 2: _f("expirationTimestamp", "time")},
    # authorization.k8s.io/v1
    "SelfSubjectAccessReview": {1: _f("metadata", "ObjectMeta"),
                                2: _f("spec", "SelfSubjectAccessReviewSpec"),
                                3: _f("status", "SubjectAccessReviewStatus")},
    "SelfSubjectAccessReviewSpec": {1: _f("resourceAttributes", "ResourceAttributes"),
                                    2: _f("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: _f("namespace"), 2: _f("verb"), 3: _f("group"), 4: _f("version"),
                           5: _f("resource"), 6: _f("subresource"), 7: _f("name")},
    "NonResourceAttributes": {1: _f("path"), 2: _f("verb")},
    "SelfSubjectRulesReview": {1: _f("metadata", "ObjectMeta"),
                               2: _f("spec", "SelfSubjectRulesReviewSpec")},
    "SelfSubjectRulesReviewSpec": {1: _f("namespace")},
    "SubjectAccessReviewStatus": {1: _f("allowed", "bool"), 2: _f("reason"),
                                  3: _f("evaluationError"), 4: _f("denied", "bool")},
}

# (apiVersion, kind) -> the message of the object.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "Service"): "Service",
    ("apps/v1", "Deployment"): "Deployment",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",
}
