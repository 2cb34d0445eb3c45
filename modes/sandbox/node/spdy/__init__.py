"""SPDY/3.1, as much of it as Kubernetes' port-forward uses, on the server side.

kubectl and kube-apiserver still speak SPDY to kubelets (moby/spdystream underneath), and
kubectl 1.30+ tunnels the same byte stream through a websocket. ``framing`` turns bytes into
frames and back, ``sessions`` runs one connection's streams, ``forwarding`` pairs them into
port-forwards, ``upgrades`` gets the byte stream out of an aiohttp request.
"""
