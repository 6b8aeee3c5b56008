package deploy

import "embed"

// FS holds the manifests — base, overlays, components and the vendored
// CRDs, and the Grafana files components/grafana reads — so `greenflow
// cluster up` applies the ones it was built with.
//
//go:embed base overlays components crds grafana
var FS embed.FS
