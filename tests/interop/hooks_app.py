"""The README's hook receiver: a FastAPI app that lets an upload in only with a token.

    uvicorn hooks_app:app --port 8000
    tusring --hooks-http-urls http://127.0.0.1:8000/hooks \
            --hooks-http-proxy-headers Authorization --hooks pre-create

tusring relays the 401 (status, body and Content-Type) to a client without the token.
tests/integration/hooks.rs runs it under uvicorn.
"""

from typing import Optional
from fastapi import FastAPI, Header, HTTPException

app = FastAPI()

@app.post("/hooks")
async def hooks(hook_name: Optional[str] = Header(default=None),
                authorization: Optional[str] = Header(default=None)):
    if hook_name == "pre-create" and authorization != "Bearer jwt":
        raise HTTPException(status_code=401, detail="Unauthorized")
    return {}
