"""HTTP/2 (h2c, prior knowledge) test peers for the request router: a gRPC-like server that says
who answered and keeps what it got, and a raw ``h2`` client."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class H2Request:
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] | None


@dataclass
class H2Server:
    """A gRPC-like upstream: answers each stream with who it is, what it got, then trailers.
    ``hold`` (when set) is awaited before answering; ``padding`` bytes are added to each answer
    (its reader must acknowledge them, or the windows close)."""

    name: str
    server: asyncio.Server | None = None
    status: int = 200
    hold: asyncio.Event | None = None
    padding: int = 0
    connections: int = 0
    streams: int = 0
    resets: int = 0
    bodies: dict[int, bytearray] = field(default_factory=dict)  # of streams not ended yet
    received: list[H2Request] = field(default_factory=list)  # ended streams, in order
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    def protocol(self) -> asyncio.Protocol:
        server = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server.connections += 1
                self.transport: asyncio.Transport = transport  # type: ignore[assignment]
                self.conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
                self.conn.initiate_connection()
                self.transport.write(self.conn.data_to_send())
                self.headers: dict[int, list[tuple[str, str]]] = {}
                self.trailers: dict[int, list[tuple[str, str]]] = {}
                self.pending: dict[int, bytes] = {}  # answer bytes waiting for a window

            def data_received(self, data: bytes) -> None:
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.headers[event.stream_id] = list(event.headers)  # type: ignore[arg-type]
                        server.bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        server.bodies[event.stream_id] += event.data
                        self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                            event.stream_id)
                    elif isinstance(event, h2.events.TrailersReceived):
                        self.trailers[event.stream_id] = list(event.headers)  # type: ignore[arg-type]
                    elif isinstance(event, h2.events.StreamEnded):
                        self.ended(event.stream_id)
                    elif isinstance(event, h2.events.StreamReset):
                        server.resets += 1
                    elif isinstance(event, h2.events.WindowUpdated):
                        for sid in list(self.pending):
                            self.push(sid)
                self.transport.write(self.conn.data_to_send())

            def ended(self, sid: int) -> None:
                body = bytes(server.bodies.pop(sid))
                server.received.append(H2Request(self.headers[sid], body,
                                                 self.trailers.pop(sid, None)))
                if server.hold is None:
                    self.answer(sid, body)
                    return
                task = asyncio.ensure_future(self.answer_later(server.hold, sid, body))
                server._tasks.add(task)
                task.add_done_callback(server._tasks.discard)

            async def answer_later(self, hold: asyncio.Event, sid: int, body: bytes) -> None:
                await hold.wait()
                if not self.transport.is_closing():
                    self.answer(sid, body)
                    self.transport.write(self.conn.data_to_send())

            def answer(self, sid: int, body: bytes) -> None:
                server.streams += 1
                headers = dict(self.headers[sid])
                reply = json.dumps({"who": server.name, "dev": headers.get("x-dev"),
                                    "path": headers[":path"],
                                    "sha": hashlib.sha256(body).hexdigest()}).encode()
                self.conn.send_headers(sid, [(":status", str(server.status)),
                                             ("content-type", "application/grpc")])
                self.pending[sid] = reply + b" " * server.padding
                self.push(sid)

            def push(self, sid: int) -> None:
                data = self.pending[sid]
                while data:
                    room = min(self.conn.local_flow_control_window(sid),
                               self.conn.max_outbound_frame_size)
                    if room <= 0:
                        self.pending[sid] = data
                        return
                    self.conn.send_data(sid, data[:room])
                    data = data[room:]
                del self.pending[sid]
                self.conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

        return Proto()


async def start_h2(name: str, **kwargs: object) -> H2Server:
    made = H2Server(name, **kwargs)  # type: ignore[arg-type]
    made.server = await asyncio.get_running_loop().create_server(made.protocol, "127.0.0.1", 0)
    return made


async def raw_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                         h2.connection.H2Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return reader, writer, conn


async def events_until(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       conn: h2.connection.H2Connection, until: type) -> list[h2.events.Event]:
    seen: list[h2.events.Event] = []
    while not any(isinstance(e, until) for e in seen):
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "connection closed"
        seen += conn.receive_data(data)
        writer.write(conn.data_to_send())
    return seen
