"""Several worker processes on one host, over the loopback address.

A cluster starts one process per host and tells each who the others are; this
does the same on one machine, so that multi-worker runs (coordination, per-worker
data, gradient all-reduce, chief-only writes, a worker that dies) can be tried
and tested without a cluster. Each worker gets, in its environment:

- `TF_CONFIG`: the cluster (every worker at `127.0.0.1:PORT`) and its own task,
  as TensorFlow's `MultiWorkerMirroredStrategy` reads it;
- `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
  `KERAS_DISTRIBUTION_PROCESS_ID`, as `keras.distribution.initialize()` reads them
  on JAX;
- `TF_NUM_INTRAOP_THREADS` and `OMP_NUM_THREADS`: the host's cores shared out,
  so that the workers do not fight over them.

`{worker}` and `{workers}` in the command are replaced by the worker's index and
the number of workers (for `kgemma-eval --shard {worker}/{workers}`).
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

LOOPBACK = "127.0.0.1"
# How long the other workers may go on after one fails, before they are stopped:
# long enough for them to notice the loss themselves and say so.
GRACE_SECONDS = 30.0


def free_ports(count, host=LOOPBACK):
    """`count` ports that are free on `host` now (the system picks them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_environments(workers, ports=None, threads=None, host=LOOPBACK):
    """The environment variables each of `workers` processes gets (see the module's doc)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    ports = ports or free_ports(workers, host)
    addresses = [f"{host}:{port}" for port in ports]
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    environments = []
    for index in range(workers):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        environments.append(
            {
                "TF_CONFIG": json.dumps(tf_config),
                # Keras's JAX start-up: the first address is the coordinator.
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": ",".join(addresses),
                "KERAS_DISTRIBUTION_NUM_PROCESSES": str(workers),
                "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
                "TF_NUM_INTRAOP_THREADS": str(threads),
                "OMP_NUM_THREADS": str(threads),
                "PYTHONUNBUFFERED": "1",
            }
        )
    return environments


def worker_command(command, index, workers):
    """`command` with `{worker}` and `{workers}` filled in."""
    return [arg.replace("{worker}", str(index)).replace("{workers}", str(workers)) for arg in command]


@dataclasses.dataclass
class LaunchResult:
    """How each worker ended.

    Attributes:
        returncodes: each worker's exit code (negative: killed by that signal).
        first_failure: the index of the first worker seen to fail, or None.
        stopped: the workers the launcher stopped after another failed.
        seconds: wall time from start to the last exit.
    """

    returncodes: list
    first_failure: int | None
    stopped: list
    seconds: float

    @property
    def ok(self):
        return self.first_failure is None

    def describe(self):
        """One line on what went wrong, or None when every worker succeeded."""
        if self.ok:
            return None
        code = self.returncodes[self.first_failure]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        message = f"worker {self.first_failure} {how}"
        if self.stopped:
            message += f"; stopped worker(s) {', '.join(map(str, self.stopped))}, still running after it"
        return message + "."


def _relay(stream, prefix, write):
    for line in stream:
        write(f"{prefix}{line}")
    stream.close()


def launch(command, workers=2, threads=None, grace_seconds=GRACE_SECONDS, write=None, poll_seconds=0.2):
    """Run `command` as `workers` processes on this host and wait for them all.

    Each process gets its worker's environment (`worker_environments`); their output
    is passed on line by line, each line prefixed with `[worker I] `. When one worker
    fails, the others get `grace_seconds` to end by themselves (a multi-worker run
    notices a lost peer and stops) before they are terminated, so that nothing waits
    forever on a worker that is gone.

    Args:
        command: the program and its arguments, `{worker}` and `{workers}` filled in
            per worker.
        workers: how many processes.
        threads: compute threads per worker (default: the host's cores shared out).
        grace_seconds: how long the others may go on after one fails.
        write: where output lines go (default: this process's stdout).

    Returns:
        A `LaunchResult`.

    Examples:
    ```python
    from kgemma.scaling.launch import launch

    result = launch(["python", "-c", "import os; print(os.environ['TF_CONFIG'])"], workers=2)
    assert result.ok
    ```
    """
    if not command:
        raise ValueError("No command to launch.")
    write = write or _stdout_writer()
    started = time.perf_counter()
    processes, relays, ended = [], [], []
    try:
        for index, extra in enumerate(worker_environments(workers, threads=threads)):
            process = subprocess.Popen(
                worker_command(command, index, workers),
                env={**os.environ, **extra},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            processes.append(process)
            relay = threading.Thread(target=_relay, args=(process.stdout, f"[worker {index}] ", write), daemon=True)
            relay.start()
            relays.append(relay)
            # A thread per worker notes when it ends: the first to fail is the cause, the
            # others' failures (a lost peer) its consequence, even within a poll interval.
            threading.Thread(target=lambda p=process, i=index: (p.wait(), ended.append(i)), daemon=True).start()
        first_failure, stopped = _wait(processes, ended, grace_seconds, poll_seconds)
    except BaseException:  # A worker that cannot start, Ctrl-C: take the others down too.
        _terminate([p for p in processes if p.poll() is None])
        raise
    for relay in relays:
        relay.join(timeout=5)
    return LaunchResult([p.returncode for p in processes], first_failure, stopped, time.perf_counter() - started)


def _stdout_writer():
    lock = threading.Lock()

    def write(line):
        with lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    return write


def _wait(processes, ended, grace_seconds, poll_seconds):
    """Wait for every process (`ended`: their indices in the order they ended); after
    the first failure, stop those still running once `grace_seconds` have passed.
    Returns `(first_failure, stopped)`."""
    first_failure, failed_at = None, None
    while True:
        done = list(ended)
        if first_failure is None:
            failed = [i for i in done if processes[i].returncode != 0]
            if failed:
                first_failure, failed_at = failed[0], time.monotonic()
        if len(done) == len(processes):
            return first_failure, []
        if first_failure is not None and time.monotonic() - failed_at >= grace_seconds:
            running = [p for p in processes if p.poll() is None]
            _terminate(running)
            return first_failure, [processes.index(p) for p in running]
        time.sleep(poll_seconds)


def _terminate(processes, wait_seconds=10):
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + wait_seconds
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
