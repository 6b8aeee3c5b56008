// Package chaos is GreenFlow's chaos suite: it runs every service, the NATS
// server and the Kafka broker as processes of their own on 127.0.0.1, runs
// short UC-3 experiments through them, kills one process with SIGKILL in a
// chosen phase of each run (timed off run.state events), starts it again,
// and checks from outside the services — the scheduler's KV bucket,
// ClickHouse, the broker, /proc and the bus — that no run ends done with
// wrong data.
//
// Per segment it first runs undisturbed reference runs of every
// configuration and draws, per metric, a band around their median whose
// half-width is three times their largest deviation (at least a floor); a
// done, unflagged run outside a band is a violation when a second,
// independent source of the same quantity is outside its band too. See
// loadtest/README.md for the invariants, the tolerance and how to run it
// (make chaos; the short version runs in make test).
package chaos
