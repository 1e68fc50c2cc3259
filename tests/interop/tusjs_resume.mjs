// Upload one file with tus-js-client in Node.js, aborted in the middle of a PATCH and
// started again, which asks the upload's URL for its offset (HEAD) and sends the rest.
//
// Usage: node tusjs_resume.mjs ENDPOINT FILE CHUNK_SIZE KEY=VALUE...
//
// The KEY=VALUE pairs are the upload's metadata (e.g. `answer=chooseid id=my-key`, for a
// pre-create hook that chooses the upload's ID).
//
// Prints one line per request (`<METHOD> <url>`), `aborting at <sent> of <total>` when it
// aborts, then the upload URL on the last line. Exits non-zero if the upload fails or
// was never interrupted.

import fs from 'node:fs'
import process from 'node:process'
import * as tus from 'tus-js-client'

function fail(msg) {
  console.error(`tusjs_resume: ${msg}`)
  process.exit(1)
}

const [endpoint, file, chunkArg, ...pairs] = process.argv.slice(2)
if (!endpoint || !file || !chunkArg) {
  console.error('usage: tusjs_resume.mjs ENDPOINT FILE CHUNK_SIZE KEY=VALUE...')
  process.exit(2)
}
const metadata = {}
for (const kv of pairs) {
  const at = kv.indexOf('=')
  if (at < 1) fail(`bad metadata ${kv}`)
  metadata[kv.slice(0, at)] = kv.slice(at + 1)
}

const data = fs.readFileSync(file)
let interrupted = false
const upload = new tus.Upload(data, {
  endpoint,
  chunkSize: Number(chunkArg),
  uploadSize: data.length,
  metadata,
  // No retries: the interruption is resumed by hand, any other error must surface.
  retryDelays: null,
  storeFingerprintForResuming: false,
  onBeforeRequest(req) {
    console.log(`${req.getMethod()} ${req.getURL()}`)
  },
  onProgress(sent, total) {
    // Chunks are smaller than half the file: at 40 % the upload is never complete.
    if (!interrupted && sent >= total * 0.4) {
      interrupted = true
      console.log(`aborting at ${sent} of ${total}`)
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
    if (!interrupted) fail('the upload was never interrupted')
    console.log(upload.url)
  },
})

const timer = setTimeout(() => fail('upload did not finish within 120 s'), 120_000)
timer.unref()
upload.start()
