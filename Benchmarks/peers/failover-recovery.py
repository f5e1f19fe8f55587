#!/usr/bin/env python3
"""Client-observed recovery after SIGKILL of the primary: ours against Redis Sentinel, in one run.

Ours: `ftctl failover demo --trials N --json` (a control server and three servers as processes
on loopback, three clients, synchronous replication, 10 ms reports).
Redis Sentinel 7 (Debian's redis-server and redis-sentinel): a master, two replicas and one
sentinel (quorum 1) on loopback, `down-after-milliseconds` D; one client (redis-py's
Sentinel) writes a new key per request; the master is SIGKILLed; recovery is the time from
the kill to the first write the new master acknowledged; every acknowledged key is then read
back from the new master (asynchronous replication may lose some).

    pip install redis; apt-get install redis-server redis-sentinel
    python3 Benchmarks/peers/failover-recovery.py --trials 20 --ftctl .build/release/ftctl
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)  # a server process starting; polled
    return False


def percentile(values, fraction):
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-fraction * len(ordered) // 1)) - 1))
    return ordered[rank]


def sentinel_trial(down_after_ms, load_s):
    import redis
    from redis.sentinel import Sentinel

    directory = tempfile.mkdtemp(prefix="sentinel-")
    ports = [free_port() for _ in range(3)]
    sentinel_port = free_port()
    processes = []
    try:
        for index, port in enumerate(ports):
            arguments = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", directory, "--dbfilename", f"d{index}.rdb"]
            if index > 0:
                arguments += ["--replicaof", "127.0.0.1", str(ports[0])]
            processes.append(subprocess.Popen(arguments, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
        config = os.path.join(directory, "sentinel.conf")
        with open(config, "w") as handle:
            handle.write(f"port {sentinel_port}\nbind 127.0.0.1\n"
                         f"sentinel monitor m 127.0.0.1 {ports[0]} 1\n"
                         f"sentinel down-after-milliseconds m {down_after_ms}\n"
                         "sentinel failover-timeout m 10000\nsentinel parallel-syncs m 2\n")
        processes.append(subprocess.Popen(["redis-sentinel", config], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        wait_port(sentinel_port)
        sentinel = Sentinel([("127.0.0.1", sentinel_port)], socket_timeout=0.1)
        # Until the sentinel has found both replicas.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if len(sentinel.discover_slaves("m")) >= 2 and sentinel.discover_master("m"):
                    break
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.05)  # the sentinel's discovery; polled
        master = sentinel.master_for("m", socket_timeout=0.1, retry_on_timeout=False)
        acknowledged = []
        request = 0

        def write():
            nonlocal request
            request += 1
            key = f"w{request}"
            master.set(key, "1")
            acknowledged.append(key)

        end = time.monotonic() + load_s
        while time.monotonic() < end:
            write()
        killed_at = time.monotonic()
        processes[0].send_signal(signal.SIGKILL)
        recovered = None
        give_up = killed_at + 60
        while recovered is None and time.monotonic() < give_up:
            try:
                write()
                if sentinel.discover_master("m")[1] != ports[0]:
                    recovered = time.monotonic() - killed_at
            except redis.exceptions.RedisError:
                time.sleep(0.001)  # the client's retry pause, as an application would
        end = time.monotonic() + load_s
        while recovered is not None and time.monotonic() < end:
            try:
                write()
            except redis.exceptions.RedisError:
                pass
        lost = 0
        if recovered is not None:
            reader = sentinel.master_for("m", socket_timeout=1)
            for start in range(0, len(acknowledged), 500):
                batch = acknowledged[start:start + 500]
                for _ in range(1000):
                    try:
                        lost += sum(1 for value in reader.mget(batch) if value is None)
                        break
                    except redis.exceptions.RedisError:
                        time.sleep(0.01)  # the sentinel still reconfiguring; the read is retried
        return recovered, len(acknowledged), lost
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--ftctl", default=".build/release/ftctl")
    parser.add_argument("--down-after-ms", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--load-ms", type=int, default=500)
    arguments = parser.parse_args()

    rows = []
    for heartbeat in (10, 100):
        output = subprocess.run(
            [arguments.ftctl, "failover", "demo", "--trials", str(arguments.trials), "--heartbeat-ms", str(heartbeat),
             "--load-ms", str(arguments.load_ms), "--json"], capture_output=True, text=True)
        if output.returncode != 0:
            print(output.stdout, output.stderr, file=sys.stderr)
            sys.exit(1)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        recovery = result["recoveryMs"]
        rows.append((f"ours, {heartbeat} ms reports (sync)", recovery["p50"], recovery["p99"], recovery["max"],
                     result["acknowledged"] / arguments.trials, result["lost"] / arguments.trials))
    for down_after in arguments.down_after_ms:
        recoveries, acknowledged, lost = [], 0, 0
        for _ in range(arguments.trials):
            recovered, count, missing = sentinel_trial(down_after, arguments.load_ms / 1000)
            if recovered is None:
                print(f"sentinel {down_after} ms: a trial never recovered", file=sys.stderr)
                sys.exit(1)
            recoveries.append(recovered * 1000)
            acknowledged += count
            lost += missing
        rows.append((f"Redis Sentinel 7, down-after {down_after} ms (async)", percentile(recoveries, 0.5),
                     percentile(recoveries, 0.99), max(recoveries), acknowledged / arguments.trials,
                     lost / arguments.trials))
    print(f"{arguments.trials} SIGKILL trials each; recovery in ms (client-observed)")
    print(f"{'system':<48} {'p50':>8} {'p99':>8} {'max':>8} {'acked/trial':>12} {'lost/trial':>11}")
    for name, p50, p99, worst, acked, lost in rows:
        print(f"{name:<48} {p50:>8.1f} {p99:>8.1f} {worst:>8.1f} {acked:>12.0f} {lost:>11.1f}")


if __name__ == "__main__":
    main()
