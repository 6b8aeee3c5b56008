package dashboards

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Result is what a query returned: its columns with their ClickHouse
// types, its rows, and how long it took.
type Result struct {
	Columns, Types []string
	Rows           [][]any
	Took           time.Duration
}

// Strings is column i of every row as text.
func (r Result) Strings(i int) []string {
	out := make([]string, len(r.Rows))
	for j, row := range r.Rows {
		out[j] = fmt.Sprint(row[i])
	}
	return out
}

// Run expands sql for env as Grafana and the plugin would (Expand) and
// runs it on conn, reading every row; Took covers the query and the rows.
func Run(ctx context.Context, conn driver.Conn, sql string, env Env) (Result, error) {
	q, err := Expand(sql, env)
	if err != nil {
		return Result{}, err
	}
	began := time.Now()
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return Result{}, fmt.Errorf("run %s: %w", q, err)
	}
	defer rows.Close()
	var out Result
	cts := rows.ColumnTypes()
	for _, ct := range cts {
		out.Columns = append(out.Columns, ct.Name())
		out.Types = append(out.Types, ct.DatabaseTypeName())
	}
	for rows.Next() {
		ptrs := make([]any, len(cts))
		for i, ct := range cts {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return Result{}, fmt.Errorf("read a row of %s: %w", q, err)
		}
		row := make([]any, len(ptrs))
		for i, p := range ptrs {
			row[i] = reflect.ValueOf(p).Elem().Interface()
		}
		out.Rows = append(out.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return Result{}, fmt.Errorf("read the rows of %s: %w", q, err)
	}
	out.Took = time.Since(began)
	return out, nil
}

// NamedQuery is one ClickHouse query of a board, for tests and benchmarks
// that run them all.
type NamedQuery struct {
	What string // "variable run", "annotation Phases", "panel \"Power per role\" query 1"
	PanelSQL
}

// Queries lists a board's ClickHouse panel queries, in panel order (its
// variables and annotations are in Vars and Annotations).
func (b Board) Queries() []NamedQuery {
	var out []NamedQuery
	for _, p := range b.Panels {
		for i, q := range p.SQL {
			out = append(out, NamedQuery{What: fmt.Sprintf("panel %q query %d", p.Title, i+1), PanelSQL: q})
		}
	}
	return out
}
