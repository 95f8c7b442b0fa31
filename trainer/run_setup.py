"""What both trainers do before their first step, without a framework: the configurations from
the flags, the data / model / init-checkpoint checks, and the run directory's resume rule.

The resume rule. Every run writes ``run_config.json`` into its run directory (--output_dir): the
trainer, the number of replicas, the model and training configs, the data (its path and a
digest of its manifest), --init_checkpoint. Started in a directory that already holds a run, a
trainer

- resumes it, from the newest checkpoint there that loads (step 0 if none was saved yet; one
  that does not load is skipped with a warning and set aside, never deleted), when the saved
  configuration matches its own. Matching ignores what does not change the trained weights:
  ``MAY_CHANGE_ON_RESUME`` (log, checkpoint and eval periods, eval_steps, keep_checkpoints,
  steps_per_execution), --eval_data_dir and where the same data lives;
- refuses, naming every difference, when it does not match, unless --overwrite: that deletes the
  trainer's files there (``RUN_ENTRIES``) and starts at step 0. A directory holding checkpoints or
  metrics but no run_config.json is refused too: nothing says whose run they are.

Files of other kinds in the directory (an --export_hf inside it, notes) are never touched. The
same command can thus be rerun after a preemption, and never trains on next to another run's
checkpoints (which checkpoint pruning could otherwise mix up).

Before the first step each trainer also compares the shards it will read (training and
held-out) with their manifest, size and sha256 (``trainer.data_check``; ``check_data``,
``refuse_changed_data``), unless --skip_data_check.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence

from trainer import data_check, data_contract, flags, hf_export, storage
from trainer.bins import BinSchedule
from trainer.config import (
    ModelConfig,
    TrainConfig,
    learning_rate,
    load_model_config,
    load_train_config,
    with_overrides,
)
from trainer.data_contract import DataSpec
from trainer.metrics import METRICS_FILE

log = logging.getLogger(__name__)
TRAINERS = ("tf2", "pytorch")
RUN_CONFIG = "run_config.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
RUN_ENTRIES = (RUN_CONFIG, METRICS_FILE, CHECKPOINTS, TENSORBOARD)
MAY_CHANGE_ON_RESUME = tuple(f"train_config.{name}" for name in (
    "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_steps",
    "steps_per_execution")) + ("data.dir", "eval_data_dir")


class Refused(ValueError):
    """A run that must not start, found by a trainer's loop before its first step and before
    it writes anything: another run in --output_dir (without --overwrite), held-out data
    smaller than one batch, or shards that differ from their manifest (``refuse_changed_data``).
    The entry points exit with its message, as with ``prepare``'s."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One checked training run, as both trainers' loops take it.

    model_config has its vocab_size resolved from the manifest; data / eval_data are checked
    against it. stop_at_step ends this process early without changing the schedule.
    skip_data_check: train without comparing the shards with their manifest (``check_data``).
    """

    model_config: ModelConfig
    train_config: TrainConfig
    data: DataSpec
    output_dir: str
    eval_data: DataSpec | None = None
    init_checkpoint: str | None = None
    export_hf: str | None = None
    overwrite: bool = False
    stop_at_step: int | None = None
    skip_data_check: bool = False

    @property
    def last_step(self) -> int:
        """The update this process stops after."""
        end = self.train_config.num_train_steps
        return min(end, self.stop_at_step) if self.stop_at_step else end

    def log_due(self, step: int) -> bool:
        return step % self.train_config.log_every == 0 or step == self.last_step

    def checkpoint_due(self, step: int) -> bool:
        return step % self.train_config.checkpoint_every == 0 or step == self.last_step

    def eval_due(self, step: int) -> bool:
        tc = self.train_config
        return self.eval_data is not None and (step % tc.eval_every == 0
                                               or step == tc.num_train_steps)

    def learning_rate_at(self, update: int) -> float:
        """The rate of update ``update`` (0 = the first), from the shared schedule."""
        tc = self.train_config
        return learning_rate(update, base_lr=tc.learning_rate, warmup_steps=tc.warmup_steps,
                             total_steps=tc.num_train_steps)

    def path(self, *parts: str) -> str:
        return storage.join(self.output_dir, *parts)


@dataclasses.dataclass
class Outcome:
    """What a run ended with: its last step, last train and eval lines, the export's path."""

    step: int
    train: dict[str, float] | None = None
    eval: dict[str, float] | None = None
    export_hf: str | None = None

    def summary(self) -> dict:
        """What both entry points print and return (JSON types)."""
        return {"step": self.step, "train": self.train, "eval": self.eval,
                "export_hf": self.export_hf}


