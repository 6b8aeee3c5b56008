// Package results declares GreenFlow's result metrics once, as data: every
// metric's name, unit, the scopes it is reported in, whether it can be
// estimated, which service writes it and what it means — the way
// kube-state-metrics declares its metric families. The analyzer and the
// capacity search write results by these names, and the CLI, its report,
// the HTTP results API (and later the console and dashboards) read them by
// the same names, so that a metric is renamed, added or explained in one
// place. Tests hold the writers to the table: the analyzer writes exactly
// the metrics it lists for the analyzer, with their units.
//
// A result row is (scope, subject, metric, value, unit, estimated): scope
// says what the row is about (a run, one of its nodes, a role, ...), subject
// names it (the node, the role; empty for a run or an experiment). Every
// run-scope metric is also summarised per configuration across repetitions
// (config_results); ScopeConfig lists the metrics only that summary has.
//
// The results API's document (ExperimentResults, api.go) is declared here
// too: the analyzer serves it and the console reads it.
//
// The package depends on nothing of ours, so any package may import it.
package results

import (
	"slices"
	"strings"
)

// Scopes of result rows.
const (
	ScopeRun    = "run"    // the run as a whole (subject "")
	ScopeNode   = "node"   // one node of the run (subject: node name)
	ScopeZone   = "zone"   // one measurement zone of a node (subject: "<node>/<zone>")
	ScopeTarget = "target" // one target of the run, a process or pod (subject: target id)
	ScopeRole   = "role"   // one role (subject: Role*)
	// ScopeConfig is the per-configuration summary across repetitions
	// (table config_results); every run-scope metric is summarised there
	// too.
	ScopeConfig = "config"
	// ScopeExperiment holds what a whole experiment found (a capacity
	// search's answer; subject "").
	ScopeExperiment = "experiment"
)

// Roles are the subjects of role-scope rows: the targets' own roles
// (events.Target.Role; a target without one is the system under test),
// processes measured on the run's nodes that are none of its targets, and
// the nodes' unattributed (idle, system) rest.
const (
	RoleSUT          = "sut"
	RoleBroker       = "broker"
	RoleLoadgen      = "loadgen"
	RolePlatform     = "platform"
	RoleOther        = "other"
	RoleUnattributed = "unattributed"
)

// Roles lists every role in the order reports show them.
func Roles() []string {
	return []string{RoleSUT, RoleBroker, RoleLoadgen, RolePlatform, RoleOther, RoleUnattributed}
}

// Units of result metrics.
const (
	UnitJoule          = "J"
	UnitWatt           = "W"
	UnitSecond         = "s"
	UnitCount          = "1" // a count or a ratio
	UnitBool           = "bool"
	UnitPerSecond      = "1/s"
	UnitMicroJoule     = "uJ"
	UnitPerJoule       = "1/J"
	UnitByte           = "B"
	UnitMegabyte       = "MB" // 10^6 bytes
	UnitJoulePerMB     = "J/MB"
	UnitMessagesPerSec = "msg/s"
	UnitPercent        = "%"
)

// Data quality of a node measured by two meters at once (cross-meter
// residual).
const (
	QualityCrossMeters           = "quality_cross_meters"
	QualityCrossMeterResidualJ   = "quality_cross_meter_residual_j"
	QualityCrossMeterResidualPct = "quality_cross_meter_residual_pct"
)

// Data quality of a node measured at once by a wattmeter (collector kind
// kwollect) and RAPL — the comparison the original methodology is about.
// The two do not measure the same thing: RAPL counts the CPU packages and
// DRAM only, the wattmeter the whole node at the wall (fans, disks, the
// power supply's losses), so the residual is expected to be positive; its
// size, and how it changes with the load, is the finding.
const (
	QualityWattmeterRAPLResidualJ   = "quality_wattmeter_rapl_residual_j"
	QualityWattmeterRAPLResidualPct = "quality_wattmeter_rapl_residual_pct"
)

