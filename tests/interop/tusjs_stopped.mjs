// tus-js-client (Node.js) against an upload a hook stops (tusring --hooks-answers, a
// post-receive answer with StopUpload; the receiver is tests/interop/answers_app.py).
//
// Usage: node tusjs_stopped.mjs ENDPOINT FILE LIMIT
//
// Uploads FILE in one PATCH whose body the HTTP stack sends slowly (32 KiB every 40 ms:
// tus-js-client's own stack, its PATCH body handed to it as a trickling stream), with
// metadata asking the receiver to stop the upload once its offset passes LIMIT. Expected:
// the PATCH fails with the stop's answer mid-body, and a resume of the same URL fails.
// Prints `stopped: status=<code> body=<body>`, `resume refused: status=<code>` and the
// upload URL on the last line; exits non-zero if the upload completed or the resume
// succeeded.

import fs from 'node:fs'
import process from 'node:process'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import * as tus from 'tus-js-client'

function fail(msg) {
  console.error(`tusjs_stopped: ${msg}`)
  process.exit(1)
}

const [endpoint, file, limit] = process.argv.slice(2)
if (!endpoint || !file || !limit) fail('usage: tusjs_stopped.mjs ENDPOINT FILE LIMIT')
const data = fs.readFileSync(file)

async function* trickle(bytes) {
  for (let at = 0; at < bytes.length; at += 32 * 1024) {
    yield bytes.subarray(at, at + 32 * 1024)
    await sleep(40)
  }
}

// tus-js-client's default stack, with a PATCH's body sent slowly.
const inner = new tus.DefaultHttpStack()
const slowStack = {
  createRequest(method, url) {
    const req = inner.createRequest(method, url)
    const send = req.send.bind(req)
    req.send = (body) => {
      if (method === 'PATCH' && body instanceof Uint8Array && body.length > 0) {
        const slow = Readable.from(trickle(body))
        slow.size = body.length
        return send(slow)
      }
      return send(body)
    }
    return req
  },
  getName() {
    return 'slow-node-http'
  },
}

function statusOf(err) {
  const res = err.originalResponse
  return res ? `status=${res.getStatus()} body=${res.getBody()}` : `no response (${err})`
}

const upload = new tus.Upload(data, {
  endpoint,
  chunkSize: Number.POSITIVE_INFINITY,
  uploadSize: data.length,
  metadata: { answer: 'stop', limit },
  httpStack: slowStack,
  retryDelays: null,
  storeFingerprintForResuming: false,
  onError(err) {
    console.log(`stopped: ${statusOf(err)}`)
    const url = upload.url
    if (url == null) fail('no upload URL')
    const again = new tus.Upload(data, {
      uploadUrl: url,
      uploadSize: data.length,
      retryDelays: null,
      storeFingerprintForResuming: false,
      onError(err2) {
        console.log(`resume refused: ${statusOf(err2)}`)
        console.log(url)
      },
      onSuccess() {
        fail('the resumed upload completed')
      },
    })
    again.start()
  },
  onSuccess() {
    fail(`the upload of ${data.length} bytes completed: not stopped`)
  },
})
upload.start()
