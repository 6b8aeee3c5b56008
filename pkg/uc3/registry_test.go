package uc3_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// fakeRegistry implements POST /subjects/{subject}/versions of the Confluent
// Schema Registry: the same schema gets the same id, a new one the next id.
type fakeRegistry struct {
	mu       sync.Mutex
	ids      map[string]int
	subjects map[string][]string
	next     int
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{ids: map[string]int{}, subjects: map[string][]string{}, next: 41}
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	subject := r.PathValue("subject")
	if r.Header.Get("Content-Type") != "application/vnd.schemaregistry.v1+json" {
		http.Error(w, `{"error_code":415,"message":"unsupported media type"}`, http.StatusUnsupportedMediaType)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req struct {
		Schema string `json:"schema"`
	}
	if json.Unmarshal(b, &req) != nil || !json.Valid([]byte(req.Schema)) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"error_code":42201,"message":"Invalid schema"}`))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.ids[req.Schema]
	if !ok {
		f.next++
		id = f.next
		f.ids[req.Schema] = id
	}
	f.subjects[subject] = append(f.subjects[subject], req.Schema)
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	_, _ = fmt.Fprintf(w, `{"id":%d}`, id)
}

func registryServer(t testing.TB, h http.Handler) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /subjects/{subject}/versions", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestRegisterSchema(t *testing.T) {
	reg := newFakeRegistry()
	srv := registryServer(t, reg)
	ctx := context.Background()

	id, err := uc3.RegisterSchema(ctx, srv.Client(), srv.URL+"/", uc3.DefaultSubject, uc3.ActivePowerRecordSchema)
	require.NoError(t, err)
	require.Equal(t, uint32(42), id)
	again, err := uc3.RegisterSchema(ctx, nil, srv.URL, uc3.DefaultSubject, uc3.ActivePowerRecordSchema)
	require.NoError(t, err)
	require.Equal(t, id, again, "registering the same schema returns its id")
	require.Equal(t, []string{uc3.ActivePowerRecordSchema, uc3.ActivePowerRecordSchema}, reg.subjects["input-value"])
}

func TestRegisterSchemaErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		schema  string
		wantErr string
	}{
		{"registry rejects the schema", nil, "not json", "Invalid schema (error code 42201)"},
		{"plain error page", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		},
			uc3.ActivePowerRecordSchema, "HTTP 503: down for maintenance"},
		{"no id", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"version":1}`)) },
			uc3.ActivePowerRecordSchema, "has no valid id"},
		{"negative id", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"id":-3}`)) },
			uc3.ActivePowerRecordSchema, "has no valid id"},
		{"not json", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`<html>`)) },
			uc3.ActivePowerRecordSchema, "decode response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h http.Handler = newFakeRegistry()
			if tt.handler != nil {
				h = tt.handler
			}
			srv := registryServer(t, h)
			_, err := uc3.RegisterSchema(context.Background(), srv.Client(), srv.URL, uc3.DefaultSubject, tt.schema)
			require.ErrorContains(t, err, tt.wantErr)
			require.ErrorContains(t, err, "/subjects/input-value/versions")
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		_, err := uc3.RegisterSchema(context.Background(), nil, srv.URL, uc3.DefaultSubject, uc3.ActivePowerRecordSchema)
		require.ErrorContains(t, err, "register schema at "+srv.URL)
	})
}
