package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// CreateRequest is the body of POST /v1/tokens.
type CreateRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// ExpiresIn is a Go duration ("720h"); empty: never.
	ExpiresIn string `json:"expires_in,omitempty"`
}

// Created answers POST /v1/tokens: the token, shown this once, and its
// record.
type Created struct {
	Token string `json:"token"`
	Info
}

// Info is a token's record as the API shows it: never the hash.
type Info struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Role      Role   `json:"role"`
	CreatedMs int64  `json:"created_ms"`
	ExpiresMs int64  `json:"expires_ms,omitempty"`
	RevokedMs int64  `json:"revoked_ms,omitempty"`
}

func infoOf(t Token) Info {
	return Info{ID: t.ID, Name: t.Name, Role: t.Role, CreatedMs: t.CreatedMs, ExpiresMs: t.ExpiresMs, RevokedMs: t.RevokedMs}
}

// RegisterHTTP adds the token management API to mux, admin only:
//
//	POST   /v1/tokens              body: {"name", "role", "expires_in"}; answers the token once
//	GET    /v1/tokens              every token's record, no secrets
//	DELETE /v1/tokens/{ref}        revoke by id, or by the name of a live token
func RegisterHTTP(mux *http.ServeMux, g *Guard, tokens StoreOpener) {
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.Handle("POST /v1/tokens", g.Require(Admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := open(w, r, tokens)
		if !ok {
			return
		}
		var req CreateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				WriteError(w, http.StatusRequestEntityTooLarge, err.Error())
				return
			}
			WriteError(w, http.StatusBadRequest, `request body: expected JSON {"name": ..., "role": ..., "expires_in": "720h"}: `+err.Error())
			return
		}
		role, err := ParseRole(req.Role)
		if err != nil {
			WriteError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		var ttl time.Duration
		if req.ExpiresIn != "" {
			if ttl, err = time.ParseDuration(req.ExpiresIn); err != nil || ttl <= 0 {
				WriteError(w, http.StatusUnprocessableEntity, fmt.Sprintf("expires_in %q: expected a positive duration such as 720h", req.ExpiresIn))
				return
			}
		}
		plain, t, err := s.Create(r.Context(), req.Name, role, ttl)
		if err != nil {
			WriteError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusCreated, Created{Token: plain, Info: infoOf(t)})
	})))
	mux.Handle("GET /v1/tokens", g.Require(Admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := open(w, r, tokens)
		if !ok {
			return
		}
		all, err := s.List(r.Context())
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		out := make([]Info, len(all))
		for i, t := range all {
			out[i] = infoOf(t)
		}
		writeJSON(w, http.StatusOK, out)
	})))
	mux.Handle("DELETE /v1/tokens/{ref}", g.Require(Admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := open(w, r, tokens)
		if !ok {
			return
		}
		t, err := s.Revoke(r.Context(), r.PathValue("ref"))
		if err != nil {
			code := http.StatusServiceUnavailable
			switch {
			case errors.Is(err, ErrUnknownToken):
				code = http.StatusNotFound
			case errors.Is(err, ErrAmbiguous):
				code = http.StatusConflict
			}
			WriteError(w, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, infoOf(t))
	})))
}

// open yields the store, or answers 503.
func open(w http.ResponseWriter, r *http.Request, tokens StoreOpener) (*Store, bool) {
	s, err := tokens.Store(r.Context())
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, err.Error())
		return nil, false
	}
	return s, true
}
