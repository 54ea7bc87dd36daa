"""File locks: one process runs a given sweep at a time, and one process at a time writes MLflow's SQLite file.

``fcntl.flock`` on a file under ``results/locks/``: the kernel drops a lock when its holder exits, SIGKILL
included, so a lock never outlives its sweep and there is nothing stale to clean. On NFS, Linux maps flock to
POSIX byte-range locks, which the server arbitrates, so sweeps launched from two nodes see each other too.
The holder writes its PID, host, start time and command into the file, so whoever is refused can be told who
holds it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from channelzoo.errors import InputError

LOCKS_DIR = "locks"


class SweepBusy(InputError):
    """The same sweep (same experiment and sweep key) is running in another process; names that process."""


class _Held(Exception):
    def __init__(self, holder: dict) -> None:
        super().__init__(holder)
        self.holder = holder


def sweep_lock_path(root: str | Path, experiment: str, sweep_key: str) -> Path:
    return Path(root) / LOCKS_DIR / f"{experiment}-{sweep_key}.lock"


@contextmanager
def sweep_lock(root: str | Path, experiment: str, sweep_key: str) -> Iterator[Path]:
    """Hold the lock of one sweep for the block; raise SweepBusy at once if another process holds it.

    Refusing rather than waiting: the second of two identical sweeps would only find every job done; saying
    who runs it lets the user follow that one (or stop it: a rerun resumes where it stopped).
    """
    path = sweep_lock_path(root, experiment, sweep_key)
    held = ExitStack()
    try:  # only taking the lock: errors of the block itself pass through untouched
        held.enter_context(file_lock(path, wait=False))
    except OSError as e:  # e.g. --results names a file, or a folder we may not write
        raise InputError(f"cannot create the sweep's lock file: {e.strerror or e}", file=str(path),
                         field="--results") from None
    except _Held as busy:
        h = busy.holder
        who = (f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})" if h
               else "another process (it has not written its name yet)")
        raise SweepBusy(f"this sweep of {experiment} ({sweep_key}) is already running: {who}; wait for it to end "
                        "or stop it (running it again later resumes: done jobs are skipped)",
                        file=str(path)) from None
    with held:
        yield path


@contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if missing) for the block, recording its holder in the file.

    ``wait=False`` raises ``_Held`` (with the holder's record, ``{}`` if unreadable) instead of blocking.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, writable = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:  # another user's lock file in a shared folder: lock it all the same, unnamed
        fd, writable = os.open(path, os.O_RDONLY), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise _Held(_holder(fd)) from None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]})
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
        try:
            yield
        finally:
            if writable:
                os.ftruncate(fd, 0)  # still held: an idle lock file names nobody
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) and {"pid", "host", "since", "command"} <= holder.keys() else {}
