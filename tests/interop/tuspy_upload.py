#!/usr/bin/env python3
"""Upload one file to a tus server with tuspy (the official Python client).

Usage: tuspy_upload.py ENDPOINT FILE CHUNK_SIZE [checksum]

With `checksum`, tuspy sends `Upload-Checksum: sha1 <digest>` with every PATCH
(`upload_checksum=True`).

Prints `requests: POST=<n> PATCH=<n>` and then the upload URL on the last line of stdout.
Exits non-zero if the upload fails.
"""

import os
import sys

from tusclient import client


def main() -> int:
    if len(sys.argv) not in (4, 5) or sys.argv[4:] not in ([], ["checksum"]):
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, path, chunk_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    upload_checksum = sys.argv[4:] == ["checksum"]
    size = os.path.getsize(path)

    tus = client.TusClient(endpoint)
    uploader = tus.uploader(
        file_path=path,
        chunk_size=chunk_size,
        metadata={"filename": os.path.basename(path)},
        retries=0,
        upload_checksum=upload_checksum,
    )
    # The same steps as Uploader.upload(), counting the PATCH requests.
    uploader.set_url(uploader.create_url())
    uploader.offset = 0
    patches = 0
    while uploader.offset < size:
        before = uploader.offset
        uploader.upload_chunk()
        patches += 1
        if uploader.offset <= before:
            print(f"no progress at offset {before}", file=sys.stderr)
            return 1
    if uploader.offset != size:
        print(f"final offset {uploader.offset} != size {size}", file=sys.stderr)
        return 1
    server_offset = uploader.get_offset()
    if server_offset != size:
        print(f"HEAD offset {server_offset} != size {size}", file=sys.stderr)
        return 1
    print(f"requests: POST=1 PATCH={patches}")
    print(uploader.url)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
