// Package kubeshort holds the short form of the chaos suite's kube segment
// (-faults kube), an envtest-tagged test: it needs the kube-apiserver and
// etcd binaries, which make test builds before its envtest-tagged tests
// (make test-kube), so it runs with them and not with the short chaos suite
// of loadtest/chaos.
package kubeshort