// WattmeterRAPLNote labels the wattmeter–RAPL residual wherever it is shown.
const WattmeterRAPLNote = "wattmeter − RAPL: RAPL covers the CPU packages and DRAM only, the wattmeter the whole node at the wall " +
	"(fans, disks, power-supply losses), so a positive residual is expected"

// Producers: the service that writes a metric.
const (
	ProducerAnalyzer  = "analyzer"
	ProducerScheduler = "scheduler" // the capacity search
)

// Metric is one result metric.
type Metric struct {
	Name   string
	Unit   string
	Scopes []string
	// Estimable: the figure derives from energy, so a row of it is
	// estimated (flagged) when that energy came from the utilisation model
	// rather than a hardware counter. Other figures are never estimated.
	Estimable bool
	Producer  string
	Help      string
}

// In reports whether the metric is reported in scope.
func (m Metric) In(scope string) bool { return slices.Contains(m.Scopes, scope) }

// Names of the result metrics; table below says what each one is.
const (
	// Per node, zone, target and role.
	EnergyJ             = "energy_j"
	MeanPowerW          = "mean_power_w"
	PeakPowerW          = "peak_power_w"
	BaselinePowerW      = "baseline_power_w"
	DynamicEnergyJ      = "dynamic_energy_j"
	Samples             = "samples"
	ShareOfNodeEnergy   = "share_of_node_energy"
	IntegratedFromPower = "integrated_from_power"

	// Data quality.
	QualitySampleGaps           = "quality_sample_gaps"
	QualityGapS                 = "quality_gap_s"
	QualityMaxGapS              = "quality_max_gap_s"
	QualityBridgedEnergyJ       = "quality_bridged_energy_j"
	QualityUncoveredS           = "quality_uncovered_s"
	QualityCounterResets        = "quality_counter_resets"
	QualityEstimatedSource      = "quality_estimated_source"
	QualityAttributionResidualJ = "quality_attribution_residual_j"
	QualityMixedSources         = "quality_mixed_sources"
	QualityLateS                = "quality_late_s"
	QualityRecordedGapS         = "quality_recorded_gap_s"

	// Per run: energy and power.
	DurationS           = "duration_s"
	SUTEnergyJ          = "sut_energy_j"
	NodeEnergyJ         = "node_energy_j"
	UnattributedEnergyJ = "unattributed_energy_j"
	SUTMeanPowerW       = "sut_mean_power_w"
	SUTPeakPowerW       = "sut_peak_power_w"
	NodeMeanPowerW      = "node_mean_power_w"
	NodePeakPowerW      = "node_peak_power_w"
	BaselineNodePowerW  = "baseline_node_power_w"
	DynamicNodeEnergyJ  = "dynamic_node_energy_j"
	SUTBaselinePowerW   = "sut_baseline_power_w"
	SUTDynamicEnergyJ   = "sut_dynamic_energy_j"

	// Per run: the load and energy per unit of work.
	Events                   = "events"
	RecordsSentTotal         = "records_sent_total"
	OfferedRateEPS           = "offered_rate_eps"
	ThroughputEPS            = "throughput_eps"
	EventsAcknowledged       = "events_acknowledged"
	SUTMicroJPerEvent        = "sut_uj_per_event"
	NodeMicroJPerEvent       = "node_uj_per_event"
	SUTDynamicMicroJPerEvent = "sut_dynamic_uj_per_event"
	EventsPerJoule           = "events_per_joule"
	NodeEventsPerJoule       = "node_events_per_joule"
	RecordBytesMean          = "record_bytes_mean"
	DataMB                   = "data_mb"
	DataMBFromWorkload       = "data_mb_from_workload"
	SUTJoulePerMB            = "sut_j_per_mb"
	NodeJoulePerMB           = "node_j_per_mb"

	// Per run: Theodolite's lag-trend SLO and the collectors' overhead.
	LagTrendPoints      = "lag_trend_points"
	LagTrendSlope       = "lag_trend_slope"
	LagSLOThreshold     = "lag_slo_threshold"
	LagSLOOK            = "lag_slo_ok"
	LagTrendFitStartS   = "lag_trend_fit_start_s"
	LagTrendSlopeCILow  = "lag_trend_slope_ci_low"
	LagTrendSlopeCIHigh = "lag_trend_slope_ci_high"
	LagSLOFromSpec      = "lag_slo_from_spec"
	CollectorCPUSeconds = "collector_cpu_seconds"
	CollectorCPUCores   = "collector_cpu_cores"

	// Per run: the verdict and the load generator's account.
	Invalid                    = "invalid"
	EventsFromBroker           = "events_from_broker"
	EventsFromProgressSeries   = "events_from_progress_series"
	EventsOffered              = "events_offered"
	EventsDeliveredRatio       = "events_delivered_ratio"
	RecordsDelivered           = "records_delivered"
	RecordsDeliveredFromBroker = "records_delivered_from_broker"
	RecordsMissed              = "records_missed"
	RecordsBackfilled          = "records_backfilled"
	LoadTakeovers              = "load_takeovers"
	LoadRestarts               = "load_restarts"

	// Per configuration.
	LagSLOOKMedianSlope = "lag_slo_ok_median_slope"

	// Per experiment: the capacity search's answer.
	CapacityMsgPerS           = "capacity_msg_per_s"
	SearchProbes              = "search_probes"
	SearchProbesUnresolved    = "search_probes_unresolved"
	SearchProbesInvalid       = "search_probes_invalid"
	CapacityLowerBound        = "capacity_lower_bound"
	CapacitySUTMicroJPerEvent = "capacity_sut_uj_per_event"
)

