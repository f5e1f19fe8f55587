#!/usr/bin/env python3
"""Client-observed recovery after SIGKILL of the primary: ours against Redis Sentinel and a bare
etcd-lease election, in one run.

Ours: `ftctl failover demo --trials N --json` (a control server and three servers as processes
on loopback, three clients, synchronous replication, 10 ms reports).
Redis Sentinel 7 (Debian's redis-server and redis-sentinel): a master, two replicas and one
sentinel (quorum 1) on loopback, `down-after-milliseconds` D; one client (redis-py's
Sentinel) writes a new key per request; the master is SIGKILLed; recovery is the time from
the kill to the first write the new master acknowledged; every acknowledged key is then read
back from the new master (asynchronous replication may lose some).

A bare etcd-lease election (with --etcd URL; etcd started with --heartbeat-interval=50
--election-timeout=500): two candidate processes, each granting itself a lease (TTL 1 s, etcd's
floor at those settings), taking `leader` in a create-if-absent transaction, renewing every
quarter TTL and, while leader, answering a client on its own port; the loser polls the key
every 10 ms and campaigns when it is gone. The client writes to whoever the key names; the
leader is SIGKILLed; recovery is the time to the first write the new leader answered. This is
the election alone, with no replication (what an etcd-lease recipe gives for free); ours
through etcd (`ftctl failover demo --control etcd`) runs beside it.

    pip install redis; apt-get install redis-server redis-sentinel etcd-server
    python3 Benchmarks/peers/failover-recovery.py --trials 20 --ftctl .build/release/ftctl \
        --etcd http://127.0.0.1:2379
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
            # No diskless-sync delay: Redis 7 waits 5 s by default for more replicas before a full
            # sync, so a replica that (re)connects holds nothing for 5 s (the load then ran against
            # unsynced replicas, and the sentinel's failover ended only after the other replica's
            # 5 s resync, which redis-py's Sentinel client waits for).
            arguments = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", directory, "--dbfilename", f"d{index}.rdb",
                         "--repl-diskless-sync-delay", "0"]
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
        # Until both replicas have finished their first sync (the load runs against a replicated master).
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                links = [redis.Redis(port=port, socket_timeout=0.5).info("replication").get("master_link_status")
                         for port in ports[1:]]
                if links == ["up", "up"]:
                    break
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.05)  # the replicas' first sync; polled
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


CANDIDATE = r"""
import base64, json, socket, sys, threading, time, urllib.request
etcd, key, name, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def call(path, body):
    request = urllib.request.Request(etcd + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=2) as answer:
        return json.loads(answer.read())
b64 = lambda text: base64.b64encode(text.encode()).decode()
lease = call("/v3/lease/grant", {"TTL": 1})["ID"]
leading = threading.Event()
def renew():
    while True:
        time.sleep(0.25)  # a quarter of the TTL, as etcd's own clients renew
        if "TTL" not in call("/v3/lease/keepalive", {"ID": lease}).get("result", {}):
            leading.clear()
            return
threading.Thread(target=renew, daemon=True).start()
def serve():
    server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port)); server.listen(16)
    while True:
        connection, _ = server.accept()
        with connection:
            for line in connection.makefile():
                connection.sendall(b"ok\n" if leading.is_set() else b"no\n")
threading.Thread(target=serve, daemon=True).start()
print("ready", flush=True)
while True:
    if not leading.is_set():
        won = call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": b64(f"{name}:{port}"), "lease": lease}}]})
        if won.get("succeeded"):
            leading.set()
    time.sleep(0.01)  # the loser's poll of the key
"""


def etcd_trial(etcd, load_s):
    import base64
    import urllib.request

    key = f"/ft/peer-election/{os.getpid()}-{time.monotonic_ns()}"
    ports = [free_port(), free_port()]
    processes = [subprocess.Popen([sys.executable, "-c", CANDIDATE, etcd, key, name, str(port)],
                                  stdout=subprocess.PIPE, text=True) for name, port in zip("ab", ports)]
    try:
        for process in processes:
            process.stdout.readline()

        def leader():
            request = urllib.request.Request(etcd + "/v3/kv/range", method="POST",
                                             data=json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode())
            with urllib.request.urlopen(request, timeout=2) as answer:
                kvs = json.loads(answer.read()).get("kvs", [])
            if not kvs:
                return None
            name, port = base64.b64decode(kvs[0]["value"]).decode().split(":")
            return name, int(port)

        def write(target):
            try:
                with socket.create_connection(("127.0.0.1", target[1]), timeout=0.1) as connection:
                    connection.sendall(b"w\n")
                    return connection.makefile().readline().strip() == "ok"
            except OSError:
                return False

        current = None
        end = time.monotonic() + 10
        while current is None and time.monotonic() < end:
            current = leader()
            time.sleep(0.01)  # the first election; polled
        acknowledged = 0
        end = time.monotonic() + load_s
        while time.monotonic() < end:
            acknowledged += write(current)
        victim = processes["ab".index(current[0])]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        while time.monotonic() < killed_at + 30:
            now = leader()
            if now is not None and now[0] != current[0] and write(now):
                return time.monotonic() - killed_at, acknowledged
            time.sleep(0.001)  # the client's retry pause
        return None, acknowledged
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
    parser.add_argument("--etcd", help="etcd's client URL: adds ours through etcd and a bare etcd-lease election")
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
    if arguments.etcd:
        output = subprocess.run(
            [arguments.ftctl, "failover", "demo", "--trials", str(arguments.trials), "--control", "etcd", "--etcd",
             arguments.etcd, "--load-ms", str(arguments.load_ms), "--json"], capture_output=True, text=True)
        if output.returncode != 0:
            print(output.stdout, output.stderr, file=sys.stderr)
            sys.exit(1)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        recovery = result["recoveryMs"]
        rows.append(("ours through etcd, lease 1 s (sync)", recovery["p50"], recovery["p99"], recovery["max"],
                     result["acknowledged"] / arguments.trials, result["lost"] / arguments.trials))
        recoveries, acknowledged = [], 0
        for _ in range(arguments.trials):
            recovered, count = etcd_trial(arguments.etcd.rstrip("/"), arguments.load_ms / 1000)
            if recovered is None:
                print("etcd election: a trial never recovered", file=sys.stderr)
                sys.exit(1)
            recoveries.append(recovered * 1000)
            acknowledged += count
        rows.append(("bare etcd-lease election, TTL 1 s (no data)", percentile(recoveries, 0.5),
                     percentile(recoveries, 0.99), max(recoveries), acknowledged / arguments.trials, float("nan")))
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
