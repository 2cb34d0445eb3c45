"""The work kube-controller-manager does, run inside the sandbox against the in-process store.

Each controller follows the objects it needs through watches, keeps its own cache, and writes
only when what it wants differs from what it last wrote, so that a quiet cluster stays quiet.
"""
