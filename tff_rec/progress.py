"""What a run shows while it goes: a progress bar on a terminal, one line per round elsewhere.

Modes (`tff-rec run|study --progress`): `bar`, a tqdm bar per run (round, loss, latest validation
metric, ε), or per parallel study; `lines`, one short line on stderr per round (epoch) — which
carries the validation metrics when the round validated — one when a run resumes and one when it
is done, e.g.

    fedavg seed 0 · round 12/200 · loss 0.8123 · ndcg@10 0.4012 · ε 1.23 · 12.3 s

for batch jobs (nohup, a scheduler, CI), where a bar prints nothing; `none`. The default (`auto`)
is `bar` when stderr is a terminal and `lines` otherwise. Each line is written whole with one
write and flushed, so the lines of a study's parallel jobs (`--jobs`), which share stderr, never
mix within a line; each names its run.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping, Optional, Union

from tqdm.auto import tqdm

MODES = ("bar", "lines", "none")
Mode = Union[str, bool, None]  # a MODE, "auto"/None/True (by the terminal), or False ("none")


def resolve(mode: Mode) -> str:
    """The mode to show: `bar`, `lines` or `none` (`auto`, None or True: `bar` when stderr is a
    terminal, else `lines`; False: `none`)."""
    if mode is False:
        return "none"
    if mode is None or mode is True or mode == "auto":
        return "bar" if _on_terminal() else "lines"
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r}; allowed: {', '.join(MODES)}, auto")
    return str(mode)


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def emit(line: str) -> None:
    """Write one whole line to stderr, flushed (a single write: parallel jobs never split it)."""
    stream = sys.stderr
    stream.write(line + "\n")
    stream.flush()


def _number(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def format_row(name: str, row: Mapping[str, Any], total: int, unit: str = "round") -> str:
    """A metrics row as one line: run, round/total, loss, first validation NDCG, ε, seconds."""
    parts = [name, f"{unit} {row.get('round')}/{total}"]
    if row.get("loss") is not None:
        parts.append(f"loss {row['loss']:.4f}")
    metric = next((k for k in row if k.startswith("val_ndcg@")), None)
    if metric is not None and row[metric] is not None:
        parts.append(f"{metric[4:]} {row[metric]:.4f}")
    if row.get("epsilon") is not None:
        parts.append(f"ε {row['epsilon']:.2f}")
    if row.get("seconds") is not None:
        parts.append(f"{_number(row['seconds'])} s")
    return " · ".join(parts)


class RunProgress:
    """Progress of one run over its rounds (epochs), in one of `MODES` (see the module)."""

    def __init__(self, description: str, total: int, enabled: Mode = True, unit: str = "round"):
        self.mode = resolve(enabled)
        self._description, self._total, self._unit = description, total, unit
        self._resumed_to: Optional[int] = None  # lines: the resumed rows' last round, not yet said
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=total, desc=description, unit=unit, leave=True,
                             dynamic_ncols=True, disable=False)
        self._postfix: dict[str, str] = {}

    def update(self, row: Mapping[str, Any], resumed: bool = False) -> None:
        if self.mode == "lines":
            if resumed:
                self._resumed_to = row.get("round")
                return
            self._say_resumed()
            emit(format_row(self._description, row, self._total, self._unit))
        if self._bar is None:
            return
        if row.get("loss") is not None:
            self._postfix["loss"] = f"{row['loss']:.3f}"
        metric = next((k for k in row if k.startswith("val_ndcg@")), None)
        if metric:
            self._postfix[metric[4:]] = f"{row[metric]:.4f}"
        if row.get("epsilon") is not None:
            self._postfix["ε"] = f"{row['epsilon']:.2f}"
        if resumed:
            self._postfix["resumed"] = str(row["round"])
        self._bar.set_postfix(self._postfix, refresh=False)
        if row.get("round"):
            self._bar.update(1)

    def done(self, test: Mapping[str, Any], seconds: float) -> None:
        """The run finished: (lines) its test NDCG (the first K) and wall time."""
        if self.mode != "lines":
            return
        self._say_resumed()
        parts = [self._description, "done"]
        metric = next((k for k in test if k.startswith("ndcg@")), None)
        if metric is not None:
            parts.append(f"test {metric} {test[metric]:.4f}")
        parts.append(f"{_number(seconds)} s")
        emit(" · ".join(parts))

    def _say_resumed(self) -> None:
        if self._resumed_to is not None:
            emit(f"{self._description} · resumed from the checkpoint of {self._unit} {self._resumed_to}")
            self._resumed_to = None

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


class StudyProgress:
    """Progress over a study's runs when they run in parallel: a bar (per-run bars would
    interleave), or (lines) a line as each run finishes, between the runs' own lines."""

    def __init__(self, total: int, enabled: Mode = True):
        self.mode = resolve(enabled)
        self._total, self._finished, self._failed = total, 0, 0
        self._bar = None
        if self.mode == "bar":
            self._bar = tqdm(total=total, desc="study", unit="run", leave=True, dynamic_ncols=True,
                             disable=False)

    def finished(self, description: str, ok: bool) -> None:
        self._failed += not ok
        self._finished += 1
        if self.mode == "lines":
            emit(f"study · {self._finished}/{self._total} runs · {description} "
                 f"{'done' if ok else 'failed'}")
        if self._bar is not None:
            self._bar.set_postfix({"last": description, "failed": self._failed}, refresh=False)
            self._bar.update(1)

    def __enter__(self) -> "StudyProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
