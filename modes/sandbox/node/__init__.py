"""The sandbox's node: a process kubelet, a loopback kube-proxy, pod port-forward and pod logs.

Everything here talks to the API objects through :class:`modes.sandbox.node.store.NodeStore`,
a small Protocol, so that it can be tested against an in-memory fake and run inside the sandbox
process against the real store without either knowing about the other.
"""
