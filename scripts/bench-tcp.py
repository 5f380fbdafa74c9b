#!/usr/bin/env python3
"""TCP source/sink for scripts/bench-sshd.sh (ssh -L throughput). Loopback only, one connection.

  bench-tcp.py sink PORTFILE          listen on 127.0.0.1:0, write the port to PORTFILE, accept one
                                      connection, read to EOF, print the byte count
  bench-tcp.py source PORTFILE BYTES  listen likewise, accept one connection, send BYTES, close
  bench-tcp.py send PORT BYTES        connect to 127.0.0.1:PORT, send BYTES, half-close, wait for EOF
  bench-tcp.py recv PORT              connect to 127.0.0.1:PORT, read to EOF, print the byte count
"""
import socket
import sys

BUF = 1 << 20


def listen(portfile):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(120)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    import os
    os.rename(tmp, portfile)
    c, _ = s.accept()
    c.settimeout(600)
    return c


def drain(c):
    n = 0
    while True:
        b = c.recv(BUF)
        if not b:
            return n
        n += len(b)


def pour(c, total):
    chunk = bytes(BUF)
    left = total
    while left > 0:
        k = c.send(chunk[: min(left, BUF)])
        left -= k


def main():
    mode = sys.argv[1]
    if mode == "sink":
        c = listen(sys.argv[2])
        print(drain(c))
    elif mode == "source":
        c = listen(sys.argv[2])
        pour(c, int(sys.argv[3]))
        c.close()
    elif mode == "send":
        c = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=600)
        pour(c, int(sys.argv[3]))
        c.shutdown(socket.SHUT_WR)
        drain(c)
    elif mode == "recv":
        c = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=600)
        print(drain(c))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
