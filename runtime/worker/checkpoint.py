"""Actor checkpoints: an actor that defines ``__freight_checkpoint__()`` (returning its state)
and ``__freight_restore__(state)`` is saved every N calls or T seconds, and restored when it is
restarted after a crash, so at most the calls since the last save are redone.

The state is written with cloudpickle to ``<dir>/<actor id>.ckpt`` through a temporary file,
fsync and rename: a crash while saving leaves the previous checkpoint whole. A save happens
after a call and before its result is sent, so a caller that has a result knows the state
behind it is saved (when a save was due). A class sets its own rhythm with the attributes
``__freight_checkpoint_calls__`` and ``__freight_checkpoint_interval_s__``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import cloudpickle
from loguru import logger

from freight.config import settings
from freight.observe.recorder import RECORDER

SAVE = "__freight_checkpoint__"
RESTORE = "__freight_restore__"


def checkpoint_dir(session_dir: str) -> str:
    return settings.actor_checkpoint_dir or os.path.join(session_dir, "checkpoints")


def _positive(cls: type, attr: str, default: float) -> float:
    value = getattr(cls, attr, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{cls.__name__}.{attr} must be a number > 0, got {value!r}")
    return value


class Checkpointer:
    """Saves and restores one actor's state."""

    def __init__(self, actor: Any, actor_id: str, directory: str) -> None:
        cls = type(actor)
        self.actor = actor
        self.path = os.path.join(directory, f"{actor_id}.ckpt")
        self.every_calls = int(
            _positive(cls, "__freight_checkpoint_calls__", settings.actor_checkpoint_calls)
        )
        self.every_s = _positive(
            cls, "__freight_checkpoint_interval_s__", settings.actor_checkpoint_interval_s
        )
        self.calls = 0  # since the last save
        self.saved_at = time.monotonic()
        self.lock = threading.Lock()  # threaded actors finish calls concurrently
        os.makedirs(directory, exist_ok=True)

    @staticmethod
    def wanted(actor: Any) -> bool:
        return callable(getattr(actor, SAVE, None)) and callable(getattr(actor, RESTORE, None))

    def restore(self) -> bool:
        """Give the actor its last saved state, if it has one (it is a restart)."""
        try:
            with open(self.path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            return False
        getattr(self.actor, RESTORE)(cloudpickle.loads(blob))
        RECORDER.inc("freight_actor_checkpoint_restores_total", ())
        return True

    def after_call(self) -> None:
        """Count a call; save when N calls or T seconds have gone by since the last save."""
        with self.lock:
            self.calls += 1
            if self.calls < self.every_calls and time.monotonic() - self.saved_at < self.every_s:
                return
            try:
                self._save()
            except Exception as e:  # the call succeeded; the next one tries to save again
                RECORDER.inc("freight_actor_checkpoint_failures_total", ())
                logger.warning("could not save the actor's checkpoint: {!r}", e, path=self.path)
                return
            self.calls = 0
            self.saved_at = time.monotonic()

    def _save(self) -> None:
        blob = cloudpickle.dumps(getattr(self.actor, SAVE)())
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash of the machine
        finally:
            os.close(dir_fd)
        RECORDER.inc("freight_actor_checkpoints_total", ())
        RECORDER.inc("freight_actor_checkpoint_bytes_total", (), len(blob))
