#!/usr/bin/env python3
"""Traffic for scripts/fault-test.sh that tells which gateway answered, so a moved client shows.

  fault-traffic.py serve NAME ADDR PORT
      a TCP server on ADDR:PORT (run in a gateway's namespace): every connection gets NAME and
      a newline, then is closed.
  fault-traffic.py client VIP PORT OUT [INTERVAL_S]
      (run in a client's namespace) connects to VIP:PORT every INTERVAL_S (default 0.1 s) until
      killed; each attempt appends "EPOCH_MS NAME" (the gateway that answered) or "EPOCH_MS -"
      (no answer within 0.3 s; 3 s until the first answer) to OUT.
  fault-traffic.py check OUT...
      one line per client file: its gateways in order of first answer, its answers and misses,
      and the longest run of misses in ms; exit 1 when a client was answered by more than one
      gateway (it moved).

Every connection from one client address is one affinity entry (source-IP persistence), made
established by its first handshake (the client's ACK echoes the gateway's SYN-ACK), so it is
synced to the pair's backup.
"""
import socket
import sys
import time


def serve(name, addr, port):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(128)
    line = (name + "\n").encode()
    while True:
        c, _ = s.accept()
        try:
            c.sendall(line)
        except OSError:
            pass
        c.close()


def client(vip, port, out, interval=0.1):
    interval = float(interval)
    # Until the first answer, the kernel's SYN retransmission (same ISN) is waited for: the
    # appliance drops the first SYN-ACK while it resolves the client's MAC, and only the
    # connection whose SYN-ACK it saw first can establish the client's entry.
    timeout = 3.0
    with open(out, "a", buffering=1) as f:
        while True:
            t = time.time()
            name = "-"
            try:
                with socket.create_connection((vip, int(port)), timeout=timeout) as c:
                    data = c.recv(64).decode(errors="replace").strip()
                    name = data or "-"
                    timeout = 0.3
            except OSError:
                pass
            f.write(f"{int(t * 1000)} {name}\n")
            time.sleep(max(0.0, interval - (time.time() - t)))


def check(paths):
    moved = 0
    for p in paths:
        rows = [line.split() for line in open(p) if line.strip()]
        seen, answers, misses, gap, worst, last_ok = [], 0, 0, 0, 0, None
        for ms, name in ((int(a), b) for a, b in rows):
            if name == "-":
                misses += 1
                continue
            answers += 1
            if name not in seen:
                seen.append(name)
            if last_ok is not None:
                gap = ms - last_ok
                worst = max(worst, gap)
            last_ok = ms
        if len(seen) != 1:
            moved += 1
        print(f"{p.rsplit('/', 2)[-2]} {','.join(seen) or '-'} answers {answers} misses {misses} "
              f"longest_gap_ms {worst}")
    sys.exit(1 if moved else 0)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"serve": serve, "client": client, "check": lambda *a: check(a)}[cmd](*args)