// Scope sets the table uses.
var (
	run        = []string{ScopeRun}
	parts      = []string{ScopeNode, ScopeTarget, ScopeRole}
	partsZones = []string{ScopeNode, ScopeZone, ScopeTarget, ScopeRole}
	node       = []string{ScopeNode}
	runNode    = []string{ScopeRun, ScopeNode}
	series     = []string{ScopeNode, ScopeTarget}
	everywhere = []string{ScopeRun, ScopeNode, ScopeTarget}
)

// table is the declaration; flag metrics are added from flags.
var table = []Metric{
	{EnergyJ, UnitJoule, partsZones, true, ProducerAnalyzer, "energy in the measured window"},
	{MeanPowerW, UnitWatt, partsZones, true, ProducerAnalyzer, "mean power over the measured window"},
	{PeakPowerW, UnitWatt, parts, true, ProducerAnalyzer, "largest power at one sampling instant in the window"},
	{BaselinePowerW, UnitWatt, parts, true, ProducerAnalyzer, "mean power during the run's baseline (idle) phase"},
	{DynamicEnergyJ, UnitJoule, parts, true, ProducerAnalyzer, "energy in the window above the baseline power"},
	{Samples, UnitCount, node, false, ProducerAnalyzer, "samples of the node's total in the window"},
	{ShareOfNodeEnergy, UnitCount, []string{ScopeRole}, true, ProducerAnalyzer, "the role's part of the nodes' energy"},
	{IntegratedFromPower, UnitBool, node, false, ProducerAnalyzer, "the node had power samples only, integrated by the trapezoid rule"},

	{QualitySampleGaps, UnitCount, everywhere, false, ProducerAnalyzer, "gaps between samples longer than twice the sampling interval"},
	{QualityGapS, UnitSecond, runNode, false, ProducerAnalyzer, "window time inside such gaps"},
	{QualityMaxGapS, UnitSecond, series, false, ProducerAnalyzer, "the longest gap in the window"},
	{QualityBridgedEnergyJ, UnitJoule, runNode, true, ProducerAnalyzer, "energy bridged across gaps at the mean of the neighbours' power"},
	{QualityUncoveredS, UnitSecond, everywhere, false, ProducerAnalyzer, "window time no sample or bridged gap covers (the largest node's for the run)"},
	{QualityCounterResets, UnitCount, runNode, false, ProducerAnalyzer, "drops of a cumulative counter (collector restarts)"},
	{QualityEstimatedSource, UnitCount, runNode, false, ProducerAnalyzer, "nodes whose figures come from the utilisation model, not a hardware counter"},
	{QualityAttributionResidualJ, UnitJoule, runNode, true, ProducerAnalyzer, "node energy minus the sum of its parts; 0 when attribution conserves energy"},
	{QualityMixedSources, UnitBool, node, false, ProducerAnalyzer, "the node's series changed meter within the window"},
	{QualityCrossMeters, UnitCount, node, false, ProducerAnalyzer,
		"meters that measured the node's total at once in the window (2+: the energies are the primary's — hardware before model, counter before gauge)"},
	{QualityCrossMeterResidualJ, UnitJoule, node, true, ProducerAnalyzer,
		"another meter's energy of the node in the window minus the primary meter's (the largest in magnitude when several): how far two meters disagree"},
	{QualityCrossMeterResidualPct, UnitPercent, node, true, ProducerAnalyzer, "quality_cross_meter_residual_j in % of the primary meter's energy"},
	{QualityWattmeterRAPLResidualJ, UnitJoule, runNode, false, ProducerAnalyzer,
		"the node's energy in the window by its wattmeter minus by RAPL, summed for the run over the nodes both measured (" + WattmeterRAPLNote + ")"},
	{QualityWattmeterRAPLResidualPct, UnitPercent, runNode, false, ProducerAnalyzer,
		"quality_wattmeter_rapl_residual_j in % of the wattmeter's energy (the whole node at the wall)"},
	{QualityLateS, UnitSecond, everywhere, false, ProducerAnalyzer,
		"how far a meter's stored samples fell short of the window end when the analysis stopped waiting for them (samples_late; the largest for the run)"},
	{QualityRecordedGapS, UnitSecond, runNode, false, ProducerAnalyzer, "window time the collectors recorded as a gap (table gaps: lost, not counted, or unread and spanned by one sample): per node, and summed over nodes for the run"},

	{DurationS, UnitSecond, run, false, ProducerAnalyzer, "length of the recorded measurement window"},
	{SUTEnergyJ, UnitJoule, run, true, ProducerAnalyzer, "energy of the system under test in the window"},
	{NodeEnergyJ, UnitJoule, run, true, ProducerAnalyzer, "energy of the run's nodes in the window"},
	{UnattributedEnergyJ, UnitJoule, run, true, ProducerAnalyzer, "the nodes' energy attributed to no process (idle, system)"},
	{SUTMeanPowerW, UnitWatt, run, true, ProducerAnalyzer, "mean power of the system under test"},
	{SUTPeakPowerW, UnitWatt, run, true, ProducerAnalyzer, "peak power of the system under test"},
	{NodeMeanPowerW, UnitWatt, run, true, ProducerAnalyzer, "mean power of the run's nodes"},
	{NodePeakPowerW, UnitWatt, run, true, ProducerAnalyzer, "peak power of the busiest node"},
	{BaselineNodePowerW, UnitWatt, run, true, ProducerAnalyzer, "the nodes' mean power during the baseline phase"},
	{DynamicNodeEnergyJ, UnitJoule, run, true, ProducerAnalyzer, "the nodes' energy above their baseline power"},
	{SUTBaselinePowerW, UnitWatt, run, true, ProducerAnalyzer, "the system under test's mean power during the baseline phase"},
	{SUTDynamicEnergyJ, UnitJoule, run, true, ProducerAnalyzer, "the system under test's energy above its baseline power"},

	{Events, UnitCount, run, false, ProducerAnalyzer, "events in the window (at the broker, else the generators' count, else the whole load's)"},
	{RecordsSentTotal, UnitCount, run, false, ProducerAnalyzer, "records the load generators sent over the whole load"},
	{OfferedRateEPS, UnitPerSecond, run, false, ProducerAnalyzer, "the offered load"},
	{ThroughputEPS, UnitPerSecond, run, false, ProducerAnalyzer, "events per second of window"},
	{EventsAcknowledged, UnitCount, run, false, ProducerAnalyzer, "the generators' own count of the window's events, beside the broker's"},
	{SUTMicroJPerEvent, UnitMicroJoule, run, true, ProducerAnalyzer, "energy of the system under test per event"},
	{NodeMicroJPerEvent, UnitMicroJoule, run, true, ProducerAnalyzer, "energy of the run's nodes per event"},
	{SUTDynamicMicroJPerEvent, UnitMicroJoule, run, true, ProducerAnalyzer, "dynamic energy of the system under test per event"},
	{EventsPerJoule, UnitPerJoule, run, true, ProducerAnalyzer, "events per joule of the system under test"},
	{NodeEventsPerJoule, UnitPerJoule, run, true, ProducerAnalyzer, "events per joule of the run's nodes"},
	{RecordBytesMean, UnitByte, run, false, ProducerAnalyzer, "mean size of a record (key and value) as the workload encodes it"},
	{DataMB, UnitMegabyte, run, false, ProducerAnalyzer, "data volume of the window's events"},
	{DataMBFromWorkload, UnitBool, run, false, ProducerAnalyzer, "data volume computed from the workload's record size, not measured"},
	{SUTJoulePerMB, UnitJoulePerMB, run, true, ProducerAnalyzer, "energy of the system under test per MB"},
	{NodeJoulePerMB, UnitJoulePerMB, run, true, ProducerAnalyzer, "energy of the run's nodes per MB"},

	{LagTrendPoints, UnitCount, run, false, ProducerAnalyzer, "consumer-lag samples the lag trend is fitted to"},
	{LagTrendSlope, UnitMessagesPerSec, run, false, ProducerAnalyzer,
		"Theil–Sen slope of the consumer lag (the median of its pairwise slopes; Theodolite's lag trend, robust to late-commit spikes)"},
	{LagSLOThreshold, UnitMessagesPerSec, run, false, ProducerAnalyzer, "the largest slope meeting the lag-trend SLO"},
	{LagSLOOK, UnitBool, run, false, ProducerAnalyzer,
		"the lag-trend slope is below the SLO's threshold (resolved only without flag lag_verdict_unresolved)"},
	{LagTrendSlopeCILow, UnitMessagesPerSec, run, false, ProducerAnalyzer,
		"lower bound of Sen's confidence interval of the lag-trend slope at the analyzer's confidence level (absent: unbounded, too few samples)"},
	{LagTrendSlopeCIHigh, UnitMessagesPerSec, run, false, ProducerAnalyzer,
		"upper bound of Sen's confidence interval of the lag-trend slope (absent: unbounded); below the threshold the SLO is met, resolved"},
	{LagTrendFitStartS, UnitSecond, run, false, ProducerAnalyzer,
		"where the lag fit starts, from the window start: the load's start plus the SLO's warm-up, never before the window"},
	{LagSLOFromSpec, UnitBool, run, false, ProducerAnalyzer, "the lag SLO's threshold and warm-up come from the spec (else the analyzer's flags)"},
	{CollectorCPUSeconds, UnitSecond, run, false, ProducerAnalyzer, "CPU time the energy collectors used in the window"},
	{CollectorCPUCores, UnitCount, run, false, ProducerAnalyzer, "the collectors' mean CPU use in cores"},

	{Invalid, UnitBool, run, false, ProducerAnalyzer, "the run broke the platform's invariant (reason in run.analyzed)"},
	{EventsFromBroker, UnitBool, run, false, ProducerAnalyzer, "events counted from the input topic's high-water marks"},
	{EventsFromProgressSeries, UnitBool, run, false, ProducerAnalyzer, "events counted from the generators' acknowledged-records series"},
	{EventsOffered, UnitCount, run, false, ProducerAnalyzer, "offered rate × window"},
	{EventsDeliveredRatio, UnitCount, run, false, ProducerAnalyzer, "events / events offered"},
	{RecordsDelivered, UnitCount, run, false, ProducerAnalyzer, "records the load generators report delivered"},
	{RecordsDeliveredFromBroker, UnitBool, run, false, ProducerAnalyzer, "that count comes from the broker"},
	{RecordsMissed, UnitCount, run, false, ProducerAnalyzer, "records due by the schedule that were never produced"},
	{RecordsBackfilled, UnitCount, run, false, ProducerAnalyzer, "records produced late to cover a generator's death or restart"},
	{LoadTakeovers, UnitCount, run, false, ProducerAnalyzer, "generator instances whose keys another took over"},
	{LoadRestarts, UnitCount, run, false, ProducerAnalyzer, "generator instances that restarted and resumed"},

	{LagSLOOKMedianSlope, UnitBool, []string{ScopeConfig}, false, ProducerAnalyzer, "the median lag slope of the repetitions meets the SLO (Theodolite)"},

	{CapacityMsgPerS, UnitPerSecond, []string{ScopeExperiment}, false, ProducerScheduler, "the largest sustained load a capacity search found"},
	{SearchProbes, UnitCount, []string{ScopeExperiment}, false, ProducerScheduler, "probes the capacity search ran (a repeated one counts twice)"},
	{SearchProbesUnresolved, UnitCount, []string{ScopeExperiment}, false, ProducerScheduler,
		"probes whose lag verdict was unresolved (repeated once with twice the window; still unresolved counts as not sustained)"},
	{SearchProbesInvalid, UnitCount, []string{ScopeExperiment}, false, ProducerScheduler,
		"probes whose every run failed as an invalid measurement (the platform did not deliver the load or lost samples): counted as not sustained"},
	{CapacityLowerBound, UnitBool, []string{ScopeExperiment}, false, ProducerScheduler,
		"present (1) when the lowest load not sustained could not be measured (an invalid probe): the capacity is a lower bound, set by the platform, not the system under test"},
	{CapacitySUTMicroJPerEvent, UnitMicroJoule, []string{ScopeExperiment}, true, ProducerScheduler, "energy per event of the system under test at the capacity"},
}

