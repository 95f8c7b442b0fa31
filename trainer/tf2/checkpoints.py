"""Resume from the newest TF checkpoint that restores; set the others aside, never delete them.

``tf.train.CheckpointManager`` lists its checkpoints in the directory's ``checkpoint`` state
file, oldest first. ``restore_newest`` tries them newest first. One that fails to restore (a
truncated ``.data-*`` file raises a plain IndexError, a damaged ``.index`` an OpError, a
missing file NotFoundError) is skipped with a warning naming it and why, then renamed
``unloadable-ckpt-N.*`` and dropped from the state file: still on disk for inspection, but out
of reach of the manager's pruning and of the save that reaches its step again, which would
otherwise overwrite it. The model, optimizer, data position and dropout RNG all live in the one
``tf.train.Checkpoint``, so they always come from the same checkpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import tensorflow as tf
from google.protobuf import text_format

log = logging.getLogger(__name__)
UNLOADABLE = "unloadable-"  # prefix of a checkpoint set aside by restore_newest
STATE_FILE = "checkpoint"  # the CheckpointManager's list


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for a log line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _split(prefix: str) -> tuple[str, str]:
    directory, _, name = prefix.rpartition("/")  # checkpoint paths are '/'-joined, URLs too
    return directory, name


def set_aside(prefix: str) -> str:
    """Rename the files of checkpoint ``prefix`` (``.index``, ``.data-*``) to
    ``unloadable-<name>`` (``-2``, ``-3``, ... if taken); returns the new prefix."""
    directory, name = _split(prefix)
    target, n = f"{directory}/{UNLOADABLE}{name}", 1
    while tf.io.gfile.glob(target + ".*"):
        n += 1
        target = f"{directory}/{UNLOADABLE}{name}-{n}"
    for path in tf.io.gfile.glob(prefix + ".*"):
        tf.io.gfile.rename(path, target + path[len(prefix):])
    return target


def forget(directory: str, prefixes: Sequence[str]) -> None:
    """Drop ``prefixes`` from ``directory``'s state file (the file goes when none is left),
    keeping the others' order and timestamps."""
    state = tf.train.get_checkpoint_state(directory)  # a CheckpointState proto, paths absolute
    if state is None:
        return
    paths = list(state.all_model_checkpoint_paths)
    times = list(state.all_model_checkpoint_timestamps)
    kept = [i for i, p in enumerate(paths) if p not in prefixes]
    path = f"{directory}/{STATE_FILE}"
    if not kept:
        tf.io.gfile.remove(path)
        return
    names = [_split(paths[i])[1] for i in kept]  # relative, as CheckpointManager writes them
    del state.all_model_checkpoint_paths[:], state.all_model_checkpoint_timestamps[:]
    state.all_model_checkpoint_paths.extend(names)
    if len(times) == len(paths):
        state.all_model_checkpoint_timestamps.extend(times[i] for i in kept)
    state.model_checkpoint_path = names[-1]
    with tf.io.gfile.GFile(path, "w") as f:  # the text format TF writes and reads
        f.write(text_format.MessageToString(state))


def restore_newest(checkpoint: tf.train.Checkpoint,
                   manager: tf.train.CheckpointManager) -> tuple[str | None, list[str]]:
    """(prefix restored or None, prefixes skipped): restore ``checkpoint`` from the newest of
    ``manager``'s checkpoints that restores, setting the skipped ones aside (``set_aside``,
    ``forget``). A manager built before this call no longer matches the state file when some
    were skipped: build a new one.

    A checkpoint that restores but does not match the objects (AssertionError) is not a
    damaged file but another model: that raises, as before. When some were skipped and none
    restored, a failed restore may have assigned some variables: the caller must rebuild them.
    """
    candidates = list(manager.checkpoints)
    if manager.latest_checkpoint and manager.latest_checkpoint not in candidates:
        candidates.append(manager.latest_checkpoint)
    skipped, chosen = [], None
    for prefix in reversed(candidates):
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 -- any unreadable file: try an older checkpoint
            log.warning("checkpoint %s does not restore (%s): skipped, trying the next older "
                        "one", prefix, one_line(e))
            skipped.append(prefix)
            continue
        chosen = prefix
        break
    for prefix in skipped:
        log.warning("set %s aside as %s (not deleted: inspect or remove it yourself)", prefix,
                    set_aside(prefix))
    if skipped:
        forget(manager.directory, skipped)
        if chosen is None:
            log.warning("NONE of the %d checkpoints in %s restores: starting this run again "
                        "from step 0", len(skipped), manager.directory)
    return chosen, skipped