def bin_schedule(data: DataSpec, *, unit: int, seed: int, unit_name: str, unit_parts: str,
                 warn: bool) -> BinSchedule | None:
    """The length-bin schedule of ``data`` (None for unbinned data) whose unit, ``unit``
    instances over all replicas, is a trainer's ``unit_name`` (its ``unit_parts`` multiplied).
    Refused when no bin fills one unit; ``warn``: a warning for each bin never drawn."""
    if not data.bins:
        return None
    schedule = BinSchedule([b.bound for b in data.bins], [b.instances for b in data.bins],
                           global_batch=unit, seed=seed)
    instances = {b.bound: b.instances for b in data.bins}
    one = f"one {unit_name} of {unit}"
    if not schedule.bounds:
        raise Refused(f"{data.data_dir}: no length bin holds {one} ({unit_parts}); bins "
                      f"(bound: instances) {', '.join(f'{b}: {n}' for b, n in instances.items())}")
    if warn:
        for bound in schedule.skipped:
            log.warning("length bin %d holds %d instances, fewer than %s: it is never drawn",
                        bound, instances[bound], one)
    return schedule


def load_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """(ModelConfig, TrainConfig) from the presets and the flags that override them."""
    if args.model_config:
        model_config = load_model_config(args.model_config)
    elif args.init_checkpoint:
        model_config = hf_export.model_config_from_hf(args.init_checkpoint)
    else:
        raise ValueError("--model_config is required unless --init_checkpoint gives one")
    train_config = with_overrides(load_train_config(args.train_config),
                                  flags.train_overrides(args))
    return model_config, train_config


def prepare_run(model_config: ModelConfig, train_config: TrainConfig, *, data_dir: str,
                output_dir: str, eval_data_dir: str | None = None,
                init_checkpoint: str | None = None, export_hf: str | None = None,
                overwrite: bool = False, stop_at_step: int | None = None,
                skip_data_check: bool = False) -> Run:
    """Resolve vocab_size from the manifest, check data, eval data and init checkpoint against
    the model and the phase (and the held-out data's sentence task against the training
    data's); ValueError (or FileNotFoundError) before anything is built."""
    if stop_at_step is not None and stop_at_step < 1:
        raise ValueError(f"--stop_at_step must be >= 1, got {stop_at_step}")
    manifest = data_contract.read_manifest(data_dir)
    model_config = data_contract.resolve_model_config(model_config, manifest)
    if init_checkpoint:
        hf_export.check_init_checkpoint(model_config, init_checkpoint)
    data = data_contract.load_data_dir(
        data_dir, model_config, max_seq_length=train_config.max_seq_length,
        max_predictions_per_seq=train_config.max_predictions_per_seq)
    eval_data = None
    if eval_data_dir:
        eval_data = data_contract.load_data_dir(
            eval_data_dir, model_config, max_seq_length=data.max_seq_length,
            max_predictions_per_seq=data.max_predictions_per_seq)
        if eval_data.next_sentence != data.next_sentence:
            raise ValueError(f"held-out data next_sentence {eval_data.next_sentence!r} != "
                             f"training data next_sentence {data.next_sentence!r}: metrics "
                             "of a sentence task the run does not train")
    return Run(model_config=model_config, train_config=train_config, data=data,
               output_dir=storage.join(output_dir), eval_data=eval_data,
               init_checkpoint=storage.join(init_checkpoint) if init_checkpoint else None,
               export_hf=export_hf, overwrite=overwrite, stop_at_step=stop_at_step,
               skip_data_check=skip_data_check)


def prepare(args: argparse.Namespace) -> Run:
    """``prepare_run`` from parsed flags (trainer/flags.py)."""
    model_config, train_config = load_configs(args)
    return prepare_run(model_config, train_config, data_dir=args.data_dir,
                       output_dir=args.output_dir, eval_data_dir=args.eval_data_dir,
                       init_checkpoint=args.init_checkpoint, export_hf=args.export_hf,
                       overwrite=args.overwrite, stop_at_step=args.stop_at_step,
                       skip_data_check=args.skip_data_check)


