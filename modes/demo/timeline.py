"""The demo's running account of who answered each request, one line per run of answers."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import click


def clock(seconds: float) -> str:
    """``mm:ss.d`` since the timeline started: short, and sorts as text."""
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


@dataclass
class _Run:
    started: float
    who: str
    details: list[str]
    count: int = 1
    remark: str = ""


@dataclass
class Timeline:
    """Who answered, as it happens. Requests go out every 200 ms, so a run of answers from the
    same side is one line with a count (the cluster's pods take turns; each turn is not news).
    On a terminal the line updates in place; in a log it is written when the run ends, so the
    lines stay in time order with the notes between them.
    """

    started: float = field(default_factory=time.monotonic)
    tty: bool = field(default_factory=lambda: sys.stdout.isatty())
    counts: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, str]] = field(default_factory=list)
    _run: _Run | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, who: str, detail: str) -> None:
        """One answer: ``who`` is ``cluster``, ``local`` or ``error``."""
        at = self.now()
        self.answers.append((at, who))
        self.counts[who] += 1
        run = self._run
        if run is None or run.who != who or (who == "error" and detail not in run.details):
            self.flush()
            self._run = _Run(at, who, [detail])
        else:
            run.count += 1
            if detail not in run.details:
                run.details.append(detail)
        self._redraw()

    def annotate(self, remark: str) -> None:
        """A measurement about the current run (how long it took to start), on its line."""
        if self._run is None:
            self.note(remark)
            return
        self._run.remark = remark
        self._redraw()

    def note(self, text: str) -> None:
        """What the demo does next, between the answers."""
        self.flush()
        click.echo(f"  {clock(self.now())}  -- {text}")

    def flush(self) -> None:
        if self._run is not None:
            click.echo() if self.tty else click.echo(self._line())
            self._run = None

    def first(self, who: str, after: float) -> float | None:
        return next((at for at, w in self.answers if w == who and at >= after), None)

    def last(self) -> str | None:
        return self.answers[-1][1] if self.answers else None

    def _redraw(self) -> None:
        if self.tty and self._run is not None:
            click.echo("\r" + self._line() + "\x1b[K", nl=False)

    def _line(self) -> str:
        assert self._run is not None
        run = self._run
        shown = ", ".join(run.details[:3]) + (", ..." if len(run.details) > 3 else "")
        count = f"  (x{run.count})" if run.count > 1 else ""
        remark = f"   <- {run.remark}" if run.remark else ""
        return f"  {clock(run.started)}  {run.who:<7}  {shown}{count}{remark}"
