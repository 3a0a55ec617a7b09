"""A one-line text progress bar with ETA, for training, the test phase, photos and evaluation.

On a terminal it redraws one line; in logs and pipes it prints a line about every 10 % so the
log stays short.
"""

from __future__ import annotations

import sys
import time


def _fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """Tiny text progress bar with ETA.

    On a terminal it redraws one line; otherwise (logs, pipes) it prints a
    line about every 10% so logs stay short.  ``enabled=False`` silences it.
    """

    def __init__(self, total: int, label: str = "", stream=None, width: int = 28,
                 enabled: bool = True):
        self.total = max(0, int(total))
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._next_pct = 10
        self._last_len = 0
        self._closed = False

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if not self.total:  # unknown length: a line every 100 items off-terminal
            if not self._tty and self.done % 100:
                return
        else:
            pct = 100 * self.done / self.total
            if not self._tty and pct < self._next_pct and self.done < self.total:
                return
            while self._next_pct <= pct:
                self._next_pct += 10
        line = self._line(note)
        if self._tty:
            pad = max(0, self._last_len - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._last_len = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _line(self, note: str) -> str:
        elapsed = time.monotonic() - self.start
        if self.total:
            frac = min(1.0, self.done / self.total)
            fill = int(round(frac * self.width))
            bar = "[" + "=" * max(0, fill - 1) + (">" if 0 < fill < self.width else
                                                  "=" if fill else "") \
                + "." * (self.width - fill) + "]"
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            s = f"{self.label} {bar} {self.done}/{self.total}"
            s += f" ETA {_fmt_seconds(eta)}" if self.done < self.total else \
                f" {_fmt_seconds(elapsed)}"
        else:
            s = f"{self.label} {self.done} {_fmt_seconds(elapsed)}"
        if note:
            s += f" {note[:40]}"
        return s.strip()

    def close(self) -> None:
        if self.enabled and self._tty and not self._closed:
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True
