#!/usr/bin/env python3
"""Soak under churn (issue 17 item 8): a bounded script, not a test; it prints figures.

SOAK_SERVERS session servers (`init-sshd install` + `serve`, default 200) on 127.0.0.1, and
SOAK_CLIENTS client loops (default 6) for SOAK_SECONDS (default 600) against random ones with
the real OpenSSH client: run a command, copy a file up (scp) and back (sftp) and compare,
open a forward (-L) to an echo server and close it, and disconnect abruptly (SIGKILL of a
client in the middle of a command). Then, per server, RSS and open file descriptors at the
start (every server logged into once) and at the end (clients stopped, 5 s to settle), the
processes the servers left behind, and the failed operations. Last, the webhook's RSS before
and after SOAK_ADMISSIONS (default 100,000) admission requests over HTTPS (wrk).

    scripts/soak.py                     # needs root, bubblewrap, openssh-client, wrk
    SOAK_SERVERS=5 SOAK_SECONDS=30 SOAK_ADMISSIONS=5000 scripts/soak.py   # a quick look

Env: INIT_SSHD_BIN, SESSION_SSH_WEBHOOK_BIN, SESSION_SSH_CERTS_BIN (default: the static
release builds in target/x86_64-unknown-linux-musl/release). Exits 1 when an operation
failed, a process was left behind, or memory did not come back (a server's end RSS more
than 1 MiB above its start, or the median's more than 128 KiB). Every loop is bounded;
everything started is killed on exit.
"""

import hashlib
import os
import shutil
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release")
SERVERS = int(os.environ.get("SOAK_SERVERS", "200"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "6"))
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
ADMISSIONS = int(os.environ.get("SOAK_ADMISSIONS", "100000"))
FILE_KIB = 256
RSS_SLACK_KIB = 1024
# The median server must come back to its starting level: within this of its start (the
# servers without idle heap collection ended 548 KiB above it).
MEDIAN_SLACK_KIB = 128

procs = []  # every long-lived process we start, killed on exit
WORK = []  # the work directory, removed on exit