def prepare_or_exit(args: argparse.Namespace) -> Run:
    """``prepare``, turning a refusal into the process's exit message (nothing written)."""
    try:
        return prepare(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"refusing to train: {e}") from None


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def run_record(run: Run, *, trainer: str, replicas: int) -> dict:
    """The content of run_config.json (JSON types only, so it compares with a reread one)."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
    record = {"trainer": trainer, "replicas": replicas,
              "model_config": run.model_config.to_dict(),
              "train_config": run.train_config.to_dict(),
              "data": {"dir": run.data.data_dir,
                       "manifest_sha256": manifest_digest(run.data.manifest)},
              "eval_data_dir": run.eval_data.data_dir if run.eval_data else None,
              "init_checkpoint": run.init_checkpoint}
    return json.loads(json.dumps(record))


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(saved: dict, current: dict) -> list[str]:
    """What makes ``current`` a different run from ``saved`` (both ``run_record``s)."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} now" for key in sorted(set(a) | set(b))
            if key not in MAY_CHANGE_ON_RESUME and a.get(key) != b.get(key)]


def check_run_dir(run: Run, record: dict) -> bool:
    """Apply the resume rule without writing anything (every rank may call it).

    Returns True when the trainer's files there must be deleted first (--overwrite with files
    present), False to start fresh or resume. Raises Refused on another run's directory.
    """
    present = [name for name in RUN_ENTRIES if storage.exists(run.path(name))]
    if not present or run.overwrite:
        return bool(present)
    advice = "pass --overwrite to start over there, or choose another --output_dir"
    if RUN_CONFIG not in present:
        raise Refused(f"{run.output_dir} holds {', '.join(present)} but no {RUN_CONFIG}: "
                          f"not a run this trainer can resume; {advice}")
    diff = differences(json.loads(storage.read_text(run.path(RUN_CONFIG))), record)
    if diff:
        raise Refused(f"{run.output_dir} holds a different run:\n  " + "\n  ".join(diff)
                          + f"\n{advice}")
    return False


def start_run_dir(run: Run, record: dict, *, clear: bool) -> None:
    """Delete the trainer's files if ``clear``; write run_config.json (one process calls it)."""
    if clear:
        for name in RUN_ENTRIES:
            storage.remove(run.path(name))
    storage.make_dirs(run.output_dir)
    storage.write_text(run.path(RUN_CONFIG), json.dumps(record, indent=2) + "\n")


def data_shards(run: Run, fmt: str) -> list[data_check.Expected]:
    """The ``fmt`` shards the run reads, training then held-out data, each path once."""
    specs = [run.data] + ([run.eval_data] if run.eval_data is not None else [])
    return data_check.unique([s for spec in specs for s in data_check.expected_shards(spec, fmt)])


def check_data(run: Run, fmt: str, *, part: int = 0, parts: int = 1,
               threads: int | None = None) -> data_check.Report:
    """Compare this process's ``part`` of ``parts`` of the run's ``fmt`` shards (training and
    held-out) with their manifest; an empty report when --skip_data_check. Raises nothing:
    the caller gathers the parts' reports (DDP) and passes them to ``refuse_changed_data``,
    so every process refuses together."""
    if run.skip_data_check:
        return data_check.Report()
    mine = data_check.share(data_shards(run, fmt), part=part, parts=parts)
    return data_check.check_files(mine, threads=threads or data_check.default_threads(parts))


def refuse_changed_data(run: Run, fmt: str, reports: Sequence[data_check.Report], *,
                        verbose: bool = True) -> None:
    """Raise Refused naming every shard whose size or sha256 differs from its manifest's;
    else log what was checked, what the manifest did not allow to check, or that the check
    was skipped (``verbose``: the process that logs, rank 0 under DDP)."""
    report = data_check.Report.merge(reports)
    if report.problems:
        raise Refused(data_check.refusal_message(report))
    if not verbose:
        return
    if run.skip_data_check:
        log.warning("--skip_data_check: the %s shards were NOT compared with their manifest; "
                    "a replaced or truncated shard trains silently", fmt)
        return
    for note in data_check.unchecked_notes(data_shards(run, fmt)):
        log.warning("data check: %s", note)
    log.info("data check: %d %s shards match their manifest (%.1f MB read by %d process(es) "
             "in %.1f s, %.0f MB/s)", len(data_shards(run, fmt)), fmt,
             report.bytes_read / 1e6, len(reports), report.seconds, report.rate())
