"""Progress bars: one per run (round, loss, latest validation metric, ε), one per parallel study."""
from __future__ import annotations

from typing import Any, Mapping

from tqdm.auto import tqdm


class RunProgress:
    """tqdm bar over a run's rounds; shown on a terminal, silent when output is not one."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self._bar = tqdm(
            total=total, desc=description, unit="round", leave=True, dynamic_ncols=True,
            disable=None if enabled else True,  # None: auto, off when not a terminal
        )
        self._postfix: dict[str, str] = {}

    def update(self, row: Mapping[str, Any], resumed: bool = False) -> None:
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

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


class StudyProgress:
    """tqdm bar over a study's runs when they run in parallel (per-run bars would interleave)."""

    def __init__(self, total: int, enabled: bool = True):
        self._bar = tqdm(total=total, desc="study", unit="run", leave=True, dynamic_ncols=True,
                         disable=None if enabled else True)
        self._failed = 0

    def finished(self, description: str, ok: bool) -> None:
        self._failed += not ok
        self._bar.set_postfix({"last": description, "failed": self._failed}, refresh=False)
        self._bar.update(1)

    def __enter__(self) -> "StudyProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
