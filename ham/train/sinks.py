"""Where metrics go: metrics.jsonl (always), Weights & Biases (optional), a progress bar, the final table.

Every sink has the same three methods, so the loop talks to one `MultiSink`:

    log(metrics: dict, step: int)     one row per log step (train metrics) or eval
    summary(values: dict)             final numbers (W&B run summary; metrics.jsonl ignores it)
    finish(exit_code: int = 0)        flush and close; safe to call twice

Only rank 0 builds real sinks (`make_sinks(..., is_main=False)` returns a MultiSink with none), but every rank's
MultiSink remembers the latest value of each key in `.last`, so the final summary can be built anywhere.
(Named sinks.py rather than logging.py so it never shadows the standard library's `logging`.)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from ham.errors import ConfigError
from ham.train.io import atomic_write_text, storage_error


class Sink(Protocol):
    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def summary(self, values: Mapping[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: tensors/numpy scalars -> Python numbers, NaN/inf -> None (strict JSON has no NaN),
    mappings (also OmegaConf DictConfig) and sequences recursively, anything else -> str."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # torch tensors, numpy arrays/scalars
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # lists, tuples, OmegaConf ListConfig
        return [to_jsonable(v) for v in value]
    return str(value)  # Paths, enums, anything else: readable rather than an encoder error


# --------------------------------------------------------------------------------------------------- jsonl
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a missing file is empty, a line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class JsonlSink:
    """Appends one JSON object per `log` call to `path`: {"step": step, **metrics}, flushed line by line.

    Opening never truncates: a resumed run appends. Call `truncate_after(step)` with the resumed checkpoint's step
    first, so rows the crashed run logged after that checkpoint (and a half-written last line) are dropped and
    the file reads as one consistent run. Non-finite floats are written as null (strict JSON)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = None

    def truncate_after(self, step: int) -> int:
        """Keep only rows with row["step"] <= step (rewritten atomically); returns how many rows were dropped."""
        self._close_file()
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(row, dict) and row.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))
        return len(lines) - len(keep)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        row = {"step": int(step), **{k: v for k, v in metrics.items() if k != "step"}}
        try:
            if self._file is None:
                self._file = open(self.path, "a")  # noqa: SIM115 -- held open across calls, closed in finish()
            self._file.write(json.dumps(to_jsonable(row), allow_nan=False) + "\n")
            self._file.flush()
        except OSError as e:  # a full disk: one line naming this file (a bare write error carries no name)
            raise (storage_error(self.path, e) or e) from None

    def summary(self, values: Mapping[str, Any]) -> None:
        pass  # the run's summary.json is written by the trainer

    def finish(self, exit_code: int = 0) -> None:
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------------- wandb
WANDB_MODES = ("online", "offline", "disabled")
_WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # older spellings wandb still accepts


def resolve_wandb_mode(mode: str) -> str:
    """The WANDB_MODE environment variable, when set, wins over the configured mode (so a cluster or CI can force
    offline/disabled without touching configs); anything else is a ConfigError."""
    env = os.environ.get("WANDB_MODE")
    chosen = _WANDB_MODE_ALIASES.get(env or mode, env or mode)
    if chosen not in WANDB_MODES:
        key = "WANDB_MODE" if env else "logger.wandb.mode"
        raise ConfigError(f"{key}={env or mode!r} is not one of {', '.join(WANDB_MODES)}")
    return chosen


