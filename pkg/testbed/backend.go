package testbed

import (
	"context"
	"time"
)

// Backend reserves machines for a Spec. Grid'5000 (Grid5000) is built; a
// cloud backend (VMs from a cloud API) implements the same methods — see
// the README's design note. Implementations are safe for concurrent use.
//
// An id is the backend's handle on one reservation, stable across
// processes (Grid'5000: "site/uid"), so a record in KV is all a restart
// needs to find it again.
type Backend interface {
	// Plan is what Submit would ask, for `testbed plan`: no I/O.
	Plan(s Spec) (Request, error)
	// Submit asks for the machines and returns at once.
	Submit(ctx context.Context, s Spec) (id string, err error)
	// Find looks for a reservation of s that Submit made but whose id was
	// never recorded (the process died in between): by name.
	Find(ctx context.Context, s Spec) (id string, found bool, err error)
	// Wait blocks until the machines are the user's, reporting progress
	// (state, predicted start) as it changes. It fails when they never
	// will be (error, hold past ctx).
	Wait(ctx context.Context, s Spec, id string, progress func(string)) (Allocation, error)
	// Status says whether the reservation still holds machines.
	Status(ctx context.Context, s Spec, id string) (Status, error)
	// Release gives the machines back; releasing one already gone is not
	// an error.
	Release(ctx context.Context, s Spec, id string) error
	// Facts describes a host's hardware, for provenance; best effort.
	Facts(ctx context.Context, s Spec, host string) (HostFacts, error)
}

// Request is what a backend would ask, printable.
type Request struct {
	Method, URL string
	Body        any
}

// Allocation is what a reservation got.
type Allocation struct {
	Hosts     []string // FQDNs
	StartedAt time.Time
	EndsAt    time.Time // when the backend takes the machines back
}

// Status of a reservation at the backend.
type Status struct {
	Active bool   // holds or may still get machines
	State  string // the backend's word
	EndsAt time.Time
}

// HostFacts are a host's hardware as provenance records it.
type HostFacts struct {
	CPUModel    string `json:"cpu_model,omitempty"`
	Cores       int    `json:"cores,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`
	Wattmeter   bool   `json:"wattmeter"`
	Source      string `json:"source,omitempty"` // where the facts come from
	// Missing says why the facts are unknown (the lookup failed): the
	// provenance then records the wattmeter as unknown, not absent, and
	// names the reason among what is missing.
	Missing string `json:"missing,omitempty"`
}
