#!/usr/bin/env python3
"""Upload one file with tuspy, interrupted half-way and resumed by a second uploader
that finds the upload's URL in tuspy's URL storage (its file fingerprint), as an
application restarted after a crash does.

Usage: tuspy_resume.py ENDPOINT FILE CHUNK_SIZE STORAGE_FILE KEY=VALUE...

The KEY=VALUE pairs are the upload's metadata (e.g. `answer=chooseid id=my-key`, for a
pre-create hook that chooses the upload's ID).

Prints `created <url> offset=<n>` once the first uploader stops (half the file sent),
`resumed <url> offset=<n>` for the second (the URL it resumes with and the offset its
HEAD found), then the upload URL on the last line. Exits non-zero if the upload fails.
"""

import os
import sys

from tusclient import client
from tusclient.storage.filestorage import FileStorage


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, path, chunk_size, storage = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    metadata = dict(kv.split("=", 1) for kv in sys.argv[5:])
    size = os.path.getsize(path)

    def uploader():
        return client.TusClient(endpoint).uploader(
            file_path=path,
            chunk_size=chunk_size,
            metadata=metadata,
            retries=0,
            store_url=True,
            url_storage=FileStorage(storage),
        )

    first = uploader()
    first.upload(stop_at=size // 2)
    print(f"created {first.url} offset={first.offset}")
    if not 0 < first.offset < size:
        print(f"the first uploader stopped at {first.offset} of {size}", file=sys.stderr)
        return 1
    del first

    second = uploader()
    print(f"resumed {second.url} offset={second.offset}")
    second.upload()
    if second.offset != size:
        print(f"final offset {second.offset} != size {size}", file=sys.stderr)
        return 1
    if second.get_offset() != size:
        print("HEAD does not show the whole file", file=sys.stderr)
        return 1
    print(second.url)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
