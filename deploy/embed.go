package deploy

import "embed"

// FS holds the manifests — base, overlays, components and the vendored
// CRDs — so `greenflow cluster up` applies the ones it was built with.
//
//go:embed base overlays components crds
var FS embed.FS
