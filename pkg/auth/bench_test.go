package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
)

// BenchmarkGuardedRequest is what a token check costs a request: the
// record read from the KV bucket on embedded NATS, the hash and the
// compare (the handler does nothing).
func BenchmarkGuardedRequest(b *testing.B) {
	_, st := openStore(b, nil)
	plain, _, err := st.Create(b.Context(), "bench", auth.Viewer, 0)
	require.NoError(b, err)
	lim := auth.DefaultLimits()
	lim.RatePerSecond, lim.Burst = 1e9, 1<<30
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"open", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})},
		{"guarded", auth.NewGuard(st, lim, nil, nil).Require(auth.Viewer, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/v1/x", nil)
			req.Header.Set("Authorization", "Bearer "+plain)
			for b.Loop() {
				rec := httptest.NewRecorder()
				tc.h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
