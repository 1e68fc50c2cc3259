// Upload one file to a tus server with tus-js-client (the official JavaScript client),
// running in Node.js.
//
// Usage: node tusjs_upload.mjs ENDPOINT FILE CHUNK_SIZE|inf buffer|stream [with-upload] [parallel=N]
//
//   buffer       the source is a Buffer holding the whole file
//   stream       the source is an fs.ReadStream of the file
//   with-upload  send the first chunk in the creation POST (creation-with-upload)
//   parallel=N   upload N partial uploads in parallel and concatenate them into a final
//                upload (tus-js-client's `parallelUploads`; needs a buffer source)
//
// Prints `requests: POST=<n> PATCH=<n>` and then the upload URL on the last line of
// stdout. Exits non-zero if the upload fails.

import fs from 'node:fs'
import path from 'node:path'
import process from 'node:process'
import * as tus from 'tus-js-client'

function fail(msg) {
  console.error(`tusjs_upload: ${msg}`)
  process.exit(1)
}

const [endpoint, file, chunkArg, sourceKind, ...extras] = process.argv.slice(2)
if (!endpoint || !file || !chunkArg || !sourceKind) {
  console.error(
    'usage: tusjs_upload.mjs ENDPOINT FILE CHUNK_SIZE|inf buffer|stream [with-upload] [parallel=N]',
  )
  process.exit(2)
}
let withUpload = false
let parallel = 1
for (const extra of extras) {
  if (extra === 'with-upload') {
    withUpload = true
  } else if (extra.startsWith('parallel=')) {
    parallel = Number(extra.slice('parallel='.length))
    if (!Number.isInteger(parallel) || parallel < 2) fail(`bad ${extra}`)
  } else {
    fail(`unknown option ${extra}`)
  }
}

const size = fs.statSync(file).size
const chunkSize = chunkArg === 'inf' ? Number.POSITIVE_INFINITY : Number(chunkArg)
let source
if (sourceKind === 'buffer') {
  source = fs.readFileSync(file)
} else if (sourceKind === 'stream') {
  source = fs.createReadStream(file)
} else {
  fail(`unknown source kind ${sourceKind}`)
}

const counts = { POST: 0, PATCH: 0, HEAD: 0 }
const upload = new tus.Upload(source, {
  endpoint,
  chunkSize,
  // tus-js-client refuses uploadSize together with parallelUploads.
  uploadSize: parallel > 1 ? null : size,
  parallelUploads: parallel,
  metadata: { filename: path.basename(file) },
  uploadDataDuringCreation: withUpload,
  // No retries: an error must surface, not be papered over.
  retryDelays: null,
  storeFingerprintForResuming: false,
  onBeforeRequest(req) {
    const m = req.getMethod()
    counts[m] = (counts[m] || 0) + 1
  },
  onError(err) {
    fail(`upload failed: ${err}`)
  },
  onSuccess() {
    if (upload.url == null) fail('no upload URL')
    console.log(`requests: POST=${counts.POST} PATCH=${counts.PATCH}`)
    console.log(upload.url)
  },
})

const timer = setTimeout(() => fail('upload did not finish within 120 s'), 120_000)
timer.unref()
upload.start()
