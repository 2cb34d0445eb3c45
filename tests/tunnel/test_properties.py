"""Property: whatever the interleaving of opens, data, FIN, RST and credit returns on both sides,
every byte arrives in order (a prefix of what was sent, all of it unless the stream was reset)
and every stream ends accounted for on both sides."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetunnel.tunnel.framing import OPEN_INBOUND, OPEN_OUTBOUND, Payload
from kubetunnel.tunnel.session import SessionOptions
from kubetunnel.tunnel.streams import Stream

from .conftest import Pair, make_pair

SIDES = ("cli", "agent")


@dataclass
class End:
    """One side's end of one stream: what it sent, what it got, what it has not yet 'read'."""

    stream: Stream
    sent: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)  # written by the app, not yet framed
    got: bytearray = field(default_factory=bytearray)
    unread: int = 0
    fin_wanted: bool = False
    fin_got: bool = False
    reset_got: bool = False

    def on_data(self, data: Payload) -> None:
        self.got += data
        self.unread += len(data)

    def on_fin(self) -> None:
        self.fin_got = True

    def on_reset(self, code: int, reason: str) -> None:
        self.reset_got = True

    def pump(self) -> None:
        stream = self.stream
        if stream.finished or stream.local_fin:
            return
        if self.pending:
            sent = stream.send_nowait(bytes(self.pending))
            self.sent += self.pending[:sent]
            del self.pending[:sent]
        if not self.pending and self.fin_wanted:
            stream.send_eof_nowait()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.sampled_from(SIDES)),
        st.tuples(st.just("send"), st.sampled_from(SIDES), st.integers(0, 9),
                  st.integers(1, 5000)),
        st.tuples(st.just("read"), st.sampled_from(SIDES), st.integers(0, 9),
                  st.integers(1, 6000)),
        st.tuples(st.just("fin"), st.sampled_from(SIDES), st.integers(0, 9)),
        st.tuples(st.just("reset"), st.sampled_from(SIDES), st.integers(0, 9)),
        st.tuples(st.just("turn"), st.integers(1, 4)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from(["pipe", "socket"]))
def test_random_interleavings_keep_bytes_in_order(program: list[tuple], kind: str) -> None:
    asyncio.run(_run(program, kind))


async def _run(program: list[tuple], kind: str) -> None:
    # A short flush timeout: a failing example (which hypothesis then shrinks, running it many
    # more times) must not spend seconds closing its sessions.
    options = SessionOptions(window=2048, frame_size=700, high_water=4096,
                             ping_interval=60, ping_timeout=120, flush_timeout=0.2)
    pair, tasks = await make_pair(kind, options)
    try:
        await _play(program, pair)
    finally:
        await pair.cli.aclose()
        await pair.agent.aclose()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _play(program: list[tuple], pair: Pair) -> None:
    sessions = {"cli": pair.cli, "agent": pair.agent}
    queues = {"cli": pair.cli_opened, "agent": pair.agent_opened}
    ends: list[dict[str, End]] = []  # per stream: side -> End
    counter = 0

    async def settle(turns: int = 3) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        for other in SIDES:
            while not queues[other].empty():
                stream = queues[other].get_nowait()
                for pairing in ends:
                    opener = next(iter(pairing.values()))
                    if opener.stream.id == stream.id and other not in pairing:
                        end = End(stream)
                        pairing[other] = end
                        stream.attach(end)
                        stream.on_writable = end.pump

    def end_of(side: str, index: int) -> End | None:
        if not ends:
            return None
        return ends[index % len(ends)].get(side)

    for op in program:
        if op[0] == "open":
            side = op[1]
            kind_open = OPEN_INBOUND if side == "agent" else OPEN_OUTBOUND
            counter += 1
            where = 80 if side == "agent" else f"h:{counter}"
            stream = sessions[side].open_stream(kind_open, where)
            end = End(stream)
            stream.attach(end)
            stream.on_writable = end.pump
            ends.append({side: end})
        elif op[0] == "send":
            end = end_of(op[1], op[2])
            if end is not None and not end.fin_wanted:
                end.pending += bytes((counter + i) % 251 for i in range(op[3]))
                counter += 1
                end.pump()
        elif op[0] == "read":
            end = end_of(op[1], op[2])
            if end is not None and end.unread:
                size = min(end.unread, op[3])
                end.unread -= size
                end.stream.consumed(size)
        elif op[0] == "fin":
            end = end_of(op[1], op[2])
            if end is not None:
                end.fin_wanted = True
                end.pump()
        elif op[0] == "reset":
            end = end_of(op[1], op[2])
            if end is not None:
                end.stream.reset()
        await settle(op[1] if op[0] == "turn" else 1)

    # Wind down: everyone finishes what they started and reads everything. Real sockets deliver
    # when the kernel does, not after a fixed number of loop turns: wait by the clock.
    await settle(5)
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        progress = False
        for pairing in ends:
            for end in pairing.values():
                end.fin_wanted = True
                end.pump()
                if end.unread:
                    end.stream.consumed(end.unread)
                    end.unread = 0
                    progress = True
        await settle(2)
        if not progress and not pair.cli.streams and not pair.agent.streams:
            break
        if not progress:
            await asyncio.sleep(0.001)

    assert not pair.cli.closed, pair.cli.close_reason
    assert not pair.agent.closed, pair.agent.close_reason
    assert not pair.cli.streams, pair.cli.streams
    assert not pair.agent.streams, pair.agent.streams
    for pairing in ends:
        assert set(pairing) == {"cli", "agent"}, "a stream never reached the other side"
        a, b = pairing["cli"], pairing["agent"]
        assert a.stream.finished
        assert b.stream.finished
        was_reset = a.stream.reset_code is not None or b.stream.reset_code is not None
        for sender, receiver in ((a, b), (b, a)):
            assert bytes(receiver.got) == bytes(sender.sent[:len(receiver.got)])
            if receiver.fin_got or not was_reset:
                assert bytes(receiver.got) == bytes(sender.sent)
                assert receiver.fin_got
        # A reset reaches the other side unless that side had already finished both ways (like
        # TCP, a RST after both FINs changes nothing).
        for one, other in ((a, b), (b, a)):
            if one.stream.reset_code is not None and other.stream.reset_code is None:
                assert other.stream.local_fin
                assert other.stream.remote_fin
