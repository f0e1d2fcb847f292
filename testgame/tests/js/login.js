// Logs in to a Minecraft server in offline mode with node-minecraft-protocol (a real
// client library) and stays until told to leave. Driven by testgame/tests/login.rs.
//
//   node login.js HOST PORT USERNAME [HANDSHAKE_HOST]
//
// HANDSHAKE_HOST, when given, is the server address the handshake names instead of HOST
// (a router routes by it; the socket still goes to HOST).
// Prints one JSON line per event on stdout: {"event":"joined",...} when the client got
// Join Game, {"event":"chat",...} for each chat message, {"event":"kicked",...} if the
// server disconnects it, {"event":"left"} after a "leave" line arrives on stdin (or stdin
// closes), {"event":"error",...} on an error. Exits 0 after leaving, 1 otherwise.
'use strict'

let mc
try {
  mc = require('minecraft-protocol')
} catch (error) {
  console.error(`login.js: minecraft-protocol is not installed (run npm ci in ${__dirname}; scripts/start-services.sh does): ${error.message}`)
  process.exit(2)
}

const [host, port, username, handshakeHost] = process.argv.slice(2)
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')

let keepAlives = 0
let leaving = false
const client = mc.createClient({ host, port: Number(port), username, auth: 'offline', version: '1.12.2', fakeHost: handshakeHost })

client.on('keep_alive', () => { keepAlives += 1 })
client.on('login', (packet) => {
  emit({ event: 'joined', entity_id: packet.entityId, max_players: packet.maxPlayers, uuid: client.uuid })
})
client.on('position', (packet) => emit({ event: 'position', x: packet.x, y: packet.y, z: packet.z }))
client.on('chat', (packet) => emit({ event: 'chat', message: JSON.parse(packet.message).text }))
client.on('kick_disconnect', (packet) => emit({ event: 'kicked', reason: JSON.parse(packet.reason).text }))
client.on('disconnect', (packet) => emit({ event: 'kicked', reason: JSON.parse(packet.reason).text }))
client.on('error', (error) => { emit({ event: 'error', message: String(error) }); process.exit(1) })
client.on('end', (reason) => {
  if (leaving) {
    emit({ event: 'left', keep_alives: keepAlives })
    process.exit(0)
  }
  emit({ event: 'ended', reason: String(reason), keep_alives: keepAlives })
  process.exit(1)
})

const leave = () => {
  if (leaving) return
  leaving = true
  client.end('leaving')
}
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => { if (chunk.includes('leave')) leave() })
process.stdin.on('end', leave)
