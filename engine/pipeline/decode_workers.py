"""Decode threads that a hung read cannot take down with it.

A read can block for ever: a file on a hung network mount, a device, a decoder stuck on hostile
input. Threads cannot be killed, so a decode that overstays its time limit is *abandoned*: the
caller records an error row and moves on, a fresh thread takes the stuck one's place (the pool
keeps its size, so the files queued behind it still decode), and the stuck thread, a daemon,
exits by itself if its call ever returns. Daemon threads also mean the process can exit (after
the run, or on Ctrl-C) while one is still stuck: concurrent.futures' pool would join it and
hang at exit.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class Task:
    """One call to run on a worker; `started` is set when a worker picks it up."""

    def __init__(self, fn: Callable[..., Any], args: tuple):
        self.fn, self.args = fn, args
        self.started: float | None = None
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.cancelled = False
        self.worker: threading.Thread | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.outcome

    def wait(self, timeout: float | None) -> Any:
        """The call's result once done within `timeout` seconds of its start (time spent queued
        does not count); TimeoutError when it overstays. Signals reach the caller meanwhile."""
        poll = 0.25 if timeout is None else min(0.25, timeout)  # signals are handled between polls
        while True:
            if self.started is None:
                if self.finished.wait(poll):
                    return self.result()
                continue
            remaining = None if timeout is None else self.started + timeout - time.monotonic()
            if remaining is not None and remaining <= 0:
                if self.finished.is_set():
                    return self.result()
                raise TimeoutError
            if self.finished.wait(poll if remaining is None else min(remaining, poll)):
                return self.result()


class DecodeWorkers:
    """A fixed number of daemon threads running Tasks in submission order."""

    def __init__(self, workers: int, name: str = "iqart-decode"):
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._name = name
        self._abandoned: set[threading.Thread] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            task = self._queue.get()
            if task is None:
                return
            if task.cancelled:
                continue
            task.worker, task.started = me, time.monotonic()
            try:
                task.outcome = task.fn(*task.args)
            except BaseException as exc:  # handed to the caller, as a Future would
                task.error = exc
            task.finished.set()
            if me in self._abandoned:  # replaced while stuck: leave the pool at its size
                return

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        task = Task(fn, args)
        self._queue.put(task)
        return task

    def abandon(self, task: Task) -> None:
        """Give up on a running task: its thread is left to finish (or not) on its own and a
        new thread takes its place."""
        if task.worker is not None and not task.finished.is_set():
            self._abandoned.add(task.worker)
            if not self._closed:
                self._spawn()

    def shutdown(self, pending: list[Task]) -> None:
        """Stop: queued tasks are dropped, idle threads exit, stuck ones are left behind."""
        self._closed = True
        for task in pending:
            task.cancelled = True
        for _ in self._threads:
            self._queue.put(None)
