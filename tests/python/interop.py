#!/usr/bin/env python3
"""Interop check for init-sshd with a second SSH implementation (asyncssh, pure Python).

Connects with a given key, verifying the host key against a known_hosts file, and exercises:
exec (stdout, stderr, exit status), exit-signal, window-change, a signal from the client,
stdin, a pty, SFTP write/read/stat, a local port forward
(direct-tcpip) to a port on the server side. Prints one "ok ..." line per check and
"interop-ok" at the end; exits non-zero on the first failure.
"""

import argparse
import asyncio
import hashlib
import os
import sys

import asyncssh


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


async def main(a):
    async with asyncssh.connect(
        a.host,
        port=a.port,
        username=a.user,
        client_keys=[a.key],
        known_hosts=a.known_hosts,
        agent_path=None,
        config=None,
    ) as conn:
        print(
            "negotiated:",
            conn.get_extra_info("server_version"),
            conn.get_extra_info("send_cipher"),
            conn.get_extra_info("send_mac") or "aead",
            flush=True,
        )
        r = await conn.run("echo out; echo err >&2; exit 3", check=False)
        check(r.stdout == "out\n" and r.stderr == "err\n" and r.exit_status == 3,
              f"exec stdout/stderr/exit ({r.stdout!r}, {r.stderr!r}, {r.exit_status})")

        data = os.urandom(3 * 1024 * 1024)
        r = await conn.run("sha256sum", input=data, encoding=None, check=False)
        check(r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest(), "stdin 3 MiB sha256")

        r = await conn.run("tty", term_type="xterm-256color", term_size=(100, 30), check=False)
        check(r.stdout.strip().startswith("/dev/pts/"), f"pty ({r.stdout.strip()!r})")
        r = await conn.run("stty size", term_type="xterm", term_size=(100, 30), check=False)
        check(r.stdout.strip() == "30 100", f"pty size ({r.stdout.strip()!r})")

        r = await conn.run("kill -TERM $$", check=False)
        check(r.exit_signal is not None and r.exit_signal[0] == "TERM",
              f"exit-signal ({r.exit_signal}, status {r.exit_status})")

        proc = await conn.create_process("read x; stty size", term_type="xterm", term_size=(80, 24))
        proc.change_terminal_size(120, 40)
        await asyncio.sleep(0.5)
        proc.stdin.write("go\n")
        r = await asyncio.wait_for(proc.wait(check=False), 20)
        check(r.stdout.strip().endswith("40 120"), f"window-change ({r.stdout.strip()!r})")

        proc = await conn.create_process(
            "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done")
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        check(line == "ready\n", f"signal target ready ({line!r})")
        proc.send_signal("INT")
        r = await asyncio.wait_for(proc.wait(check=False), 20)
        check("got-int" in r.stdout and r.exit_status == 7,
              f"signal from client ({r.stdout!r}, {r.exit_status})")

        async with conn.start_sftp_client() as sftp:
            blob = os.urandom(2 * 1024 * 1024 + 5)
            async with sftp.open("interop.bin", "wb") as f:
                await f.write(blob)
            st = await sftp.stat("interop.bin")
            check(st.size == len(blob), f"sftp stat size ({st.size})")
            async with sftp.open("interop.bin", "rb") as f:
                back = await f.read()
            check(back == blob, "sftp write/read round trip")
            names = await sftp.listdir(".")
            check("interop.bin" in names, "sftp listdir")
            await sftp.remove("interop.bin")

        if a.forward_port:
            reader, writer = await conn.open_connection("127.0.0.1", a.forward_port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            resp = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            check(resp.startswith(b"HTTP/1.0 200") and resp.endswith(a.forward_expect.encode()),
                  f"direct-tcpip ({resp[:40]!r})")
    print("interop-ok", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="jovyan")
    p.add_argument("--key", required=True)
    p.add_argument("--known-hosts", required=True)
    p.add_argument("--forward-port", type=int, default=0)
    p.add_argument("--forward-expect", default="")
    asyncio.run(asyncio.wait_for(main(p.parse_args()), 120))
