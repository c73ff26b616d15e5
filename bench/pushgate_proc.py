"""A pushgate server process for the bench scripts written in Python
(heartbeat-cost, reconnect-storm): start it on a loopback port, read its
open connections from /metrics and its CPU time from /proc, stop it by PID.
Standard library only."""

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_us(pid):
    """utime + stime of `pid`, in µs (clock ticks: compare over seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // TICK


def open_connections(port):
    """Connections the server holds, all transports; -1 while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return sum(int(v) for v in re.findall(r'^pushgate_connections\{[^}]*\} (\d+)', text, re.M))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(binary, port, args=(), cpu=None):
    """`pushgate serve` on 127.0.0.1:`port`, returned once /metrics answers;
    pinned to CPU `cpu` (taskset) when given."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    proc = subprocess.Popen(
        [*pin, binary, "serve", "--listen", f"127.0.0.1:{port}", "--no-demo", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while open_connections(port) < 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"pushgate did not start: {binary} {' '.join(args)}")
        time.sleep(0.01)
    return proc


def stop(proc, sig=signal.SIGTERM):
    """Ends a process this script started, by its PID; kills it after 15 s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
