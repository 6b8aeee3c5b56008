package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// startServer runs an HTTPServer on a free port until the test ends.
func startServer(t *testing.T, reg *prometheus.Registry, health *service.Health, register func(*http.ServeMux)) string {
	t.Helper()
	srv := service.NewHTTPServer("127.0.0.1:0", reg, health, testenv.Logger(t))
	register(srv.Mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case addr := <-srv.Listening():
		return "http://" + addr
	case err := <-done:
		t.Fatalf("http server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("http server did not start")
	}
	return ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// Any handler on a service's mux that panics answers 500 with a JSON error,
// is counted, and the server goes on serving.
func TestPanickingHTTPHandlerAnswers500AndTheServerKeepsServing(t *testing.T) {
	reg := prometheus.NewRegistry()
	url := startServer(t, reg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) {
			var m map[string]int
			m["x"] = 1
		})
		mux.HandleFunc("GET /fine", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("fine")) })
	})
	code, body := get(t, url+"/boom")
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, body, `"error":"internal error`)
	code, body = get(t, url+"/fine")
	require.Equal(t, http.StatusOK, code, "the server keeps serving after a panic")
	require.Equal(t, "fine", body)
	code, body = get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "greenflow_http_handler_panics_total 1")
}

// A handler that already sent its status cannot be turned into a 500; the
// response is cut and the panic still contained.
func TestPanicAfterTheResponseStartedIsContained(t *testing.T) {
	reg := prometheus.NewRegistry()
	url := startServer(t, reg, nil, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /half", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("partial"))
			panic(errors.New("late defect"))
		})
	})
	resp, err := http.Get(url + "/half")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.True(t, strings.HasPrefix(string(b), "partial"))
	code, _ := get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code, "still serving")
}
