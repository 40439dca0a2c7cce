// The TypeScript SDK against the embedded server: lifecycle rules, refusals and faults.
// Prints one JSON object (what each step saw) as its last stdout line; tests/localsandbox/test_ts_sdk.py
// judges it. Environment: DAYTONA_SDK (path of @daytonaio/sdk's ESM entry), DAYTONA_API_URL, DAYTONA_API_KEY.
const sdk = await import(process.env.DAYTONA_SDK)
const { Daytona, DaytonaConflictError, DaytonaBadRequestError, DaytonaRateLimitError } = sdk
const apiUrl = process.env.DAYTONA_API_URL
const apiKey = process.env.DAYTONA_API_KEY
const base = apiUrl.replace(/\/api$/, '')
const daytona = new Daytona({ apiKey, apiUrl, target: 'local' })
const seen = {}

async function admin(path, body) {
  const response = await fetch(base + path, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
}

async function failure(promise) {
  try {
    await promise
    return { raised: false }
  } catch (err) {
    const headers = Object.fromEntries(Object.entries(err.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]))
    return {
      raised: true,
      type: err.constructor.name,
      status: err.statusCode ?? null,
      message: err.message,
      conflict: err instanceof DaytonaConflictError,
      badRequest: err instanceof DaytonaBadRequestError,
      rateLimited: err instanceof DaytonaRateLimitError,
      headers,
    }
  }
}

// transitions: a stop in flight answers 409, a stop of a stopped sandbox 400
await admin('/_admin/settings', { transitions: { '*': 0.05, stopping: 2 } })
const sandbox = await daytona.create({ name: 'ts-walk' })
seen.createdState = sandbox.state
const stopping = sandbox.stop()
for (let i = 0; i < 500 && (await daytona.get('ts-walk')).state === 'started'; i++); // until the stop is accepted
seen.stopWhileStopping = await failure((await daytona.get('ts-walk')).stop())
await stopping
seen.stoppedState = sandbox.state
seen.stopStopped = await failure(sandbox.stop())
await sandbox.start()
seen.restartedState = sandbox.state
seen.exec = (await sandbox.process.executeCommand('echo from-ts')).result

// soft delete: the name is free at once, GET by id answers until destroyed
await admin('/_admin/settings', { transitions: { destroying: 2 } })
await daytona.delete(sandbox)
seen.getByNameAfterDelete = await failure(daytona.get('ts-walk'))
seen.renamed = (await daytona.get(sandbox.id)).name
await admin('/_admin/settings', { transitions: { '*': 0 } })

// failed creates and builds
await admin('/_admin/faults', { errors: { create: { rate: 1, state: 'error' } } })
seen.failedCreate = await failure(daytona.create({ name: 'ts-doomed' }))
await admin('/_admin/faults', { build_failures: { count: 1, reason: 'no such base image' } })
seen.failedBuild = await failure(daytona.create({ image: 'debian:13-slim' }))
await admin('/_admin/faults', {})

// quotas, validation, intervals
await admin('/_admin/settings', { quota: { max_cpu_per_sandbox: 1 } })
seen.perSandbox = await failure(daytona.create({ snapshot: 'daytona-large' }))
await admin('/_admin/settings', { quota: { max_cpu_per_sandbox: null } })
seen.badAllowList = await failure(daytona.create({ networkAllowList: '10.0.0.1' }))
const archiving = await daytona.create({ autoArchiveInterval: 0, labels: { ts: 'list' } })
seen.autoArchive = archiving.autoArchiveInterval
const listed = []
for await (const item of daytona.list({ labels: { ts: 'list' }, minCpu: 2 })) listed.push(item.id)
seen.listedWithMinCpu2 = listed

// 429 with the throttler's header name
await admin('/_admin/faults', { rate_limit: { rate: 1, retry_after: 2, ops: ['create'] } })
seen.rateLimited = await failure(daytona.create({}))
await admin('/_admin/faults', {})

seen.done = true
console.log(JSON.stringify(seen))
// no explicit exit: the Socket.IO connection must not keep the process alive
