"""A hook receiver that answers in tusd v2's shape (tusring --hooks-answers).

    uvicorn answers_app:app --port 8000
    tusring --hooks-answers --hooks-http-urls http://127.0.0.1:8000/hooks

The upload's metadata key `answer` says what this receiver answers to pre-create and
pre-terminate, so one receiver serves every case of tests/integration/answers.rs:

    reject     pre-create: RejectUpload, 403 with a JSON body and a header
    normalise  pre-create: ChangeFileInfo.MetaData (the filename lower-cased, a key added)
    respond    pre-create: an HTTPResponse merged into the 201
    keep       pre-terminate: RejectTermination, 409 with a body
    garbage    pre-create: a 200 whose body is not JSON
    wrongtype  pre-create: {"RejectUpload": "yes"}
    badid      pre-create: ChangeFileInfo.ID "../escape"
    chooseid   pre-create: ChangeFileInfo.ID set to the metadata value `id` (as given,
               valid or not)
    huge       pre-create: a 10 MiB body
    processed  pre-finish: a 200 with a JSON body naming the processed file's URL
    refused    pre-finish: a 422 refusal with a body
    stop       post-receive: once the offset passes the metadata's `limit`, StopUpload with
               a 413, a JSON body and a header (tusd's default: the upload is removed)
    stopkeep   the same with KeepUpload (tusring's own field): the upload is kept
    (none)     {} : no instruction

Every message it gets is kept, and GET /seen returns them (event and metadata).
"""

import json
from fastapi import FastAPI, Header, Request, Response
from typing import Optional

app = FastAPI()
seen = []


def upload_of(message):
    return message.get("upload") or message.get("Upload") or {}


@app.get("/seen")
async def get_seen():
    return seen


@app.post("/hooks")
async def hooks(request: Request, hook_name: Optional[str] = Header(default=None)):
    message = await request.json()
    upload = upload_of(message)
    metadata = upload.get("metadata") or upload.get("MetaData") or {}
    seen.append({"event": hook_name, "id": upload.get("id") or upload.get("ID"),
                 "offset": upload.get("offset", upload.get("Offset")),
                 "metadata": metadata})
    what = metadata.get("answer", "")
    if hook_name == "pre-create":
        if what == "reject":
            return {"RejectUpload": True,
                    "HTTPResponse": {"StatusCode": 403,
                                     "Body": json.dumps({"error": "quota exceeded"}),
                                     "Header": {"Content-Type": "application/json",
                                                "X-Reason": "quota"}}}
        if what == "normalise":
            changed = {k: v for k, v in metadata.items()}
            changed["filename"] = metadata.get("filename", "").lower()
            changed["checked"] = "yes"
            return {"ChangeFileInfo": {"MetaData": changed}}
        if what == "respond":
            return {"HTTPResponse": {"StatusCode": 201,
                                     "Body": '{"note":"welcome"}',
                                     "Header": {"Content-Type": "application/json",
                                                "X-Hook": "said-hello"}}}
        if what == "garbage":
            return Response(content="this is not json", media_type="text/plain")
        if what == "wrongtype":
            return {"RejectUpload": "yes"}
        if what == "badid":
            return {"ChangeFileInfo": {"ID": "../escape"}}
        if what == "chooseid":
            return {"ChangeFileInfo": {"ID": metadata.get("id", "")}}
        if what == "huge":
            return Response(content=b'{"x":"' + b"a" * (10 * 1024 * 1024) + b'"}',
                            media_type="application/json")
    if hook_name == "pre-finish" and what == "processed":
        return {"HTTPResponse": {"StatusCode": 200,
                                 "Body": json.dumps({"url": "/processed/" + str(upload.get("id"))}),
                                 "Header": {"Content-Type": "application/json"}}}
    if hook_name == "pre-finish" and what == "refused":
        return {"HTTPResponse": {"StatusCode": 422, "Body": "virus found",
                                 "Header": {"X-Scan": "infected"}}}
    if hook_name == "post-receive" and what in ("stop", "stopkeep"):
        offset = upload.get("offset", upload.get("Offset")) or 0
        if int(offset) > int(metadata.get("limit", "0")):
            answer = {"StopUpload": True,
                      "HTTPResponse": {"StatusCode": 413,
                                       "Body": json.dumps({"error": "quota exceeded"}),
                                       "Header": {"Content-Type": "application/json",
                                                  "X-Quota": "exceeded"}}}
            if what == "stopkeep":
                answer["KeepUpload"] = True
            return answer
    if hook_name == "pre-terminate" and what == "keep":
        return {"RejectTermination": True,
                "HTTPResponse": {"StatusCode": 409, "Body": "this upload is kept",
                                 "Header": {"Content-Type": "text/plain"}}}
    return {}
