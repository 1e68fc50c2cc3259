#!/usr/bin/env python3
"""How fast `--storage hybrid-s3` moves a finished upload to S3, against the S3 server's
own upload rate for the same file on the same machine, alternating, in the same run.

    scripts/bench/s3-transfer.py [--size MiB] [--repeats N] [--bin PATH] [--workers N]
                                 [--python PATH]

The S3 server is moto's (`python -m moto.server`, PyPI `moto[server]`, in memory) and the
baseline client is boto3 (installed with moto). Both come from the Python given by
--python, default target/interop-venv/bin/python: scripts/test.sh makes that venv from
tests/interop/requirements.txt, or make it alone with

    python3 -m venv target/interop-venv
    target/interop-venv/bin/pip install -r tests/interop/requirements.txt

The script runs itself again under that Python when it is not already running there.

It starts moto on a free 127.0.0.1 port, creates a bucket, and starts the tusring binary
(default target/release/tusring; build it with `cargo build --release --bin tusring`)
with `--storage hybrid-s3` and `--s3-*` flags pointing at moto (path style, dummy keys:
moto checks no signature), its data on tmpfs (/dev/shm) when there is one. It writes a
source file of --size MiB (default 1024) there and then, --repeats times (default 3), in
alternating order:

  tusring  POST /files (Upload-Length), then one PATCH of the whole file (sent with
           sendfile(2)); the clock starts when the PATCH is answered (its bytes are on
           disk; the transfer to S3 starts then) and stops when GET /metrics, polled
           every 10 ms, shows `tusring_s3_stored_total` grown (object stored, local file
           removed). tusring sends 8 MiB parts, 4 in flight.
  boto3    upload_file of the source file to the same bucket with the same settings:
           multipart, 8 MiB parts, 4 at once; the clock covers the whole call.

Each object is checked for its size and deleted after its run, outside the timing.
Prints each run in MiB/s, the median, min and max per client, and the load average
before and after. moto is single-process Python: expect it, not the client, to be the
bottleneck, which is what the comparison shows.
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

BUCKET = "bench"
PART = 8 << 20
IN_FLIGHT = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_answer(sock):
    """Reads one final answer; returns (status, headers, body)."""
    buf = b""
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
            continue
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            buf += sock.recv(65536)
        return status, headers, buf[:length]


def request(port, head, body_file=None, size=0):
    """Sends `head` (and the file as the body, with sendfile); returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head.encode())
        if body_file is not None:
            with open(body_file, "rb") as f:
                sent = 0
                while sent < size:
                    sent += s.sendfile(f, sent, size - sent)
        return read_answer(s)


def metric(port, name):
    st, _, body = request(port, "GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    assert st == 200, st
    m = re.search(rf"^{name} (\d+)", body.decode(), re.M)
    return int(m.group(1)) if m else 0


def wait_listening(log_path, proc, what):
    for _ in range(600):
        m = re.search(r"listening on http://[^ :]+:(\d+)", open(log_path).read())
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"{what} did not start: " + open(log_path).read())


def run_tusring(port, src, size, s3):
    """One upload through tusring; seconds from the last PATCH's answer to the object stored."""
    before = metric(port, "tusring_s3_stored_total")
    failures = metric(port, "tusring_s3_failures_total")
    st, h, _ = request(port, f"POST /files HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {size}\r\nContent-Length: 0\r\n\r\n")
    assert st == 201, (st, h)
    loc = "/files/" + h["location"].rsplit("/", 1)[1]
    st, h, _ = request(
        port,
        f"PATCH {loc} HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size}\r\n\r\n",
        src, size)
    answered = time.perf_counter()
    assert st == 204 and int(h["upload-offset"]) == size, (st, h)
    while metric(port, "tusring_s3_stored_total") == before:
        if metric(port, "tusring_s3_failures_total") != failures:
            sys.exit("tusring's transfer to S3 failed; see its log")
        time.sleep(0.01)
    secs = time.perf_counter() - answered
    key = loc.rsplit("/", 1)[1]  # no --dir-structure: the key is the ID
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    s3.delete_object(Bucket=BUCKET, Key=key)
    return secs


def run_boto3(s3, config, src, size):
    key = f"boto3-{time.monotonic_ns()}"
    start = time.perf_counter()
    s3.upload_file(src, BUCKET, key, Config=config)
    secs = time.perf_counter() - start
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    s3.delete_object(Bucket=BUCKET, Key=key)
    return secs


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="MiB (default 1024)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(root, "target/release/tusring"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--python", default=os.path.join(root, "target/interop-venv/bin/python"),
                    help="a Python with moto[server] (and so boto3); default the test venv")
    args = ap.parse_args()
    if os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(args.python)))):
        if not os.path.exists(args.python):
            sys.exit(f"no {args.python}: make it with scripts/test.sh or see --help")
        os.execv(args.python, [args.python, os.path.abspath(__file__)] + sys.argv[1:])
    import boto3
    from boto3.s3.transfer import TransferConfig

    size = args.size << 20
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = tempfile.mkdtemp(prefix="tusring-s3-bench.", dir=parent)
    src = os.path.join(work, "source.bin")
    with open(src, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(args.size):
            f.write(block)
    data = os.path.join(work, "data")
    procs = []
    logs = []
    try:
        moto_port = free_port()
        moto_log = open(os.path.join(work, "moto.log"), "w")
        logs.append(moto_log)
        procs.append(subprocess.Popen(
            [args.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdin=subprocess.DEVNULL, stdout=moto_log, stderr=subprocess.STDOUT))
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", moto_port)).close()
                break
            except OSError:
                if procs[0].poll() is not None:
                    sys.exit("moto did not start: " + open(moto_log.name).read())
                time.sleep(0.05)
        url = f"http://127.0.0.1:{moto_port}"
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="test-access", aws_secret_access_key="test-secret",
                          config=boto3.session.Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket=BUCKET)
        config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                                max_concurrency=IN_FLIGHT, use_threads=True)

        log = open(os.path.join(work, "server.log"), "w")
        logs.append(log)
        server = subprocess.Popen(
            [args.bin, "--host", "127.0.0.1", "--port", "0", "--workers", str(args.workers),
             "--data-dir", data, "--info-dir", data, "--disable-access-log",
             "--storage", "hybrid-s3", "--s3-url", url, "--s3-bucket", BUCKET,
             "--s3-region", "us-east-1", "--s3-access-key", "test-access",
             "--s3-secret-key", "test-secret", "--s3-force-path-style"],
            stderr=log)
        procs.append(server)
        port = wait_listening(log.name, server, "tusring")

        load_before = os.getloadavg()
        print(f"{args.size} MiB, {args.repeats} rounds; load average before {load_before[0]:.2f} "
              f"{load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
        results = {"tusring": [], "boto3": []}
        for i in range(args.repeats):
            order = ["tusring", "boto3"] if i % 2 == 0 else ["boto3", "tusring"]
            for who in order:
                if who == "tusring":
                    secs = run_tusring(port, src, size, s3)
                else:
                    secs = run_boto3(s3, config, src, size)
                rate = args.size / secs
                results[who].append(rate)
                print(f"run {i + 1} {who:7}: {rate:6.1f} MiB/s ({secs:.2f} s)", flush=True)
        load_after = os.getloadavg()
        print()
        for who in ("tusring", "boto3"):
            v = results[who]
            print(f"{who:7}: median {statistics.median(v):.1f} MiB/s [{min(v):.1f}-{max(v):.1f}] "
                  f"over {len(v)} runs of {args.size} MiB")
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute)")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
