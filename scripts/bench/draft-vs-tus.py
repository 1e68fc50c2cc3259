#!/usr/bin/env python3
"""One big upload through the IETF resumable-uploads draft (interop version 8) against
the same upload as a tus PATCH, on one tusring, alternating, in the same run.

    scripts/bench/draft-vs-tus.py [--size MiB] [--repeats N] [--bin PATH] [--workers N]

It starts the tusring binary (default target/release/tusring; build it with
`cargo build --release --bin tusring`) on 127.0.0.1 with its data on tmpfs (/dev/shm) when
there is one, writes a source file of --size MiB (default 1024) there, and then, --repeats
times (default 5) in alternating order:

  tus    POST /files (Upload-Length), then one PATCH of the whole file;
  draft  POST /files with Upload-Draft-Interop-Version: 8, Upload-Complete: ?1 and the
         whole file as the body: the 104 with Location arrives before the body is sent.

Bodies go out with sendfile(2) from the source file, so the client costs little CPU
next to the server. The time is from the request head (the PATCH's for tus, the POST's
for the draft) to the final answer; each upload's stored size is checked and its files
removed after it, outside the timing. Prints each run in MB/s (10^6 bytes/s) and the
server's CPU time per GB over the upload (user + system, all its threads, from /proc: the
figure that shows whether both take the same path, and that the machine's load does not
distort the way it distorts wall time), then the median, min and max per protocol, and the
load average before and after.
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def read_answers(sock):
    """Reads answers up to and including the final one; returns (status, headers, interims)."""
    buf = b""
    interims = []
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"connection closed; got {buf[:200]!r}")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if 100 <= status < 200:
            interims.append((status, headers))
            continue
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        return status, headers, interims


def server_cpu(pid):
    """The server's CPU time so far (user + system, every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(port, head, body_file=None, size=0, wait_interim=False):
    """Sends `head` (and the file as the body); returns (status, headers, interims, seconds)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        s.sendall(head.encode())
        early = []
        if wait_interim:
            # The draft's 104 comes before the body is read: take it before sending.
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            first = buf.split(b"\r\n", 1)[0]
            early.append(first.decode())
        if body_file is not None:
            with open(body_file, "rb") as f:
                sent = 0
                while sent < size:
                    sent += s.sendfile(f, sent, size - sent)
        status, headers, interims = read_answers(s)
        return status, headers, early + interims, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="MiB (default 1024)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bin", default="target/release/tusring")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    size = args.size << 20
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = tempfile.mkdtemp(prefix="tusring-draft-bench.", dir=parent)
    src = os.path.join(work, "source.bin")
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(args.size):
            f.write(block)
    data = os.path.join(work, "data")
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.bin, "--host", "127.0.0.1", "--port", "0", "--workers", str(args.workers),
         "--data-dir", data, "--info-dir", data, "--disable-access-log"],
        stderr=log,
    )
    try:
        port = None
        for _ in range(200):
            m = re.search(r"listening on http://[^ :]+:(\d+)", open(log.name).read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        if port is None:
            sys.exit("tusring did not start: " + open(log.name).read())
        load_before = os.getloadavg()
        results = {"tus": [], "draft": []}
        cpu = {"tus": [], "draft": []}
        for i in range(args.repeats):
            order = ["tus", "draft"] if i % 2 == 0 else ["draft", "tus"]
            for proto in order:
                if proto == "tus":
                    st, h, _, _ = request(port, f"POST /files HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {size}\r\nContent-Length: 0\r\n\r\n")
                    assert st == 201, (st, h)
                    loc = "/files/" + h["location"].rsplit("/", 1)[1]
                    cpu_before = server_cpu(server.pid)
                    st, h, _, secs = request(
                        port,
                        f"PATCH {loc} HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n",
                        src, size)
                    assert st == 204 and int(h["upload-offset"]) == size, (st, h)
                else:
                    cpu_before = server_cpu(server.pid)
                    st, h, interims, secs = request(
                        port,
                        f"POST /files HTTP/1.1\r\nHost: b\r\nUpload-Draft-Interop-Version: 8\r\n"
                        f"Upload-Complete: ?1\r\nContent-Length: {size}\r\n\r\n",
                        src, size, wait_interim=True)
                    assert st == 201 and h.get("upload-complete") == "?1", (st, h)
                    assert interims and interims[0].startswith("HTTP/1.1 104"), interims
                    loc = "/files/" + h["location"].rsplit("/", 1)[1]
                upload_id = loc.rsplit("/", 1)[1]
                path = os.path.join(data, upload_id)
                assert os.path.getsize(path) == size, (proto, os.path.getsize(path))
                os.remove(path)
                os.remove(path + ".info")
                cpu_gb = (server_cpu(server.pid) - cpu_before) / (size / 1e9)
                mbs = size / secs / 1e6
                results[proto].append(mbs)
                cpu[proto].append(cpu_gb)
                print(f"run {i + 1} {proto:5}: {mbs:7.0f} MB/s ({secs:.3f} s), server CPU {cpu_gb:.2f} s/GB", flush=True)
        load_after = os.getloadavg()
        print()
        for proto in ("tus", "draft"):
            v = results[proto]
            c = cpu[proto]
            print(f"{proto:5}: median {statistics.median(v):.0f} MB/s [{min(v):.0f}-{max(v):.0f}], "
                  f"server CPU median {statistics.median(c):.2f} s/GB [{min(c):.2f}-{max(c):.2f}] "
                  f"over {len(v)} runs of {args.size} MiB")
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute)")
    finally:
        server.terminate()
        server.wait()
        log.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