def die(msg):
    print(f"soak: {msg}", file=sys.stderr)
    sys.exit(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def child_of(pid, timeout=10.0):
    """The first child of pid (bwrap's child: the real server)."""
    end = time.time() + timeout
    while time.time() < end:
        kids = descendants(pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    die(f"no child of {pid}")


class Echo(threading.Thread):
    """A TCP echo server on 127.0.0.1, the far end of every -L forward."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def serve(c):
        c.settimeout(30)
        with c:
            try:
                while data := c.recv(65536):
                    c.sendall(data)
            except OSError:
                pass


class Server:
    def __init__(self, work, i, bin_, passwd):
        self.dir = os.path.join(work, f"s{i}")
        self.port = free_port()
        os.makedirs(self.dir)
        r = subprocess.run(
            [bin_, "install", "--dir", self.dir, "--keys", os.path.join(work, "authorized_keys")],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            die(f"install {i}: {r.stderr}")
        env = dict(os.environ, INIT_SSHD_TLS_LISTEN="off", INIT_SSHD_METRICS_LISTEN="off")
        self.log = open(os.path.join(work, f"s{i}.log"), "w")
        # root with an empty HOME: a private /etc/passwd (bwrap), as scripts/bench-sshd.sh does
        self.wrapper = subprocess.Popen(
            ["bwrap", "--dev-bind", "/", "/", "--bind", passwd, "/etc/passwd", "--die-with-parent", "--",
             os.path.join(self.dir, "bin/init-sshd"), "serve", "--dir", self.dir,
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(self.wrapper)
        self.pid = child_of(self.wrapper.pid)
        with open(os.path.join(self.dir, "ssh_host_ed25519_key.pub")) as f:
            self.host_key = " ".join(f.read().split()[:2])

    def sample(self):
        return proc_status(self.pid, "VmRSS"), fd_count(self.pid)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.fails = {}
        self.examples = []

    def record(self, kind, ok, why=""):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1
            if not ok:
                self.fails[kind] = self.fails.get(kind, 0) + 1
                if len(self.examples) < 10:
                    self.examples.append(f"{kind}: {why.strip()[:300]}")


def main():
    if os.geteuid() != 0:
        die("run as root (servers log in as root inside a private /etc/passwd)")
    for tool in ("ssh", "scp", "sftp", "ssh-keygen", "bwrap", "wrk", "curl"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            die(f"missing {tool} (scripts/setup.sh --tests)")
    sshd_bin = os.environ.get("INIT_SSHD_BIN", os.path.join(REL, "init-sshd"))
    hook_bin = os.environ.get("SESSION_SSH_WEBHOOK_BIN", os.path.join(REL, "session-ssh-webhook"))
    certs_bin = os.environ.get("SESSION_SSH_CERTS_BIN", os.path.join(REL, "session-ssh-certs"))
    for b in (sshd_bin, hook_bin, certs_bin):
        if not os.access(b, os.X_OK):
            die(f"no binary at {b} (build the static release binaries first)")

    work = tempfile.mkdtemp(prefix="soak.")
    WORK.append(work)
    key = os.path.join(work, "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    os.rename(key + ".pub", os.path.join(work, "authorized_keys"))
    home = os.path.join(work, "home")
    os.makedirs(home)
    passwd = os.path.join(work, "passwd")
    with open("/etc/passwd") as f, open(passwd, "w") as out:
        for line in f:
            if line.startswith("root:"):
                line = f"root:x:0:0:root:{home}:/bin/bash\n"
            out.write(line)

    t0 = time.time()
    servers = [Server(work, i, sshd_bin, passwd) for i in range(SERVERS)]
    known = os.path.join(work, "known_hosts")
    with open(known, "w") as f:
        for s in servers:
            f.write(f"[127.0.0.1]:{s.port} {s.host_key}\n")
    opts = ["-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "-o", "User=root"]
    echo = Echo()
    echo.start()
    blob = os.path.join(work, "blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(FILE_KIB * 1024))
    with open(blob, "rb") as f:
        blob_sha = hashlib.sha256(f.read()).hexdigest()

    def ssh(s, *args, timeout=60):
        return subprocess.run(["ssh", *opts, "-p", str(s.port), "127.0.0.1", *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    # Every server once (its first login), then the starting figures.
    for s in servers:
        for attempt in range(50):
            if ssh(s, "true").returncode == 0:
                break
            time.sleep(0.2)
        else:
            die(f"server on {s.port} never let us in: {open(s.log.name).read()[-500:]}")
    stats = Stats()
    stop = 0.0  # set when the warm-up is done

    def op_exec(s, tag):
        r = ssh(s, f"echo {tag}")
        stats.record("command", r.returncode == 0 and r.stdout.strip() == tag, r.stderr)

    def op_copy(s, tag):
        remote = f"soak-{tag}"
        up = subprocess.run(["scp", "-q", *opts, "-P", str(s.port), blob, f"127.0.0.1:{remote}"],
                            capture_output=True, text=True, timeout=120)
        back = os.path.join(work, f"back-{tag}")
        down = subprocess.run(["sftp", "-q", *opts, "-P", str(s.port), f"127.0.0.1:{remote}", back],
                              capture_output=True, text=True, timeout=120)
        ok = up.returncode == 0 and down.returncode == 0
        if ok:
            with open(back, "rb") as f:
                ok = hashlib.sha256(f.read()).hexdigest() == blob_sha
        if os.path.exists(back):
            os.remove(back)
        ssh(s, f"rm -f {remote}")
        stats.record("copy", ok, up.stderr + down.stderr)

    def op_forward(s, tag):
        lport = free_port()
        p = subprocess.Popen(["ssh", *opts, "-p", str(s.port), "-N", "-o", "ExitOnForwardFailure=yes",
                              "-L", f"127.0.0.1:{lport}:127.0.0.1:{echo.port}", "127.0.0.1"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok, why = False, ""
        try:
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", lport), timeout=10) as c:
                        msg = f"through-{tag}".encode() * 100
                        c.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            chunk = c.recv(65536)
                            if not chunk:
                                break
                            got += chunk
                        ok = got == msg
                        break
                except OSError as e:
                    why = str(e)
                    if p.poll() is not None:
                        break
                    time.sleep(0.1)
        finally:
            p.terminate()
            try:
                _, err = p.communicate(timeout=10)
                why += err.decode(errors="replace")
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        stats.record("forward", ok, why)

    def op_abrupt(s, tag):
        p = subprocess.Popen(["ssh", *opts, "-p", str(s.port), "127.0.0.1", "sleep 30; echo late"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.5, 2.0))
        p.kill()  # the client vanishes; the server must clean up its side
        p.wait()
        stats.record("abrupt disconnect", True)

    ops = [op_exec, op_copy, op_forward, op_abrupt]

    # Warm-up: every operation once on every server, so that the starting figures are each
    # server's working level (buffers its allocator keeps after the first copy), not its
    # level before it ever moved a file. Not counted.
    warm = Stats()
    queue = list(servers)
    qlock = threading.Lock()

    def warm_up():
        while True:
            with qlock:
                if not queue:
                    return
                s = queue.pop()
            for op in ops:
                try:
                    op(s, f"warm-{s.port}")
                except subprocess.TimeoutExpired:
                    pass

    real = stats
    stats = warm
    pool = [threading.Thread(target=warm_up) for _ in range(CLIENTS)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stats = real
    if sum(warm.fails.values()):
        print(f"soak: warm-up failures: {warm.examples[:3]}", flush=True)
    time.sleep(2)
    start = [s.sample() for s in servers]
    print(f"soak: {SERVERS} servers up, each logged into and warmed up in {time.time() - t0:.0f} s", flush=True)
    stop = time.time() + SECONDS

    def worker(w):
        rng = random.Random(w)
        n = 0
        while time.time() < stop:
            n += 1
            s = rng.choice(servers)
            op = rng.choice(ops)
            try:
                op(s, f"{w}-{n}")
            except subprocess.TimeoutExpired as e:
                stats.record(op.__name__[3:], False, f"timeout: {e}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    last = time.time()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        if time.time() - last >= 60:
            last = time.time()
            # RSS every minute: a plateau and a leak look alike at the end, not on the way.
            rss = [s.sample()[0] for s in servers if os.path.exists(f"/proc/{s.pid}")]
            with stats.lock:
                print(f"soak: {int(stop - time.time())} s left, ops {sum(stats.ops.values())}, "
                      f"failed {sum(stats.fails.values())}, RSS KiB median "
                      f"{int(statistics.median(rss))} max {max(rss)}", flush=True)
    time.sleep(5)
    end = [s.sample() for s in servers]
    left = {s.port: descendants(s.pid) for s in servers}
    left = {p: kids for p, kids in left.items() if kids}
    gone = [s.port for s in servers if not os.path.exists(f"/proc/{s.pid}")]
    clients_left = subprocess.run(["pgrep", "-f", f"UserKnownHostsFile={known}"],
                                  capture_output=True, text=True).stdout.split()

    def summary(values):
        return f"min {min(values)}, median {int(statistics.median(values))}, max {max(values)}"

    print(f"soak: {SERVERS} servers, {CLIENTS} client loops, {SECONDS} s")
    print("soak: operations " + ", ".join(f"{k} {v} ({stats.fails.get(k, 0)} failed)"
                                          for k, v in sorted(stats.ops.items())))
    rss0, fd0 = [a for a, _ in start], [b for _, b in start]
    rss1, fd1 = [a for a, _ in end], [b for _, b in end]
    grew = [(s.port, a, b) for s, (a, _), (b, _) in zip(servers, start, end) if b > a + RSS_SLACK_KIB]
    print(f"soak: RSS per server KiB  start {summary(rss0)}  end {summary(rss1)}  "
          f"(sum {sum(rss0) // 1024} -> {sum(rss1) // 1024} MiB)")
    print(f"soak: fds per server      start {summary(fd0)}  end {summary(fd1)}")
    print(f"soak: servers whose RSS grew by more than {RSS_SLACK_KIB} KiB: {len(grew)} {grew[:5]}")
    median_delta = statistics.median(rss1) - statistics.median(rss0)
    print(f"soak: median RSS change {median_delta:+.0f} KiB (at most +{MEDIAN_SLACK_KIB})")
    print(f"soak: processes left behind: {sum(len(k) for k in left.values())} under servers "
          f"{list(left)[:5]}, {len(clients_left)} clients; servers gone: {len(gone)}")
    for e in stats.examples:
        print(f"soak: failure: {e}")

    rss_a, rss_b, admitted = webhook_soak(work, hook_bin, certs_bin)
    print(f"soak: webhook RSS {rss_a // 1024} MiB before, {rss_b // 1024} MiB after {admitted} admissions")
    bad = sum(stats.fails.values()) or left or clients_left or gone or grew or median_delta > MEDIAN_SLACK_KIB
    print("soak: " + ("FAIL" if bad else "PASS"))
    return 1 if bad else 0


def webhook_soak(work, hook_bin, certs_bin):
    """The webhook's RSS before and after ADMISSIONS admission requests (wrk, HTTPS)."""
    port, mport = free_port(), free_port()
    subprocess.run([certs_bin, "pem", "--service", "soak", "--namespace", "soak", "--dns", "localhost",
                    "--ip", "127.0.0.1", "--out-dir", os.path.join(work, "tls")],
                   check=True, capture_output=True)
    body = os.path.join(work, "review.json")
    with open(body, "w") as f:
        f.write(REVIEW)
    with open(os.path.join(work, "config.yaml"), "w") as f:
        f.write("platform: jupyterhub\n")
    log = open(os.path.join(work, "webhook.log"), "w")
    p = subprocess.Popen([hook_bin, "--log-format", "json", "serve", "--config", os.path.join(work, "config.yaml"),
                          "--tls-cert", os.path.join(work, "tls/tls.crt"), "--tls-key", os.path.join(work, "tls/tls.key"),
                          "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
                          "--shutdown-delay-seconds", "0"], stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    procs.append(p)

    def admitted():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        except OSError:
            return -1
        return int(sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith("session_ssh_admission_requests_total")))

    for _ in range(100):
        if admitted() >= 0:
            break
        time.sleep(0.1)
    lua = os.path.join(work, "post.lua")
    with open(lua, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'local f = assert(io.open("{body}", "rb"))\nwrk.body = f:read("*a")\nf:close()\n')
    url = f"https://127.0.0.1:{port}/mutate"
    subprocess.run(["wrk", "-t", "2", "-c", "8", "-d", "3s", "-s", lua, url], capture_output=True)
    before = proc_status(p.pid, "VmRSS")
    base = admitted()
    for _ in range(200):  # bounded: 200 x 10 s at most
        if admitted() - base >= ADMISSIONS:
            break
        subprocess.run(["wrk", "-t", "2", "-c", "8", "-d", "10s", "-s", lua, url], capture_output=True)
    time.sleep(2)
    return before, proc_status(p.pid, "VmRSS"), admitted() - base


# An AdmissionReview of a JupyterHub session pod, as the apiserver sends it.
REVIEW = """{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
 "uid": "00000000-0000-0000-0000-000000000001", "operation": "CREATE", "namespace": "jhub",
 "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
 "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-alice", "namespace": "jhub",
  "labels": {"component": "singleuser-server", "hub.jupyter.org/username": "alice"},
  "annotations": {"hub.jupyter.org/username": "alice"}},
  "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook",
   "args": ["jupyterhub-singleuser"], "ports": [{"containerPort": 8888, "name": "notebook-port"}]}]}}}}"""


if __name__ == "__main__":
    rc = 2
    try:
        rc = main()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for w in WORK:
            shutil.rmtree(w, ignore_errors=True)
    sys.exit(rc)
