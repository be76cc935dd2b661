// Package bench is wsmesh's WebSocket load generator (wsmesh bench) and the
// helpers its peer comparison uses.
//
// The generator speaks RFC 6455 with raw frames: each connection builds its
// masked message frame once and writes the same bytes again and again, and
// reads echoed frames into one reused buffer, so a message costs the
// generator one write and usually one read system call and no allocation.
// BenchmarkClient compares this client with github.com/coder/websocket
// against the same canned loopback echo: the raw client takes about a
// quarter less time per 1 KiB round trip and allocates nothing per message
// (coder/websocket: 2 KiB), which matters on a small machine where the
// generator, the echo server and the proxies share the same cores.
//
// Modes (Config.Mode):
//
//   - latency: ping-pong on one connection; round-trip percentiles.
//   - throughput: ping-pong on many connections, one message in flight on
//     each; messages per second.
//   - stream: several messages in flight per connection; echoed megabytes
//     per second.
//   - upgrade: open, upgrade, close-handshake, close; upgrades per second.
//   - idle: hold many open WebSockets; resident memory per connection of
//     the processes given in Config.Procs.
//
// A run warms up, then measures for a bounded duration. Processes named in
// Config.Procs are sampled from /proc at both ends of the measured window:
// CPU time (utime+stime of /proc/PID/stat) gives CPU microseconds per
// message, and VmRSS of /proc/PID/status gives memory. The generator samples
// itself the same way so that a report shows whether it was the bottleneck.
//
// Runs are loopback only: Run refuses to dial an address that is not a
// loopback address.
//
// Relay is a plain io.Copy TCP relay, the baseline the peer comparison
// measures the one-hop sidecar against; Summarize turns a directory of JSON
// reports from bench/compare.sh into the comparison tables.
package bench
