package service

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// Every is the loop of a component's periodic work: it calls f every d on
// clk, and at once whenever wake fires (nil: never), until ctx ends; f is
// not called once ctx has ended. A tick that comes while f runs waits (one
// at most), as with any ticker.
func Every(ctx context.Context, clk clock.WithTicker, d time.Duration, wake <-chan struct{}, f func()) {
	t := clk.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		case <-wake:
		}
		if ctx.Err() != nil {
			return
		}
		f()
	}
}