def wandb_credentials_problem(mode: str) -> str | None:
    """Why an online W&B run cannot start on this machine (no API key anywhere wandb looks), else None. Checked
    before anything is created: without it wandb.init retries for ~50 s and only then fails."""
    if resolve_wandb_mode(mode) != "online" or os.environ.get("WANDB_API_KEY"):
        return None
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        if netrc.netrc(path).authenticators(host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (f"logger=wandb: no W&B login on this machine (no WANDB_API_KEY, no {host} entry in {path}); fix: "
            f"`wandb login` (or set WANDB_API_KEY), or run with WANDB_MODE=offline and upload later with `wandb sync`")


def wandb_failure_message(e: BaseException, mode: str) -> str:
    """One line for a W&B start-up failure: what went wrong (wandb's first line) and the two ways out."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    return (f"logger=wandb: W&B could not start (mode={mode}; {type(e).__name__}: {text}); fix: `wandb login` "
            f"(or set WANDB_API_KEY), or run with WANDB_MODE=offline and upload later with `wandb sync`")


class WandbSink:
    """A W&B run. `mode="offline"` needs no network and writes <dir>/wandb/offline-run-<time>-<id>/ (upload later
    with `wandb sync`); `mode="disabled"` never imports wandb and writes nothing. Pass the previous run's `.id` as
    `resume_id` to continue the same run after a restart (resume="allow": a fresh run if that id does not exist).
    `cfg` (the resolved run config, plain dict) becomes the run's config. `finish()` returns once the run's files
    are complete on disk (it shuts wandb's local service down, so call it when no other W&B run is live in this
    process)."""

    def __init__(self, cfg: Mapping[str, Any], *, project: str, entity: str | None = None, group: str | None = None,
                 tags: Iterable[str] = (), name: str | None = None, mode: str = "online", dir: str | Path,
                 resume_id: str | None = None):
        self.mode = resolve_wandb_mode(mode)
        self.run = None
        self.id = resume_id
        self._finished = False
        if self.mode == "disabled":
            return
        import wandb

        os.makedirs(dir, exist_ok=True)
        try:
            self.run = wandb.init(
                project=project, entity=entity, group=group, tags=list(tags or []), name=name, mode=self.mode,
                dir=str(dir), id=resume_id, resume="allow", config=to_jsonable(dict(cfg)),
                # console="off": leave stdout/stderr alone (the progress bar and SLURM logs stay as they are)
                settings=wandb.Settings(console="off", silent=True))
        except Exception as e:  # noqa: BLE001 -- no login, no network, a bad entity: one line with the fix
            raise ConfigError(wandb_failure_message(e, self.mode)) from None
        self.id = self.run.id

    @property
    def run_dir(self) -> Path | None:
        """The run's own directory (holding run-<id>.wandb and files/), or None when disabled."""
        return Path(self.run.dir).parent if self.run is not None else None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is None or self._finished:
            return
        row = {k: v for k, v in to_jsonable(dict(metrics)).items() if k != "step" and v is not None}
        self.run.log(row, step=int(step))

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None or self._finished:
            return
        self.run.summary.update({k: v for k, v in to_jsonable(dict(values)).items() if v is not None})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None or self._finished:
            return
        self._finished = True
        run_dir = self.run_dir
        self.run.finish(exit_code=exit_code)
        # run.finish() returns before wandb's background service has written the run file (offline runs were
        # seen with an empty .wandb right after it); teardown waits for the service, so once finish() returns the
        # run directory is complete even if the job is killed next. The next wandb.init restarts it (~0.3 s).
        import wandb

        wandb.teardown()
        if self.mode == "offline" and run_dir is not None:
            print(f"W&B offline run saved in {run_dir}; upload it with: wandb sync {run_dir}", file=sys.stderr,
                  flush=True)


# --------------------------------------------------------------------------------------------------- progress
class ProgressBar:
    """Training progress on the main rank.

    On a terminal: a tqdm bar (on stderr) whose postfix shows the latest loss/lr. Not on a terminal (SLURM logs,
    pipes, CI): no bar and no carriage returns; instead one plain line each time progress crosses a multiple of
    `every_pct` percent (default 5%: at most ~20 lines per run) and at the end:
        train 500/10000 (5%) 12.3 it/s eta 0:12:53 loss=2.3100 lr=0.1
    `tty=None` asks the output stream; `enabled=False` (other ranks, progress_bar=false) prints nothing."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, *, tty: bool | None = None,
                 every_pct: float = 5.0, desc: str = "train", file: TextIO | None = None):
        self.total, self.n, self.enabled, self.desc = int(total), int(initial), bool(enabled), desc
        self.file = file if file is not None else sys.stderr
        self.tty = self.file.isatty() if tty is None else bool(tty)
        self.postfix: dict[str, Any] = {}
        self.bar = None
        self._start_n, self._t0 = self.n, time.perf_counter()
        self._step_every = max(1, math.ceil(self.total * every_pct / 100))
        self._next_line = (self.n // self._step_every + 1) * self._step_every
        if self.enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, dynamic_ncols=True, file=self.file)

    def set_postfix(self, postfix: Mapping[str, Any]) -> None:
        self.postfix = dict(postfix)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def update(self, n: int = 1, postfix: Mapping[str, Any] | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.set_postfix(postfix)
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (self.n >= self._next_line or self.n >= self.total):
            self._print_line()
            while self._next_line <= self.n:
                self._next_line += self._step_every

    def _print_line(self) -> None:
        elapsed = time.perf_counter() - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc} {self.n}/{self.total} ({100 * self.n / max(1, self.total):.0f}%)"]
        if rate > 0:
            eta = int(max(0, self.total - self.n) / rate)
            parts.append(f"{rate:.3g} it/s eta {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        parts += [f"{k}={_compact(v)}" for k, v in self.postfix.items()]
        print(" ".join(parts), file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False  # a closed bar stays quiet


def _compact(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------------------- fan-out
class MultiSink:
    """Fan-out to several sinks; an empty MultiSink is the no-op that non-main ranks hold. `.last` has the latest
    logged value of every key (on every rank, sinks or not)."""

    def __init__(self, sinks: Iterable[Sink] = ()):
        self.sinks = list(sinks)
        self.last: dict[str, Any] = {}

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.last.update(metrics)
        self.last["step"] = int(step)
        for s in self.sinks:
            s.log(metrics, step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for s in self.sinks:
            s.summary(values)

    def finish(self, exit_code: int = 0) -> None:
        for s in self.sinks:
            s.finish(exit_code)

    @property
    def wandb_id(self) -> str | None:
        """The W&B run id to store in checkpoints (None without W&B)."""
        return next((s.id for s in self.sinks if isinstance(s, WandbSink)), None)


def make_sinks(run_dir: str | Path, *, is_main: bool, resume_step: int = 0, wandb: Mapping[str, Any] | None = None,
               config: Mapping[str, Any] | None = None, wandb_resume_id: str | None = None) -> MultiSink:
    """The run's sinks: <run_dir>/metrics.jsonl (rows after `resume_step` dropped, so pass 0 for a fresh run) and,
    when `wandb` (the logger.wandb section: project, entity, group, tags, name, mode) is given, a WandbSink whose
    files live under run_dir. Non-main ranks get an empty MultiSink and touch nothing."""
    if not is_main:
        return MultiSink()
    jsonl = JsonlSink(Path(run_dir) / "metrics.jsonl")
    jsonl.truncate_after(resume_step)
    sinks: list[Sink] = [jsonl]
    if wandb is not None:
        w = dict(wandb)
        sinks.append(WandbSink(config or {}, project=w.get("project") or "ham", entity=w.get("entity"),
                               group=w.get("group"), tags=w.get("tags") or (), name=w.get("name") or Path(run_dir).name,
                               mode=w.get("mode", "online"), dir=run_dir, resume_id=wandb_resume_id))
    return MultiSink(sinks)


# --------------------------------------------------------------------------------------------------- table
_TABLE_ROWS = [
    ("train loss", "train/loss", "{:.4f}"),
    ("val top-1 (%)", "val/top1", "{:.2f}"),
    ("val top-5 (%)", "val/top5", "{:.2f}"),
    ("val loss", "val/loss", "{:.4f}"),
    ("val accuracy (%)", "val/acc", "{:.2f}"),
    ("val ROC-AUC (%)", "val/rocauc", "{:.2f}"),
    ("best val (%)", "val/best", "{:.2f}"),
    ("test at best val (%)", "test/at_best_val", "{:.2f}"),
    ("mean |w| (L1)", "train/l1_norm", "{:.5f}"),
    ("sign flips since init", "train/sign_flips_init", "{:.2%}"),
    ("sparsity", "sparsity", "{:.2%}"),
    ("steps", "steps", "{:d}"),
    ("wall time (training, eval, checkpoints)", "wall_time_s", None),
    ("train images/s (last log interval)", "train/images_per_s", "{:.0f}"),
]


def _fmt_duration(seconds: float) -> str:
    s = round(seconds)
    return f"{seconds:.1f} s" if seconds < 60 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def format_summary_table(summary: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """A short aligned two-column table of the run's final numbers; keys that are missing or None are skipped."""
    lines = []
    for label, key, fmt in _TABLE_ROWS:
        v = summary.get(key)
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            text = str(v)
        elif fmt is None:
            text = _fmt_duration(float(v))
        else:
            text = fmt.format(int(v) if fmt == "{:d}" else float(v))
        lines.append((label, text))
    if not lines:
        return "(no summary metrics)"
    left = max(len(a) for a, _ in lines)
    right = max(12, max(len(b) for _, b in lines))
    rule = "=" * (left + 2 + right)
    out = [rule, *(f"{a:<{left}}  {b:>{right}}" for a, b in lines), rule]
    if run_dir is not None:
        out.append(f"run dir: {run_dir}")
    return "\n".join(out)
