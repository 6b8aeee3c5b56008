package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// PluginID is the Grafana ClickHouse data source plugin our panels query.
const PluginID = "grafana-clickhouse-datasource"

// Formats of a ClickHouse query (the plugin's "format" field).
const (
	FormatTimeSeries = 0 // a DateTime column, numeric values, string columns as labels
	FormatTable      = 1
)

// Query is a query of the ClickHouse plugin in SQL mode. The foundation
// SDK has no type for this plugin, so this one implements its data-query
// interface (variants.Dataquery) with the fields the plugin reads.
type Query struct {
	RefID      string                `json:"refId"`
	Hide       *bool                 `json:"hide,omitempty"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	EditorType string                `json:"editorType"` // always "sql"
	QueryType  string                `json:"queryType,omitempty"`
	RawSQL     string                `json:"rawSql"`
	Format     int                   `json:"format"`
}

var _ variants.Dataquery = Query{}

// ImplementsDataqueryVariant marks Query as a data query for the SDK.
func (Query) ImplementsDataqueryVariant() {}

// DataqueryType names the plugin the query is for.
func (Query) DataqueryType() string { return PluginID }

// Equals reports whether other is the same query.
func (q Query) Equals(other variants.Dataquery) bool {
	o, ok := other.(Query)
	if !ok {
		return false
	}
	a, _ := json.Marshal(q)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// Validate checks what the plugin needs to run the query.
func (q Query) Validate() error {
	var errs []error
	if q.RawSQL == "" {
		errs = append(errs, errors.New("rawSql: empty, expected the query's SQL"))
	}
	if q.Format != FormatTimeSeries && q.Format != FormatTable {
		errs = append(errs, errors.New("format: expected 0 (time series) or 1 (table)"))
	}
	if q.EditorType != "sql" {
		errs = append(errs, errors.New(`editorType: expected "sql"`))
	}
	return errors.Join(errs...)
}

// VariantConfig lets the SDK's runtime unmarshal dashboards holding such
// queries (cog.NewRuntime().RegisterDataqueryVariant), leniently or
// strictly (unknown fields refused, the query validated).
func VariantConfig() variants.DataqueryConfig {
	return variants.DataqueryConfig{
		Identifier: PluginID,
		DataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
			var q Query
			if err := json.Unmarshal(raw, &q); err != nil {
				return nil, err
			}
			return q, nil
		},
		StrictDataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
			var q Query
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&q); err != nil {
				return nil, fmt.Errorf("decode %s query: %w", PluginID, err)
			}
			if err := q.Validate(); err != nil {
				return nil, fmt.Errorf("%s query %s: %w", PluginID, q.RefID, err)
			}
			return q, nil
		},
	}
}

// QueryBuilder builds a Query for a panel, a variable or an annotation.
type QueryBuilder struct{ q Query }

var _ cog.Builder[variants.Dataquery] = (*QueryBuilder)(nil)

// SQL starts a ClickHouse query of sql in the given format on our
// ClickHouse data source.
func SQL(format int, sql string) *QueryBuilder {
	ds := ClickHouse()
	return &QueryBuilder{q: Query{RefID: "A", Datasource: &ds, EditorType: "sql", RawSQL: sql, Format: format}}
}

// RefID sets the query's reference id (A, B, …).
func (b *QueryBuilder) RefID(id string) *QueryBuilder { b.q.RefID = id; return b }

// Build returns the query, or why it is not one.
func (b *QueryBuilder) Build() (variants.Dataquery, error) {
	if err := b.q.Validate(); err != nil {
		return Query{}, err
	}
	return b.q, nil
}

// Data source uids the provisioning (deploy/grafana/provisioning) gives
// GreenFlow's data sources; the dashboards refer to them by these.
const (
	ClickHouseUID = "greenflow-clickhouse"
	PrometheusUID = "greenflow-prometheus"
)

// ClickHouse is the reference to GreenFlow's ClickHouse data source.
func ClickHouse() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(PluginID), Uid: cog.ToPtr(ClickHouseUID)}
}

// Prometheus is the reference to the Prometheus scraping the services.
func Prometheus() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr(PrometheusUID)}
}
