//go:build tools

// Package tools pins k8s.io/kubernetes so that cmd/kube-apiserver builds from
// the Go module proxy. k8s.io/kubernetes replaces its staging modules with
// ./staging paths that do not exist in the module zip, so every staging module
// is required here at the matching v0.x version instead.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
