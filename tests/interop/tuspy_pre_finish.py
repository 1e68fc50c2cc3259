#!/usr/bin/env python3
"""tuspy reading the answer a pre-finish hook gave to the PATCH that completed its upload
(tusring --hooks-answers --hooks pre-finish).

Usage: tuspy_pre_finish.py ENDPOINT FILE

Uploads FILE in one PATCH; prints `status=<code>`, `header=<X-Finished-By>`,
`body=<body>` of the last response (tuspy keeps it on `uploader.request`) and the upload
URL on the last line. Exits non-zero if the upload fails.
"""

import os
import sys

from tusclient import client


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    endpoint, path = sys.argv[1], sys.argv[2]
    uploader = client.TusClient(endpoint).uploader(
        file_path=path,
        chunk_size=os.path.getsize(path) + 1,
        metadata={"filename": "report.pdf"},
        retries=0,
    )
    uploader.upload()
    req = uploader.request
    print(f"status={req.status_code}")
    print(f"header={req.response_headers.get('x-finished-by')}")
    print(f"body={req.response_content.decode()}")
    print(uploader.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
