#!/usr/bin/env python3
"""Uploads one photo to huikan's tus endpoint with tuspy, a tus client we did not write.

Usage: tus_client.py BASE_URL TOKEN FILE [--chunk-size N] [--interrupt-after N]

The Rust tests run this to prove that an off-the-shelf tus 1.0.0 client works against the server
unchanged, as the phone apps' tus libraries must.

--interrupt-after N sends only N chunks, then drops the client and starts a new one on the same
upload URL, as an app does after it was killed on a bad network: the new uploader asks the server
for its offset (HEAD) and sends the rest from there.

On success prints one JSON line {"url", "offset", "sha256", "resumed_from"} and exits 0
("resumed_from" is the offset the server reported on resume, or null without --interrupt-after).
On any error prints it to stderr and exits 1.
"""

import argparse
import hashlib
import json
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError


def sha256_hex(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_uploader(args, sha256, url=None):
    # A fresh client each time: nothing survives from the "killed" app but the upload URL.
    tus = client.TusClient(
        args.base_url.rstrip("/") + "/v1/uploads/",
        headers={"Authorization": "Bearer " + args.token},
    )
    # Phone apps configure their tus client to retry a failed request; so does this one.
    options = {"retries": 3, "retry_delay": 1}
    if args.chunk_size is not None:
        options["chunk_size"] = args.chunk_size
    # tuspy base64-encodes the metadata values itself. Given a url, it HEADs it for the offset.
    return tus.uploader(
        file_path=args.file,
        url=url,
        metadata={"sha256": sha256, "content_type": "image/jpeg"},
        **options,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("token")
    parser.add_argument("file")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="bytes per PATCH (default: the whole file in one PATCH, tuspy's default)")
    parser.add_argument("--interrupt-after", type=int, default=None, metavar="N",
                        help="send N chunks, then resume with a new client")
    args = parser.parse_args()

    sha256 = sha256_hex(args.file)
    uploader = make_uploader(args, sha256)
    resumed_from = None
    if args.interrupt_after is not None:
        # upload_chunk() creates the upload (POST) on its first call.
        for _ in range(args.interrupt_after):
            if uploader.url and uploader.offset >= uploader.stop_at:
                break
            uploader.upload_chunk()
        if uploader.offset < uploader.stop_at:
            uploader = make_uploader(args, sha256, url=uploader.url)
            resumed_from = uploader.offset
    uploader.upload()

    print(json.dumps({"url": uploader.url, "offset": uploader.offset, "sha256": sha256,
                      "resumed_from": resumed_from}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TusCommunicationError as e:
        body = e.response_content
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        status = f" (HTTP {e.status_code}): {body}" if e.status_code is not None else ""
        print(f"tus upload failed: {e}{status}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # anything else: a bad file, a refused connection, a bug
        print(f"tus upload failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
