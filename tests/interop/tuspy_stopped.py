#!/usr/bin/env python3
"""tuspy against an upload a hook stops (tusring --hooks-answers, a post-receive answer
with StopUpload; the receiver is tests/interop/answers_app.py).

Usage: tuspy_stopped.py ENDPOINT FILE CHUNK_SIZE LIMIT

Creates an upload whose metadata asks the receiver to stop it once its offset passes
LIMIT, and uploads FILE in CHUNK_SIZE PATCHes. Expected: a PATCH fails (the stop's
answer, or 404 once the stopped upload is removed) before the upload completes, and a
resume of the same URL fails too. Prints `stopped: status=<code> offset=<offset>`,
`resume refused: status=<code>` and the upload URL on the last line; exits non-zero if
the upload completed or the resume succeeded.
"""

import os
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, path, chunk_size, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    size = os.path.getsize(path)
    tus = client.TusClient(endpoint)
    uploader = tus.uploader(
        file_path=path,
        chunk_size=chunk_size,
        metadata={"answer": "stop", "limit": limit},
        retries=0,
    )
    try:
        uploader.upload()
    except TusCommunicationError as e:
        print(f"stopped: status={e.status_code} offset={uploader.offset}")
        print(f"body: {e.response_content!r}")
    else:
        print(f"the upload of {size} bytes completed: not stopped", file=sys.stderr)
        return 1
    url = uploader.url
    try:
        # With a URL, tuspy asks the server for the offset (HEAD) at once.
        again = tus.uploader(file_path=path, chunk_size=chunk_size, url=url, retries=0)
        again.upload()
    except TusCommunicationError as e:
        print(f"resume refused: status={e.status_code}")
    else:
        print("the resumed upload completed", file=sys.stderr)
        return 1
    print(url)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
