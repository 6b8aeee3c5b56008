package uc3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DefaultSubject is the registry subject Theodolite registers the input
// value schema under.
const DefaultSubject = "input-value"

// registryContentType is the Confluent Schema Registry's media type.
const registryContentType = "application/vnd.schemaregistry.v1+json"

// RegisterSchema registers an Avro schema under subject in the Confluent
// compatible registry at baseURL (POST /subjects/<subject>/versions) and
// returns the id the registry assigned. Registering a schema the subject
// already has returns its existing id, so calling it once per run is safe.
// hc may be nil (http.DefaultClient); bound the call with ctx.
func RegisterSchema(ctx context.Context, hc *http.Client, baseURL, subject, schema string) (uint32, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	endpoint := strings.TrimRight(baseURL, "/") + "/subjects/" + url.PathEscape(subject) + "/versions"
	body, err := json.Marshal(struct {
		Schema string `json:"schema"`
	}{schema})
	if err != nil {
		return 0, fmt.Errorf("register schema under %s: encode request: %w", subject, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("register schema at %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", registryContentType)
	req.Header.Set("Accept", registryContentType+", application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("register schema at %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("register schema at %s: read response: %w", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code    int    `json:"error_code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return 0, fmt.Errorf("register schema at %s: %s (error code %d)", endpoint, e.Message, e.Code)
		}
		return 0, fmt.Errorf("register schema at %s: HTTP %d: %s", endpoint, resp.StatusCode, bytes.TrimSpace(raw))
	}
	var out struct {
		ID *int64 `json:"id"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, fmt.Errorf("register schema at %s: decode response %q: %w", endpoint, raw, err)
	}
	if out.ID == nil || *out.ID < 0 || *out.ID > int64(^uint32(0)) {
		return 0, fmt.Errorf("register schema at %s: response %q has no valid id", endpoint, raw)
	}
	return uint32(*out.ID), nil
}
