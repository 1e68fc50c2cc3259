#!/usr/bin/env python3
"""Upload every file of a directory with tuspy, each HTTP request to a random node.

Usage: tuspy_nodes.py NODES DIR CHUNK_SIZE THREADS SEED

NODES is a comma list of base URLs (http://127.0.0.1:PORT), every one serving the same
uploads (tusring nodes sharing Redis and a data directory). tuspy makes its requests with
`requests`; each one (the creation, every PATCH, the final HEAD) is sent to a node drawn
at random, whatever host the upload URL names, as a load balancer without sticky
sessions would.

Prints one line per file, `<file name> <upload URL>`, then `node <base> <METHOD>=<n> ...`
per node. Exits non-zero if an upload fails.
"""

import os
import random
import sys
import threading
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
import requests.api
from tusclient import client

COUNTS = Counter()
COUNTS_LOCK = threading.Lock()
RNG = random.Random()
RNG_LOCK = threading.Lock()


def main() -> int:
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    nodes = sys.argv[1].split(",")
    folder, chunk, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    RNG.seed(int(sys.argv[5]))
    original = requests.api.request

    def any_node(method, url, **kwargs):
        with RNG_LOCK:
            node = RNG.choice(nodes)
        parts = urllib.parse.urlsplit(url)
        target = urllib.parse.urlsplit(node)
        url = urllib.parse.urlunsplit(parts._replace(scheme=target.scheme, netloc=target.netloc))
        with COUNTS_LOCK:
            COUNTS[(node, method.upper())] += 1
        return original(method, url, **kwargs)

    # requests.post/patch/head (which tuspy calls) look `request` up in requests.api.
    requests.api.request = any_node

    def upload(name):
        path = os.path.join(folder, name)
        size = os.path.getsize(path)
        tus = client.TusClient(nodes[0] + "/files/")
        uploader = tus.uploader(file_path=path, chunk_size=chunk, retries=0,
                                metadata={"filename": name})
        uploader.set_url(uploader.create_url())
        uploader.offset = 0
        while uploader.offset < size:
            before = uploader.offset
            uploader.upload_chunk()
            if uploader.offset <= before:
                raise RuntimeError(f"{name}: no progress at offset {before}")
        if uploader.get_offset() != size:
            raise RuntimeError(f"{name}: HEAD offset is not {size}")
        return name, uploader.url

    names = sorted(os.listdir(folder))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        done = list(pool.map(upload, names))
    for name, url in done:
        print(name, url)
    for node in nodes:
        counts = " ".join(
            f"{m}={COUNTS[(node, m)]}" for m in ("POST", "PATCH", "HEAD"))
        print("node", node, counts)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
