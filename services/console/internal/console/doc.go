// Package console is GreenFlow's web console: the experiments of the
// history, filtered and paged; an experiment's runs watched live; actions
// (cancel, submit, disarm) taken as the signed-in user.
//
// Why a service of its own, not pages on the scheduler: a console is
// exposed to people's browsers and scales with them, the scheduler with
// experiments; and the console holds no write right of its own. It reads
// the lifecycle events (a NATS user that may only watch them and read the
// token bucket, pkg/bus) and ClickHouse as the read-only user, and every
// action is a call of the scheduler's HTTP API with the signed-in user's
// own token, so the scheduler's roles decide (a viewer cannot submit or
// cancel, whatever the console shows).
//
// Sign-in takes an API token (pkg/auth), verified against the token bucket
// as every API verifies it, at sign-in and again at every request (a
// revoked token is signed out at its next click). The session is a cookie
// sealed with AES-GCM under the console's session key — HttpOnly (no script
// reads the token), SameSite=Strict, Secure when the console serves TLS or
// is told it sits behind TLS — so replicas sharing the key share sessions
// and the console keeps no session state. Every form that changes anything
// carries a CSRF token bound to the session.
//
// Rendering is server-side with html/template; charts are server-side SVG
// (pkg/svgplot, shared with the CLI's report). The only script is
// web/static/console.js, hand-written and embedded: it applies the live
// updates and validates the spec editor as one types; nothing is fetched
// from elsewhere, so the console works offline.
//
// Live data: Server-Sent Events from a hub per watched experiment. A hub
// holds ONE watch of the lifecycle stream and ONE ClickHouse poll for its
// experiment, however many browsers watch it, and fans each update out to
// every viewer; it stops when the last viewer leaves. That is what keeps a
// hundred viewers of one run cheap (BenchmarkSSEViewers).
package console