// Flags a run's verdict can raise: what was recovered, bridged or could not
// be checked on a run that is still valid. Each is listed in run.analyzed
// and stored as a run-scope row FlagMetric(flag) = 1.
const (
	FlagEnergyGapBridged = "energy_gap_bridged"
	FlagSamplesStretched = "samples_stretched"
	FlagSamplesLate      = "samples_late"
	FlagTargetUnmeasured = "target_unmeasured"
	FlagLoadSurplus      = "load_surplus"
	FlagLoadTakeover     = "load_takeover"
	FlagLoadRestart      = "load_restart"
	FlagLoadBackfilled   = "load_backfilled"
	FlagLoadMissed       = "load_missed"
	// FlagDynamicEnergyNegative: a dynamic energy came out below zero.
	FlagDynamicEnergyNegative = "dynamic_energy_negative"
	// FlagLagVerdictUnresolved: the lag slope's confidence interval
	// contains the SLO's threshold.
	FlagLagVerdictUnresolved = "lag_verdict_unresolved"
	// FlagLagNotEvaluated: a consumer-lag series exists but too few of its
	// samples lie between the fit's start and the window's end.
	FlagLagNotEvaluated = "lag_not_evaluated"
	// FlagLagSLOFailed: the lag-trend SLO failed, resolved (the slope's
	// interval lies above the threshold): the SUT fell behind the load.
	FlagLagSLOFailed = "lag_slo_failed"
	// The collectors' recorded gaps (table gaps) touching the window.
	FlagEnergyGapRecorded = "energy_gap_recorded"
	FlagEnergyImplausible = "energy_counter_implausible"
	// FlagLoadRateDeviation: a whole second of the window delivered more
	// than 1 % off the offered rate (pkg/kafkasignals.CheckRate).
	FlagLoadRateDeviation = "load_rate_deviation"
	// FlagMeterFallback: a node of the run was asked a hardware meter
	// (meters.source: rapl) and measured by the model instead.
	FlagMeterFallback = "meter_fallback"
)

