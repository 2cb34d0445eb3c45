"""A gRPC-like local process for the end-to-end tests: HTTP/2 with prior knowledge (h2c) that
answers every stream with ``h2c:<name>`` and a ``grpc-status`` trailer."""

from __future__ import annotations

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve(conn_sock: socket.socket, name: str) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn_sock.sendall(conn.data_to_send())
    with conn_sock:
        while data := conn_sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    conn.send_headers(sid, [(":status", "200"),
                                            ("content-type", "application/grpc")])
                    conn.send_data(sid, f"h2c:{name}".encode())
                    conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            conn_sock.sendall(conn.data_to_send())


def main() -> None:
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, sys.argv[2]), daemon=True).start()


if __name__ == "__main__":
    main()
