package svcmain_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/stretchr/testify/require"
)

// api is a component with an HTTP API.
type api struct{}

func (api) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (api) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
}

// A component that has an HTTP API gets it registered on the service's
// mux when it is built — in its own binary and in the dev stack alike —
// and none is registered without a mux.
func TestUnitRegistersTheComponentsAPI(t *testing.T) {
	s := svcmain.Service[struct{}]{Name: "t", New: func(struct{}, svcmain.Deps) (service.Component, error) { return api{}, nil }}
	mux := http.NewServeMux()
	_, err := s.Unit(struct{}{}).Build(svcmain.Deps{Mux: mux})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/hello", nil))
	require.Equal(t, "hello", rec.Body.String())
	_, err = s.Unit(struct{}{}).Build(svcmain.Deps{})
	require.NoError(t, err, "no mux: nothing to register on")
}
