// Drive headless Chromium (Debian's /usr/bin/chromium, through playwright-core) to a page that
// uploads with tus-js-client and Uppy (browser_page.html), and report what happened.
//
// Usage: node browser_upload.mjs PAGE_URL [TIMEOUT_MS]
//
// Prints one JSON line on stdout:
//   {"result": <window.__result of the page>, "console": [...], "pageErrors": [...],
//    "failedRequests": [...]}
// and exits 0 when the page reported a result (whether the uploads succeeded or not: the
// caller judges), non-zero when the browser could not be started or the page never reported.
// $TUSRING_CHROMIUM overrides the browser's path.

import process from 'node:process'
import { chromium } from 'playwright-core'

const [pageUrl, timeoutArg] = process.argv.slice(2)
if (!pageUrl) {
  console.error('usage: browser_upload.mjs PAGE_URL [TIMEOUT_MS]')
  process.exit(2)
}
const timeout = Number(timeoutArg ?? 60000)

// The flags this machine needs: no sandbox as root, no GPU, and nothing that talks to the
// (closed) network behind the test's back. Playwright gives each launch a fresh, empty
// user-data-dir of its own and deletes it on close.
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

const report = { result: null, console: [], pageErrors: [], failedRequests: [] }
let browser
let code = 0
try {
  browser = await chromium.launch({
    executablePath: process.env.TUSRING_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ARGS,
    timeout,
  })
  const page = await browser.newPage()
  // window.tusringThrottleUpload(bytesPerSecond): Chromium's upload throttling (DevTools
  // network emulation) for the page's requests; -1 lifts it.
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  await page.exposeFunction('tusringThrottleUpload', (bps) =>
    cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: 0,
      downloadThroughput: -1,
      uploadThroughput: bps,
    }),
  )
  page.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`))
  page.on('pageerror', (e) => report.pageErrors.push(String(e)))
  page.on('requestfailed', (r) =>
    report.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? '?'}`),
  )
  await page.goto(pageUrl, { timeout })
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout })
  report.result = await page.evaluate(() => window.__result)
} catch (err) {
  report.error = String(err?.message ?? err)
  code = 1
} finally {
  if (browser) await browser.close().catch(() => {})
}
process.stdout.write(`${JSON.stringify(report)}\n`)
process.exit(code)