// Flag is one flag with its meaning.
type Flag struct{ Name, Help string }

var flags = []Flag{
	{FlagEnergyGapBridged, "a sample gap within the bound was bridged"},
	{FlagSamplesStretched, "a sample spans over twice the usual interval and a second more (the meter went unread; energy right, resolution lost)"},
	{FlagSamplesLate, "analysed before every node had samples past the window end"},
	{FlagTargetUnmeasured, "a target the meters never saw (no per-target figures)"},
	{FlagLoadSurplus, "more events than offered in the window (a catch-up); beyond the tolerance the run is invalid"},
	{FlagLoadTakeover, "a generator instance died; another took its keys over"},
	{FlagLoadRestart, "a generator instance restarted and resumed its share"},
	{FlagLoadBackfilled, "records were produced late to cover a death or restart"},
	{FlagLoadMissed, "records due by the schedule were never produced"},
	{FlagDynamicEnergyNegative, "a dynamic energy (of a node, a target, the SUT or the run's nodes) is negative: it drew less power under load " +
		"than in the run's own baseline, " +
		"so for that part baseline drift or noise exceeds the load's effect: its dynamic figures (dynamic energy, dynamic µJ per event) do not " +
		"measure the load; totals (energy, µJ per event) are unaffected"},
	{FlagLagVerdictUnresolved, "the lag-trend slope's confidence interval contains the SLO's threshold: the window's lag samples are too " +
		"noisy or too few to say on which side it is (lag_slo_ok is the point estimate's verdict, not a resolved one); a longer window resolves it"},
	{FlagLagNotEvaluated, "the lag-trend SLO was not evaluated: fewer consumer-lag samples than a fit needs (analyzer lagMinPoints) lie between " +
		"the fit's start (the load's start + slos.lagWarmup, never before the window; lag_trend_fit_start_s) and the window's end, so there is no " +
		"lag_slo_ok row; a shorter slos.lagWarmup or a longer window gives one"},
	{FlagLagSLOFailed, "the SUT did not keep up: its consumer lag grew faster than the SLO allows (lag_trend_slope above lag_slo_threshold), " +
		"so it processed fewer events than it was offered; per-event energy divides by the events delivered to Kafka, including ones it " +
		"did not process, so it flatters the run (a lower bound): do not compare it with runs that kept up"},
	{FlagEnergyGapRecorded, "a collector recorded a gap in a node's samples in the window: samples dropped past the spool bound, a source restarted from a fresh baseline, or an outage (the meter went unread; one sample spans it, energy kept, resolution lost); quality_recorded_gap_s says how long"},
	{FlagEnergyImplausible, "a counter increase beyond the zone's plausible power was not counted in the window (a re-based or mis-read counter)"},
	{FlagLoadRateDeviation, "in a second of the window the records delivered on time (acknowledged by Kafka within 500 ms of the second's end) were more than 1 % off those offered: a stall, a late start or a catch-up"},
	{FlagMeterFallback, "the spec asked a hardware meter (meters.source: rapl) but a node of the run had none readable and was measured by " +
		"the CPU-utilisation model: its figures are estimated, not measured (run_meters' note, meters.csv, names the node)"},
}

