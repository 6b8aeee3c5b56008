package cli

import "github.com/greenflow/greenflow/pkg/report"

// What the analysis commands compute and write — results, summaries,
// export files and the HTML report — is pkg/report's, shared with the web
// console's downloads (the same bytes for the same experiment). The dev and
// submit commands still call it by these names.
var (
	LoadResults  = report.LoadResults
	WriteResults = report.WriteResults
	nRuns        = report.NRuns
)
