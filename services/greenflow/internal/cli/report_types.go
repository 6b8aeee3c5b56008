package cli

import "github.com/greenflow/greenflow/pkg/report"

// What the analysis commands compute and write — results, summaries,
// export files and the HTML report — is pkg/report's, shared with the web
// console's downloads (the same bytes for the same experiment).
type (
	ResultRow         = report.ResultRow
	ConfigSummary     = report.ConfigSummary
	ConfigSummaryJSON = report.ConfigSummaryJSON
)

var (
	Export             = report.Export
	Report             = report.Report
	LoadResults        = report.LoadResults
	WriteResults       = report.WriteResults
	WriteConfigResults = report.WriteConfigResults
	WriteCapacity      = report.WriteCapacity
	WriteSummaryTable  = report.WriteSummaryTable
	SummarizeRuns      = report.SummarizeRuns
)

const (
	lagSLOFailedName = report.LagSLOFailedName
	processedName    = report.ProcessedName
	notSetNote       = report.NotSetNote
	DefaultLevel     = report.DefaultLevel
)

var (
	csvBool   = report.CSVBool
	csvFloat  = report.CSVFloat
	flagList  = report.FlagList
	nRuns     = report.NRuns
	shortHash = report.ShortHash
	// the report's parts its tests check one by one
	loadPlot       = report.LoadPlot
	qualityTable   = report.QualityTable
	runTable       = report.RunTable
	throughputPlot = report.ThroughputPlot
	paretoPlot     = report.ParetoPlot
	provenanceRows = report.ProvenanceRows
)
