//go:build envtest

package kube

import (
	"testing"

	"github.com/greenflow/greenflow/pkg/kubetest"
)

// The tests tagged envtest run against a real kube-apiserver and etcd; see
// package kubetest.
func TestMain(m *testing.M) { kubetest.Main(m) }