// caveats are the flags that qualify a derived figure — how far the data
// resolves it — rather than report something wrong with, or recovered in,
// the measurement itself: the samples and the load are whole. A run whose
// only flags are caveats is an undisturbed run (the chaos suite's
// reference, a test's clean run); its figures are read with the caveat.
var caveats = map[string]bool{FlagDynamicEnergyNegative: true, FlagLagVerdictUnresolved: true, FlagLagNotEvaluated: true, FlagLagSLOFailed: true}

// Caveat reports whether flag — its name, or its result row's
// FlagMetric(name) — qualifies a derived figure rather than the measurement
// (see caveats).
func Caveat(flag string) bool { return caveats[strings.TrimPrefix(flag, FlagPrefix)] }

// DataQuality returns the flags that are not caveats: what was bridged,
// recovered or could not be checked in the measurement.
func DataQuality(flags []string) []string {
	var out []string
	for _, f := range flags {
		if !Caveat(f) {
			out = append(out, f)
		}
	}
	return out
}

// positive are the metrics no measurement can make negative (energies,
// powers, counts, rates, energy per unit of work) or, for the dynamic
// figures, that the load cannot make negative: a value or a confidence
// interval below zero says the data cannot resolve them, not that they are
// negative.
var positive = map[string]bool{EnergyJ: true, MeanPowerW: true, PeakPowerW: true, BaselinePowerW: true, DynamicEnergyJ: true,
	SUTEnergyJ: true, NodeEnergyJ: true, UnattributedEnergyJ: true, SUTMeanPowerW: true, SUTPeakPowerW: true, NodeMeanPowerW: true,
	NodePeakPowerW: true, BaselineNodePowerW: true, DynamicNodeEnergyJ: true, SUTBaselinePowerW: true, SUTDynamicEnergyJ: true, Events: true,
	ThroughputEPS: true, SUTMicroJPerEvent: true, NodeMicroJPerEvent: true, SUTDynamicMicroJPerEvent: true, EventsPerJoule: true,
	NodeEventsPerJoule: true, DataMB: true, SUTJoulePerMB: true, NodeJoulePerMB: true, CollectorCPUSeconds: true, CollectorCPUCores: true}

