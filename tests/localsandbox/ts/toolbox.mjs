// The TypeScript SDK's toolbox against the embedded server: session shells, input, code-run, the code
// interpreter, file operations, git, PTY, volumes. Prints one JSON object as its last stdout line;
// tests/localsandbox/test_ts_sdk.py judges it. Environment: DAYTONA_SDK, DAYTONA_API_URL, DAYTONA_API_KEY,
// GIT_ORIGIN (a bare repository on this machine).
const { Daytona } = await import(process.env.DAYTONA_SDK)
const daytona = new Daytona({ apiKey: process.env.DAYTONA_API_KEY, apiUrl: process.env.DAYTONA_API_URL, target: 'local' })
const seen = {}
const sandbox = await daytona.create({ name: 'ts-toolbox' })

// one long-lived shell per session
await sandbox.process.createSession('s')
await sandbox.process.executeSessionCommand('s', { command: 'export FOO=BAR; cd /' })
seen.carried = (await sandbox.process.executeSessionCommand('s', { command: 'echo $FOO $PWD' })).stdout
const asked = await sandbox.process.executeSessionCommand('s', { command: 'read n; echo "got $n"', runAsync: true })
await sandbox.process.sendSessionCommandInput('s', asked.cmdId, 'typed')
for (let i = 0; i < 300 && (await sandbox.process.getSessionCommand('s', asked.cmdId)).exitCode == null; i++) {
  await new Promise((resolve) => setTimeout(resolve, 50)) // polling the command's state with a deadline
}
seen.input = (await sandbox.process.getSessionCommandLogs('s', asked.cmdId)).stdout

// code-run and the interpreter
const node = await daytona.create({ language: 'javascript' }) // code-run follows the sandbox's language
seen.codeRun = (await node.process.codeRun('console.log(process.argv.slice(1).join("+"))', { argv: ['a', 'b'] })).result
await daytona.delete(node)
await sandbox.codeInterpreter.runCode('x = 20')
seen.interpreter = (await sandbox.codeInterpreter.runCode('print(x * 2)')).stdout

// files
await sandbox.fs.uploadFile(Buffer.from('alpha\nbeta alpha\n'), 'docs/a.txt')
seen.search = (await sandbox.fs.searchFiles('docs', '*.txt')).files
seen.find = (await sandbox.fs.findFiles('docs', 'alpha')).map((m) => m.line)
await sandbox.fs.replaceInFiles(['docs/a.txt'], 'alpha', 'omega')
seen.replaced = (await sandbox.fs.downloadFile('docs/a.txt')).toString()

// git
await sandbox.git.clone(process.env.GIT_ORIGIN, 'repo')
await sandbox.fs.uploadFile(Buffer.from('x\n'), 'repo/x.txt')
await sandbox.git.add('repo', ['x.txt'])
seen.gitCommit = (await sandbox.git.commit('repo', 'from ts', 'Tess', 'tess@example.com')).sha.length
seen.gitBranch = (await sandbox.git.status('repo')).currentBranch

// PTY
let terminal = ''
const pty = await sandbox.process.createPty({ id: 'ts-pty', cols: 90, rows: 20, onData: (d) => (terminal += new TextDecoder().decode(d)) })
await pty.waitForConnection()
await pty.sendInput('stty size; exit 5\n')
seen.ptyExit = (await pty.wait()).exitCode
seen.ptySize = terminal.includes('20 90')

// volumes
const volume = await daytona.volume.get('ts-volume', true)
seen.volumeState = volume.state

await daytona.delete(sandbox)
seen.done = true
console.log(JSON.stringify(seen))
