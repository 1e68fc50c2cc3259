// Upload one file with tus-js-client in its IETF draft mode (`protocol: 'ietf-draft-05'`,
// Upload-Draft-Interop-Version: 6), in Node.js.
//
// Usage: node tusjs_draft_upload.mjs ENDPOINT FILE whole|interrupt
//
//   whole      the whole file in the creation POST (uploadDataDuringCreation)
//   interrupt  an empty creation, then one PATCH of the whole file, aborted once about
//              40 % has been sent; the upload is started again, which retrieves the
//              offset with HEAD and appends the rest from there
//
// Prints one line per answer (`<METHOD> <status> offset=<Upload-Offset>
// complete=<Upload-Complete>`), then `requests: POST=<n> HEAD=<n> PATCH=<n>` and the
// upload URL on the last line. Exits non-zero if the upload fails, or if a request did
// not carry Upload-Draft-Interop-Version: 6.

import fs from 'node:fs'
import path from 'node:path'
import process from 'node:process'
import * as tus from 'tus-js-client'

function fail(msg) {
  console.error(`tusjs_draft_upload: ${msg}`)
  process.exit(1)
}

const [endpoint, file, mode] = process.argv.slice(2)
if (!endpoint || !file || !['whole', 'interrupt'].includes(mode)) {
  console.error('usage: tusjs_draft_upload.mjs ENDPOINT FILE whole|interrupt')
  process.exit(2)
}

const data = fs.readFileSync(file)
const counts = { POST: 0, HEAD: 0, PATCH: 0 }
let interrupted = false
const upload = new tus.Upload(data, {
  endpoint,
  protocol: 'ietf-draft-05',
  chunkSize: Number.POSITIVE_INFINITY,
  uploadSize: data.length,
  metadata: { filename: path.basename(file) },
  uploadDataDuringCreation: mode === 'whole',
  // No retries: the interruption is resumed by hand, any other error must surface.
  retryDelays: null,
  storeFingerprintForResuming: false,
  onBeforeRequest(req) {
    const m = req.getMethod()
    counts[m] = (counts[m] || 0) + 1
    if (req.getHeader('Upload-Draft-Interop-Version') !== '6') {
      fail(`${m} without Upload-Draft-Interop-Version: 6`)
    }
  },
  onAfterResponse(req, res) {
    const offset = res.getHeader('Upload-Offset')
    const complete = res.getHeader('Upload-Complete')
    console.log(`${req.getMethod()} ${res.getStatus()} offset=${offset} complete=${complete}`)
  },
  onProgress(sent, total) {
    if (mode === 'interrupt' && !interrupted && counts.PATCH === 1 && sent >= total * 0.4) {
      interrupted = true
      console.log(`aborting at ${sent} of ${total} bytes sent`)
      upload
        .abort()
        .then(() => setTimeout(() => upload.start(), 200))
        .catch((err) => fail(`abort: ${err}`))
    }
  },
  onError(err) {
    fail(`upload failed: ${err}`)
  },
  onSuccess() {
    if (upload.url == null) fail('no upload URL')
    if (mode === 'interrupt' && !interrupted) fail('the upload was never interrupted')
    console.log(`requests: POST=${counts.POST} HEAD=${counts.HEAD} PATCH=${counts.PATCH}`)
    console.log(upload.url)
  },
})

const timer = setTimeout(() => fail('upload did not finish within 120 s'), 120_000)
timer.unref()
upload.start()
