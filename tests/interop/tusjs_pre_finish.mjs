// tus-js-client (Node.js) reading the answer a pre-finish hook gave to the PATCH that
// completed its upload (tusring --hooks-answers --hooks pre-finish).
//
// Usage: node tusjs_pre_finish.mjs ENDPOINT FILE
//
// Uploads FILE in one PATCH; on success prints `status=<code>`, `header=<X-Finished-By>`,
// `body=<body>` of the last response (tus-js-client's onSuccess payload) and the upload
// URL on the last line. Exits non-zero if the upload fails.

import fs from 'node:fs'
import process from 'node:process'
import * as tus from 'tus-js-client'

function fail(msg) {
  console.error(`tusjs_pre_finish: ${msg}`)
  process.exit(1)
}

const [endpoint, file] = process.argv.slice(2)
if (!endpoint || !file) fail('usage: tusjs_pre_finish.mjs ENDPOINT FILE')
const data = fs.readFileSync(file)

const upload = new tus.Upload(data, {
  endpoint,
  uploadSize: data.length,
  metadata: { filename: 'report.pdf' },
  retryDelays: null,
  storeFingerprintForResuming: false,
  onError(err) {
    fail(`upload failed: ${err}`)
  },
  onSuccess(payload) {
    const res = payload && payload.lastResponse
    if (!res) fail('no lastResponse in onSuccess (tus-js-client 4 gives one)')
    console.log(`status=${res.getStatus()}`)
    console.log(`header=${res.getHeader('X-Finished-By')}`)
    console.log(`body=${res.getBody()}`)
    console.log(upload.url)
  },
})
upload.start()
