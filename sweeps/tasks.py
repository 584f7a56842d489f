"""What each stage's jobs compute: build datasets, train one run, evaluate a chunk of conditions.

These are the functions the pipeline submits (wrapped by cluster.jobs so that a failure leaves
error.json in the run folder and two copies of one run never work at once). They only call the
science in `ecc`; they know nothing about schedulers. Each imports the torch side of `ecc` when
it runs, in the job's process: the launcher, `--status` and the driver name these functions
without loading torch.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from core.layout import HITS, LOCK
from core.runs import read_result, result_problem, write_error, write_result
from ecc.conditions import Condition
from ecc.config import RunOptions, TrainConfig
from ecc.dataset_spec import DatasetSpec
from ecc.sources import SourceConfig

logger = logging.getLogger(__name__)

def build_dataset(spec: DatasetSpec, root: str, source: SourceConfig, options: RunOptions) -> dict[str, Any]:
    """Build (or verify) one dataset; the result names its folder."""
    from ecc import datasets  # the renderer (torch), in the job's process only

    # a bar only on a terminal: in a job's log it would be thousands of carriage returns
    folder = datasets.ensure(spec, root, source, progress=options.progress and sys.stderr.isatty())
    meta = datasets.read_meta(folder)
    return {"kind": "dataset", "key": folder.name, "dir": str(folder), "n": meta["n"], "shape": meta["shape"]}


def train_run(cfg: TrainConfig, run_dir: str, data_root: str, source: SourceConfig,
              options: RunOptions) -> dict[str, Any]:
    """Train one run (resuming from its checkpoint if it has one)."""
    from ecc.train import train  # torch, in the job's process only

    return train(cfg, run_dir, data_root=data_root, source=source, options=options)


def eval_chunk(model_dir: str, items: Sequence[tuple[Condition, str]], test_images: int, data_root: str,
               source: SourceConfig, options: RunOptions) -> dict[str, Any]:
    """Evaluate one trained model on several conditions, loading it once.

    Each condition has its own run folder: its result is written there as soon as it is known, a
    condition that fails gets its own error.json, and the others still run. The chunk raises at
    the end if any condition failed, so the scheduler shows the job as failed too."""
    from ecc.evaluate import Evaluator  # torch, in the job's process only

    evaluator = Evaluator(model_dir, data_root=data_root, source=source, options=options)
    done, failed = 0, []
    for condition, run_dir in items:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        with FileLock(str(run / LOCK)):  # a second copy of this job waits, then skips
            if read_result(run, "eval") is not None:
                done += 1
                continue
            try:
                result = evaluator(condition, test_images=test_images, hits_out=run / HITS)
            except Exception as e:  # recorded per condition; the chunk goes on
                logger.exception("condition %s failed", condition)
                write_error(run, e)
                failed.append(f"{condition.label} te={condition.target_ecc:g} fe={condition.flanker_ecc}: {e}")
                continue
            write_result(run, {"kind": "eval", "hash": run.name, **result})
            problem = result_problem(run, "eval")  # core.runs' one rule: what counts as done
            if problem:
                write_error(run, message=problem, kind="InvalidResult")
                failed.append(f"{condition.label} te={condition.target_ecc:g} fe={condition.flanker_ecc}: {problem}")
                continue
            done += 1
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(items)} conditions failed: " + "; ".join(failed))
    return {"kind": "eval_chunk", "model_dir": model_dir, "conditions": done}
