//go:build tools

// Package tools pins go.etcd.io/etcd/server/v3 so that its main package (the
// etcd binary) builds from the Go module proxy. The server module replaces its
// siblings with ../ paths, so each sibling is required here at the same version.
package tools

import _ "go.etcd.io/etcd/server/v3"