// Positive reports whether metric cannot be negative (see positive).
func Positive(metric string) bool { return positive[metric] }

// CICrossesZero reports whether the confidence interval [lo, hi] of a
// positive metric reaches below zero: too few repetitions or too much spread
// for the interval to bound the quantity away from zero. Such an interval
// is shown with CICrossesZeroNote, not as a plain number.
func CICrossesZero(metric string, lo float64) bool { return Positive(metric) && lo < 0 }

// CICrossesZeroNote explains an interval CICrossesZero marks.
const CICrossesZeroNote = "the confidence interval reaches below zero for a quantity that cannot be negative: the repetitions are too few " +
	"or too spread to bound it away from zero — more repetitions, or a longer window, are needed before quoting it"

// FlagPrefix starts the name of a flag's result row.
const FlagPrefix = "flag_"

// FlagMetric is the name of flag's result row.
func FlagMetric(flag string) string { return FlagPrefix + flag }

// FlagOf returns the flag a metric name stands for; ok is false for a
// metric that is no flag's.
func FlagOf(metric string) (flag string, ok bool) { return strings.CutPrefix(metric, FlagPrefix) }

// Flags lists every flag.
func Flags() []Flag { return slices.Clone(flags) }

// all is the table with the flags' metrics, by name.
var all = func() map[string]Metric {
	out := make(map[string]Metric, len(table)+len(flags))
	for _, m := range table {
		out[m.Name] = m
	}
	for _, f := range flags {
		out[FlagMetric(f.Name)] = Metric{FlagMetric(f.Name), UnitBool, run, false, ProducerAnalyzer, "flag: " + f.Help}
	}
	return out
}()

// All lists every result metric, flags' included, by name.
func All() []Metric {
	out := make([]Metric, 0, len(all))
	for _, m := range all {
		m.Scopes = slices.Clone(m.Scopes)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the metric of a name.
func Lookup(name string) (Metric, bool) {
	m, ok := all[name]
	m.Scopes = slices.Clone(m.Scopes)
	return m, ok
}

// Unit is a metric's unit ("" for a name the table lacks).
func Unit(name string) string { return all[name].Unit }

// Estimable reports whether a metric's rows can be estimated (false for a
// name the table lacks).
func Estimable(name string) bool { return all[name].Estimable }
