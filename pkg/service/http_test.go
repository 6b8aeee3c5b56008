package service_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// runHTTP runs srv until the test ends and returns its address.
func runHTTP(t *testing.T, srv *service.HTTPServer) string {
	t.Helper()
	run := testenv.Go(t, context.Background(), srv.Run)
	t.Cleanup(func() { require.NoError(t, run.Stop(10*time.Second, "the http server")) })
	return testenv.Receive(t, srv.Listening(), 10*time.Second, "the server listening")
}

// closedByServer reads conn until the server closes it, and fails if the
// client's own deadline (far beyond the server's limits) comes first.
func closedByServer(t *testing.T, conn net.Conn) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	got, err := io.ReadAll(conn)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open: %v", err)
	return string(got)
}

// A client that sends its request a byte at a time (slowloris), or its
// body never, or a flood of headers, is cut off by the server's limits;
// a streaming handler lifts its own write deadline (StreamResponse) and
// writes past it.
func TestHTTPServerCutsOffSlowClients(t *testing.T) {
	srv := service.NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, testenv.Logger(t))
	srv.Limits = service.HTTPLimits{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond, Write: 600 * time.Millisecond,
		Idle: time.Second, MaxHeaderBytes: 4 << 10}
	srv.Mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(b)
	})
	streamed := make(chan struct{})
	srv.Mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		if err := service.StreamResponse(w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("first\n"))
		http.NewResponseController(w).Flush()
		<-streamed // past the write limit: the test holds it until a timer well beyond
		_, _ = w.Write([]byte("second\n"))
	})
	addr := runHTTP(t, srv)
	dial := func() net.Conn {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return conn
	}

	t.Run("headers a byte at a time", func(t *testing.T) {
		conn := dial()
		_, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
		require.NoError(t, err)
		closedByServer(t, conn)
	})
	t.Run("a body that never comes", func(t *testing.T) {
		conn := dial()
		_, err := conn.Write([]byte("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"))
		require.NoError(t, err)
		closedByServer(t, conn)
	})
	t.Run("a flood of headers", func(t *testing.T) {
		conn := dial()
		_, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Flood: " + strings.Repeat("a", 16<<10) + "\r\n\r\n"))
		require.NoError(t, err)
		require.Contains(t, closedByServer(t, conn), "431 Request Header Fields Too Large")
	})
	t.Run("a streamed answer outlasts the write limit", func(t *testing.T) {
		conn := dial()
		_, err := conn.Write([]byte("GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
		require.NoError(t, err)
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err)
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "first\n", line)
		// Not a wait for a condition: the write limit must pass while the
		// handler streams.
		<-time.After(3 * srv.Limits.Write)
		close(streamed)
		rest, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, "second\n", string(rest))
	})
}

// With --http-tls-cert-file/--http-tls-key-file the server answers HTTPS
// only: a client trusting its CA gets through, one that does not is
// refused, and plain HTTP gets no answer.
func TestHTTPServerOverTLS(t *testing.T) {
	certs := testenv.NewTLS(t)
	srv := service.NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, testenv.Logger(t))
	srv.TLS = service.HTTPTLS{CertFile: certs.CertFile, KeyFile: certs.KeyFile}
	addr := runHTTP(t, srv)

	pem, err := os.ReadFile(certs.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := trusting.Get("https://" + addr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = http.Get("https://" + addr + "/healthz")
	require.ErrorContains(t, err, "certificate signed by unknown authority")
	resp, err = http.Get("http://" + addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP is answered only with a TLS error")
	}

	require.ErrorContains(t, service.HTTPTLS{CertFile: certs.CertFile}.Validate(), "expected both or neither")
}
